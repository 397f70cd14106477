"""3×3 convolutions by Winograd's minimal filtering, F(4×4, 3×3), for the coupling networks on the CPU.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. A 4×4 output tile of a 3×3
convolution (stride 1, zero padding 1) is ``Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` with ``d`` the 6×6 input tile: the channel
sum becomes 36 matrix products ``[tiles, C_in] × [C_in, C_out]`` (``torch.bmm``), 2.25 multiplications per output
and input channel instead of 9. The data transforms, the weight transform ``G g Gᵀ`` and their adjoints (the
backward pass) are native kernels (``visionflows/kernels/winograd.cpp``, built on first use like the Noise Flow
kernels); the backward pass recomputes the input transform instead of storing it, and scratch buffers are reused
per thread, in chunks of images of at most :data:`CHUNK_VALUES` values.

Tensors are channels-last ``[B, H, W, C]`` float32 on the CPU. :func:`winograd_conv3x3` is exact arithmetic
for the convolution but rounds differently from a direct one (about 1e-5 of the output's scale for width 128,
against 3e-7 for a direct fp32 convolution; the tests bound it at 2e-5). :func:`available` says whether the
kernels are built; callers fall back to :func:`torch.nn.functional.conv2d` when not.
"""

from __future__ import annotations

import ctypes
import math
import threading
from fractions import Fraction

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from visionflows import kernels

__all__ = ["available", "weight_transform", "winograd_conv3x3", "G_MATRIX"]

_ABI = 4
_P = ctypes.c_void_p
_I = ctypes.c_int

# G of F(4x4, 3x3) with the points 0, 1, -1, 2, -2, inf (the data transforms are written out in winograd.cpp)
_G = [[Fraction(1, 4), 0, 0],
      [Fraction(-1, 6), Fraction(-1, 6), Fraction(-1, 6)],
      [Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)],
      [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)],
      [Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)],
      [0, 0, 1]]
G_MATRIX = torch.tensor([[float(v) for v in row] for row in _G], dtype=torch.float64)


def _lib() -> ctypes.CDLL | None:
    lib = kernels.load("winograd")
    if lib is None:
        return None
    if not getattr(lib, "_vf_ready", False):
        if lib.wg_abi_version() != _ABI:
            return None
        lib.wg_in.argtypes = [_P, _P, _I, _I, _I, _I, _I]
        lib.wg_out.argtypes = [_P, _P, _I, _P, _I, _I, _I, _I, _I]
        lib.wg_out_adj.argtypes = [_P, _P, _P, _I, _I, _I, _I, _I]
        lib.wg_in_adj.argtypes = [_P, _P, _I, _I, _I, _I, _I, _I]
        lib.wg_wt.argtypes = [_P, _P, _P, _P, _I, _I, _I]
        lib.wg_wt_adj.argtypes = [_P, _P, _P, _P, _P, _P, _I, _I, _I]
        lib._vf_ready = True
    return lib


def available() -> bool:
    """Whether the Winograd kernels are built (no compiler or ``VISIONFLOWS_KERNELS=0``: ``False``)."""
    return _lib() is not None


_POS_11 = 1 * 6 + 1
_G_CACHE: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _g(weight: Tensor) -> Tensor:
    key = (weight.dtype, weight.device)
    if key not in _G_CACHE:
        _G_CACHE[key] = G_MATRIX.to(device=weight.device, dtype=weight.dtype)
    return _G_CACHE[key]


class _WeightTransform(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor) -> Tensor:  # type: ignore[override]
        co, ci = weight.shape[:2]
        weight = weight.contiguous()
        ctx.save_for_backward(weight)
        u = torch.empty(36, ci, co)
        _lib().wg_wt(weight.data_ptr(), None, _WS.get("g", ci * 9 * co).data_ptr(), u.data_ptr(), ci, co,
                     torch.get_num_threads())
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx, du: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        dw = torch.empty_like(weight)
        du = du.contiguous()
        ci, co = weight.shape[1], weight.shape[0]
        _lib().wg_wt_adj(du.data_ptr(), weight.data_ptr(), None, _WS.get("g", ci * 9 * co).data_ptr(),
                         dw.data_ptr(), None, ci, co, torch.get_num_threads())
        return dw


def weight_transform(weight: Tensor) -> Tensor:
    """``[C_out, C_in, 3, 3] → [36, C_in, C_out]``: ``G g Gᵀ`` per channel pair (differentiable; native kernel
    for float32 CPU weights when built, else two matrix products)."""
    if weight.device.type == "cpu" and weight.dtype == torch.float32 and not torch.compiler.is_compiling() \
            and _lib() is not None:
        return _WeightTransform.apply(weight)
    g = _g(weight)
    u = torch.matmul(torch.matmul(g, weight), g.t())  # [C_out, C_in, 6, 6]
    return u.permute(2, 3, 1, 0).reshape(36, weight.shape[1], weight.shape[0])


def _tiles(b: int, h: int, w: int) -> int:
    return b * (-(-h // 4)) * (-(-w // 4))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _Workspace(threading.local):
    """Per-thread scratch buffers reused between calls (fresh large buffers cost page faults on every call)."""

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def get(self, name: str, *shape: int) -> Tensor:
        n = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = self.buffers[name] = torch.empty(n)
        return buf[:n].view(shape)


_WS = _Workspace()

# The workspace's transformed tiles: "in" holds the input side (V in the forward pass; dV, then V again, in the
# backward pass, whose uses do not overlap), "out" the output side (M, dM). Sharing them keeps the buffers a step
# touches at 14 MB instead of 24 for 256 tiles of 128 channels, more of it in the 32 MB L3 (0.7–6% faster steps
# in interleaved A/Bs on a 2-core EPYC Zen 4).
_IN, _OUT = "in", "out"


def _transform_weight(lib: ctypes.CDLL, weight: Tensor, scale: Tensor | None, out: Tensor, nt: int) -> Tensor:
    """``U`` of ``weight · scale`` (contiguous float32 ``[C_out, C_in, 3, 3]`` and ``[C_out]``) into ``out``."""
    co, ci = weight.shape[:2]
    lib.wg_wt(weight.data_ptr(), _ptr(scale), _WS.get("g", ci * 9 * co).data_ptr(), out.data_ptr(), ci, co, nt)
    return out


#: scratch per chunk of images (the 36 transformed tiles of the widest side), in float32 values (16 MiB): bounds
#: the workspace for large batches; on 2 cores smaller chunks (down to one image) measured no faster
CHUNK_VALUES = 1 << 22


def _chunks(b: int, h: int, w: int, c: int) -> list[tuple[int, int]]:
    """Image ranges ``[b0, b1)`` whose transformed tiles (``36·tiles·c`` values) fit in :data:`CHUNK_VALUES`."""
    per_image = 36 * _tiles(1, h, w) * max(c, 1)
    n = max(1, min(b, CHUNK_VALUES // per_image))
    return [(b0, min(b, b0 + n)) for b0 in range(0, b, n)]


#: a batched product whose output rows are shorter than this (and its columns not) is formed transposed
NARROW = 16


def _bmm(a: Tensor, b: Tensor, out: Tensor, accumulate: bool = False) -> Tensor:
    """``out = a @ b`` (``out += a @ b`` when ``accumulate``) batched, ``out`` contiguous. A narrow output (the
    coupling network's last convolution has 2·(C − C/2) output channels, e.g. 10) is formed as ``(bᵀ aᵀ)ᵀ``:
    MKL's kernels run several times slower on products with a few output columns ([36, 256, 128] @ [36, 128, 10]
    0.83 ms, its transpose 0.20 ms on a 2-core EPYC), so the transposed product plus a small copy wins."""
    if out.shape[2] < NARROW <= out.shape[1]:
        tmp = _WS.get("narrow", out.shape[0], out.shape[2], out.shape[1])
        torch.bmm(b.transpose(1, 2), a.transpose(1, 2), out=tmp)
        return out.add_(tmp.transpose(1, 2)) if accumulate else out.copy_(tmp.transpose(1, 2))
    return out.baddbmm_(a, b) if accumulate else torch.bmm(a, b, out=out)


def _contig(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().contiguous()


def _forward(x: Tensor, weight: Tensor, scale: Tensor | None, bias: Tensor | None, relu: bool) -> Tensor:
    """The convolution, chunk by chunk of images; transforms and products live in the per-thread workspace."""
    lib = _lib()
    b, h, w, c = x.shape
    co = weight.shape[0]
    nt = torch.get_num_threads()
    x, weight, scale, bias = (_contig(t) for t in (x, weight, scale, bias))  # kept alive while the kernels read
    u = _transform_weight(lib, weight, scale, _WS.get("u", 36, c, co), nt)
    y = torch.empty(b, h, w, co)
    pix = h * w
    for b0, b1 in _chunks(b, h, w, max(c, co)):
        n, t = b1 - b0, _tiles(b1 - b0, h, w)
        v = _WS.get(_IN, 36, t, c)
        lib.wg_in(x.data_ptr() + 4 * b0 * pix * c, v.data_ptr(), n, h, w, c, nt)
        m = _bmm(v, u, _WS.get(_OUT, 36, t, co))
        lib.wg_out(m.data_ptr(), _ptr(bias), int(relu), y.data_ptr() + 4 * b0 * pix * co, n, h, w, co, nt)
    return y


class _Winograd3x3(torch.autograd.Function):
    """``relu?(conv3x3(x; weight · scale) + bias)`` channels-last; the backward pass recomputes the transforms ``V``
    and ``U`` of the saved input and weight; scratch buffers come from the per-thread workspace."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale: Tensor | None, bias: Tensor | None,  # type: ignore[override]
                relu: bool) -> Tensor:
        # the transformed input V (2.25x the input) is recomputed in the backward pass rather than kept: x is alive
        # anyway (the previous layer saved it) and keeping a fresh V per convolution measured 7% slower for a level's
        # training step (more memory traffic: the workspace's V stays in cache, fresh ones do not)
        y = _forward(x, weight, scale, bias, relu)
        ctx.save_for_backward(x, weight, scale, y if relu else None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        x, weight, scale, y = ctx.saved_tensors
        want = ctx.needs_input_grad
        dx, dw, ds, db = _conv_backward(x, weight, scale, y, dy, want[0], want[1] or want[2],
                                        scale is not None and want[2], ctx.has_bias and want[3])
        return dx, dw if want[1] else None, ds, db, None


def _conv_backward(x: Tensor, weight: Tensor, scale: Tensor | None, y_mask: Tensor | None, dy: Tensor, want_x: bool,
                   want_w: bool, want_s: bool, want_b: bool) -> tuple[Tensor | None, ...]:
    """Gradients of ``relu?(conv3x3(x; weight · scale) + b)`` for the output gradient ``dy`` (masked by
    ``y_mask > 0`` when the ReLU was applied): ``(dx, dweight, dscale, dbias)`` (``want_s`` needs ``want_w``)."""
    lib = _lib()
    b, h, w, c = x.shape
    co = weight.shape[0]
    nt = torch.get_num_threads()
    dy, x, weight, scale = (_contig(t) for t in (dy, x, weight, scale))
    pix = h * w
    dx = torch.empty(b, h, w, c) if want_x else None
    u = None
    if want_x:
        u = _transform_weight(lib, weight, scale, _WS.get("u", 36, c, co), nt)
    du = _WS.get("du", 36, c, co) if want_w else None
    db = torch.zeros(co) if want_b else None
    for i, (b0, b1) in enumerate(_chunks(b, h, w, max(c, co))):
        n, t = b1 - b0, _tiles(b1 - b0, h, w)
        dm = _WS.get(_OUT, 36, t, co)
        lib.wg_out_adj(dy.data_ptr() + 4 * b0 * pix * co,
                       None if y_mask is None else y_mask.data_ptr() + 4 * b0 * pix * co, dm.data_ptr(), n, h, w, co,
                       nt)
        if want_x:
            dv = _bmm(dm, u.transpose(1, 2), _WS.get(_IN, 36, t, c))
            lib.wg_in_adj(dv.data_ptr(), dx.data_ptr() + 4 * b0 * pix * c, n, h, w, c, 0, nt)
        if want_w:
            v = _WS.get(_IN, 36, t, c)  # dV is consumed: its buffer takes V
            lib.wg_in(x.data_ptr() + 4 * b0 * pix * c, v.data_ptr(), n, h, w, c, nt)
            _bmm(v.transpose(1, 2), dm, du, accumulate=i > 0)
        if want_b:
            # Aᵀ's column 1 is all ones (the point 1 sums a polynomial's coefficients): summing the (masked)
            # output gradient over a tile is dM at position (1, 1)
            db += dm[_POS_11].sum(0)
    dw = ds = None
    if want_w:
        dw = torch.empty(co, c, 3, 3)
        ds = torch.empty(co) if want_s else None
        lib.wg_wt_adj(du.data_ptr(), weight.data_ptr(), _ptr(scale), _WS.get("g", c * 9 * co).data_ptr(),
                      dw.data_ptr(), _ptr(ds), c, co, nt)
    return dx, dw, ds, db


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False,
                     scale: Tensor | None = None) -> Tensor:
    """``relu?(conv3x3(x; weight · scale) + bias)`` with zero padding 1: ``x [B, H, W, C_in]`` channels-last float32
    CPU, ``weight [C_out, C_in, 3, 3]``, ``scale [C_out]`` (a per-output-channel factor of the weight, e.g. a folded
    normalisation; ``None``: 1), ``bias [C_out]`` → ``[B, H, W, C_out]``; differentiable in all four (first order).
    Needs :func:`available`."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1:] != (x.shape[-1], 3, 3):
        raise ValueError(f"winograd_conv3x3: x {tuple(x.shape)} [B, H, W, C] and weight {tuple(weight.shape)} "
                         f"[C_out, C, 3, 3] do not match")
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and tuple(t.shape) != (weight.shape[0],):
            raise ValueError(f"winograd_conv3x3: {name} {tuple(t.shape)} is not [C_out] = [{weight.shape[0]}]")
    if any(t is not None and (t.dtype != torch.float32 or t.device.type != "cpu")
           for t in (x, weight, scale, bias)):
        raise ValueError("winograd_conv3x3 takes float32 CPU tensors")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, scale, bias))
    if not needs_grad:  # eval / sampling: no autograd node, nothing saved
        return _forward(x, weight, scale, bias, bool(relu))
    return _Winograd3x3.apply(x, weight, scale, bias, bool(relu))
