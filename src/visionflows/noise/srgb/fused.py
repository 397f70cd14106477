"""The fast CPU path of the sRGB Noise Flow in evaluation mode: one native kernel (``kernels/srgb.cpp``) runs every
layer of a sample in cache-resident planes, samples in parallel.

:class:`SRGBFlowTransform` is the :class:`~visionflows.flows.Compose` of an
:class:`~visionflows.noise.srgb.SRGBNoiseFlow`. Its ``forward`` (noise → latent, NLL) and ``inverse`` (latent →
noise, sampling) take the kernel when :func:`fast_path_reason` finds nothing against it: evaluation mode (sampling,
the denoiser's on-the-fly synthesis, NLL evaluation), float32 CPU tensors, the layer types of
:class:`~visionflows.noise.srgb.SRGBNoiseFlow`, coupling width 4, 8 or 16 and the library built. With autograd the
values are the kernel's (the same as without) and the gradients the plain path's, recomputed in the backward pass.
Everything else, training included, takes the plain layer-by-layer PyTorch path;
:attr:`SRGBFlowTransform.use_kernels` ``= False`` (or ``VISIONFLOWS_KERNELS=0``) forces it. Both compute the same
function up to float32 rounding (``tests/test_srgb_kernels.py``).

Why: the coupling networks have 4-7 input and 4 hidden channels, where each oneDNN convolution call costs far more
in overhead and layout conversion than its arithmetic (``BENCHMARKS.md``, ``denoise``).

What the kernel gets (built once per shape, direction and parameter version, then cached): the ops in execution
order, the shared parameters packed flat (BatchNorm running statistics or ActNorm folded into the convolutions, the
edge ring and gain of the last convolution into a bias map), and one row of per-sample values per (ISO, camera)
pair (the CL2 tables, the SDL variances, every coupling's scale embedding ``e(ISO, camera)``), gathered per call.
The log-determinants that do not depend on the noise (fixed scale, CL2, 1×1 convolutions, SDL) are added here.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from visionflows import kernels
from visionflows.flows import Compose, logdet_dtype
from visionflows.flows.conv1x1 import _Conv1x1Base
from visionflows.noise.fused import _is_plain, mode_reason, plain_path_gradients
from visionflows.noise.srgb.context import SRGBContext
from visionflows.noise.srgb.layers import (
    ActNorm2d,
    CheckerboardCoupling,
    ConditionalAffineCoupling,
    ConditionalLinear,
    FixedScale,
    SignalDependentScale,
    SRGBCouplingNet,
)

__all__ = ["SRGBFlowTransform", "fast_path_reason", "kernel_library"]

_ABI = 1
_WIDTHS = (4, 8, 16)
_SCALE, _AFFINE, _SDL, _MIX, _CAC, _SPC = range(6)
_P = ctypes.c_void_p
_I = ctypes.c_int


def kernel_library() -> ctypes.CDLL | None:
    """The built ``srgb`` kernel library (``None``: unavailable, the plain path runs)."""
    lib = kernels.load("srgb")
    if lib is None:
        return None
    if not getattr(lib, "_vf_ready", False):
        if lib.srgb_abi_version() != _ABI:
            return None
        lib.srgb_eval.restype = _I
        lib.srgb_eval.argtypes = [_P, _P, _P, _I, _I, _I, _P, _I, _P, _P, _P, _I, _I, _I, _I]
        lib._vf_lanes = int(lib.srgb_vector_lanes())  # pixels per vector block: rows of bias maps are padded to it
        lib._vf_ready = True
    return lib


# ------------------------------------------------------------------------------------------------ structure
def _net_ok(net: Any, in_channels: int, out_channels: int) -> bool:
    if type(net) is not SRGBCouplingNet:
        return False
    wd = net.l_1.out_channels
    norms_ok = all(type(n) is ActNorm2d or type(n) is nn.Identity
                   or (type(n) is nn.BatchNorm2d and n.track_running_stats and n.running_mean is not None
                       and n.num_features == wd)
                   for n in (net.bn_1, net.bn_2))
    return (wd in _WIDTHS and norms_ok and net.l_1.in_channels == in_channels and net.l_1.kernel_size == (3, 3)
            and net.l_1.padding == (1, 1) and net.l_1.stride == (1, 1) and net.l_1.dilation == (1, 1)
            and net.l_1.groups == 1 and net.l_1.bias is not None
            and net.l_2.kernel_size == (1, 1) and net.l_2.in_channels == wd and net.l_2.out_channels == wd
            and net.l_2.groups == 1 and net.l_2.bias is not None
            and net.l_last.conv.in_channels == wd + 1 and net.l_last.conv.out_channels == out_channels)


def _layer_ok(layer: Any) -> bool:
    t = type(layer)
    if t is FixedScale:
        return True
    if t is ConditionalLinear or t is SignalDependentScale:
        return layer.channels == 3
    if isinstance(layer, _Conv1x1Base):
        return layer.channels == 3
    if t is ConditionalAffineCoupling:
        return (layer.channels == 3 and layer.split == 1 and layer.context_channels == 3 and not layer.shift_first
                and _net_ok(layer.net, 4, 4))
    if t is CheckerboardCoupling:
        return layer.channels == 3 and _net_ok(layer.net, 7, 6)
    return False


def _structure_ok(transform: Compose) -> bool:
    key = tuple(id(m) for m in transform.layers)
    cached = transform.__dict__.get("_vf_srgb_structure")
    if cached is None or cached[0] != key:
        nets = [layer.net for layer in transform.layers if hasattr(layer, "net")]
        ok = all(_layer_ok(layer) for layer in transform.layers) and \
            len({n.l_1.out_channels for n in nets}) <= 1  # one kernel call has one coupling width
        cached = (key, ok)
        transform.__dict__["_vf_srgb_structure"] = cached
    return cached[1]


class _State:
    """One walk over the transform's modules: whether any trains, its parameters and buffers (no duplicates)."""

    __slots__ = ("training", "params", "buffers")

    def __init__(self, transform: Compose) -> None:
        self.training = False
        params: dict[int, Tensor] = {}
        self.buffers: list[Tensor] = []
        for m in transform.modules():
            self.training |= m.training
            for t in m._parameters.values():
                if t is not None:
                    params.setdefault(id(t), t)
            self.buffers.extend(t for t in m._buffers.values() if t is not None)
        self.params = list(params.values())

    def key(self) -> tuple:
        """Storage and version of every tensor: changes when a parameter is replaced or updated in place."""
        return tuple((t.data_ptr(), t._version) for t in (*self.params, *self.buffers))


def fast_path_reason(transform: Compose, x: Tensor, context: Any, state: _State | None = None) -> str | None:
    """Why ``transform(x, context)`` (or its inverse) would take the plain PyTorch path (``None``: the kernel)."""
    reason = mode_reason(transform)
    if reason is not None:
        return reason
    if not _is_plain(x) or x.dim() != 4 or x.shape[1] != 3 or x.numel() == 0:
        return "input is not a non-empty float32 CPU tensor [B, 3, H, W]"
    if not isinstance(context, SRGBContext) or not _is_plain(context.clean) or context.clean.shape != x.shape:
        return "context clean image is not a float32 CPU tensor of the input's shape"
    state = state or _State(transform)
    if state.training:
        return "training mode (the kernel computes the evaluation-mode function)"
    if torch.is_grad_enabled() and context.clean.requires_grad:
        return "the context requires a gradient"
    if not _structure_ok(transform):
        return "a layer without a kernel"
    if not all(_is_plain(p) for p in state.params):
        return "parameters are not float32 CPU tensors"
    if kernel_library() is None:
        return f"kernels unavailable ({kernels.build_error('srgb') or 'disabled'})"
    return None


# ------------------------------------------------------------------------------------------------ the plan
def _folded_net(net: SRGBCouplingNet, height: int, width: int) -> tuple[list[Tensor], Tensor, Tensor]:
    """``([w1, b1, w2, b2], w3, bm)`` of a coupling network in evaluation mode: the norms folded into ``l_1`` and
    ``l_2``, the gain and edge ring of ``l_last`` into ``w3`` and the bias map ``bm [CO, H, Wr]`` (flat)."""
    folded = []
    for conv, norm in ((net.l_1, net.bn_1), (net.l_2, net.bn_2)):
        w, b = conv.weight, conv.bias
        if isinstance(norm, nn.BatchNorm2d):
            s = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                s = s * norm.weight
            shift = -norm.running_mean * s + (norm.bias if norm.bias is not None else 0.0)
            w, b = w * s[:, None, None, None], b * s + shift
        elif isinstance(norm, ActNorm2d):
            e = torch.exp(norm.log_scale.reshape(-1))
            w, b = w * e[:, None, None, None], (b + norm.bias.reshape(-1)) * e
        folded += [w.reshape(-1), b.reshape(-1)]
    w3, bias_map = net.l_last.folded(height, width)
    lanes = kernel_library()._vf_lanes
    wr = -(-width // lanes) * lanes
    return folded, w3.reshape(-1), F.pad(bias_map[0], (0, wr - width)).reshape(-1)


def _all_combos(n_iso: int, n_cam: int) -> SRGBContext:
    iso = torch.arange(n_iso).repeat_interleave(n_cam)
    cam = torch.arange(n_cam).repeat(n_iso)
    return SRGBContext(torch.zeros(n_iso * n_cam, 3, 1, 1), iso, cam, n_iso, n_cam)


@torch.no_grad()
def _build_plan(transform: Compose, height: int, width: int, inverse: bool, context: SRGBContext) -> dict:
    """``ops [n, 4] int32``, ``params`` (flat float32), ``table [n_combo, S]`` (per-sample values),
    ``const [n_combo]`` (the noise-independent log-dets of the direction, float64), ``sdl`` (the SDL layers)."""
    n_iso, n_cam = context.n_iso, context.n_cam
    combos = _all_combos(n_iso, n_cam)
    n_combo, hw = n_iso * n_cam, height * width
    sign = -1.0 if inverse else 1.0
    ops: list[list[int]] = []
    params: list[Tensor] = []
    columns: list[Tensor] = []  # [n_combo, k] blocks of the per-sample row
    n_params = n_cols = 0
    const = torch.zeros(n_combo, dtype=torch.float64)
    sdl: list[SignalDependentScale] = []

    def add_params(*ts: Tensor) -> int:
        nonlocal n_params
        off = n_params
        for t in ts:
            t = t.detach().to(torch.float32).reshape(-1)
            params.append(t)
            n_params += t.numel()
        return off

    def add_columns(t: Tensor) -> int:
        nonlocal n_cols
        off = n_cols
        columns.append(t.detach().to(torch.float32).reshape(n_combo, -1))
        n_cols += columns[-1].shape[1]
        return off

    layers = list(transform.layers)
    for layer in (reversed(layers) if inverse else layers):
        if isinstance(layer, FixedScale):
            s = layer.log_scale0.to(torch.float32)
            ops.append([_SCALE, add_params(torch.exp(s if inverse else -s).reshape(1)), 0, 0])
            const += sign * float(-s * (3 * hw))
        elif isinstance(layer, ConditionalLinear):
            s, b = layer.log_scale.float(), layer.bias.float()
            zero = torch.zeros_like(b)
            # x = (x + pre) * mul + post: forward x·exp(s) + b, inverse (z − b)·exp(−s), rounded as the plain path
            row = torch.cat([-b, torch.exp(-s), zero], 1) if inverse else torch.cat([zero, torch.exp(s), b], 1)
            ops.append([_AFFINE, 0, add_columns(row), 0])
            const += sign * s.double().sum(1) * hw
        elif isinstance(layer, SignalDependentScale):
            row = torch.cat([torch.exp(layer.log_a.float()), torch.exp(layer.log_b.float())], 1)
            ops.append([_SDL, 0, add_columns(row), 0])
            sdl.append(layer)
        elif isinstance(layer, _Conv1x1Base):
            w, lad = layer._weights(torch.float32, inverse=inverse)
            ops.append([_MIX, add_params(w), 0, 0])
            const += sign * float(lad) * hw
        else:  # a coupling
            folded, w3, bm = _folded_net(layer.net, height, width)
            off = add_params(*folded, w3, layer.scale_bound.reshape(1), bm)
            e = layer.embed(combos)
            kind = _CAC if isinstance(layer, ConditionalAffineCoupling) else _SPC
            ops.append([kind, off, add_columns(e), getattr(layer, "parity", 0)])
    table = torch.cat(columns, 1) if columns else torch.zeros(n_combo, 1)
    return {"ops": torch.tensor(ops, dtype=torch.int32).reshape(-1, 4).contiguous(),
            "params": torch.cat(params).contiguous() if params else torch.zeros(1),
            "table": table.contiguous(), "const": const, "sdl": sdl,
            "wd": next((layer.net.l_1.out_channels for layer in layers if hasattr(layer, "net")), 4)}


def _plan(transform: Compose, height: int, width: int, inverse: bool, context: SRGBContext, state: _State) -> dict:
    key = (height, width, inverse, context.n_iso, context.n_cam, state.key())
    cache = transform.__dict__.setdefault("_vf_srgb_plans", {})
    plan = cache.get(key)
    if plan is None:
        if len(cache) >= 8:
            cache.clear()
        plan = cache[key] = _build_plan(transform, height, width, inverse, context)
    return plan


def _sdl_logdet(layer: SignalDependentScale, x: Tensor, context: SRGBContext) -> Tensor:
    return -layer._log_std(context, x).to(torch.float64).flatten(1).sum(1)


def run_kernel(transform: Compose, x: Tensor, context: SRGBContext, inverse: bool,
               state: _State | None = None) -> tuple[Tensor, Tensor]:
    """``(y, log-det [B])`` of ``transform`` (or its inverse) through the kernel; the caller checked
    :func:`fast_path_reason`."""
    b, _, h, w = x.shape
    plan = _plan(transform, h, w, inverse, context, state or _State(transform))
    combo = context.combo.to(torch.long)
    rows = plan["table"].index_select(0, combo).contiguous()
    x = x.contiguous()
    clean = context.clean.contiguous()
    y = torch.empty_like(x)
    ld = torch.empty(b, dtype=torch.float64)
    status = kernel_library().srgb_eval(
        x.data_ptr(), y.data_ptr(), ld.data_ptr(), b, h, w, clean.data_ptr(), plan["ops"].shape[0],
        plan["ops"].data_ptr(), plan["params"].data_ptr(), rows.data_ptr(), rows.shape[1], plan["wd"], int(inverse),
        torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"srgb kernel failed with status {status}")
    ld = ld + plan["const"].index_select(0, combo)
    for layer in plan["sdl"]:
        ld = ld + (-1.0 if inverse else 1.0) * _sdl_logdet(layer, x, context)
    return y, ld.to(logdet_dtype(x))


class _EvalWithGrad(torch.autograd.Function):
    """The kernel's values forward (the same as without autograd); the plain path's gradients backward,
    recomputed there."""

    @staticmethod
    def forward(ctx, transform, context, inverse, state, x, *params):  # noqa: ANN001
        ctx.transform, ctx.context, ctx.inverse = transform, context, inverse
        ctx.save_for_backward(x, *params)
        with torch.no_grad():
            return run_kernel(transform, x, context, inverse, state)

    @staticmethod
    @once_differentiable
    def backward(ctx, gz, gld):  # noqa: ANN001
        return (None, None, None, None, *plain_path_gradients(ctx, ctx.needs_input_grad[4:], gz, gld))


def _run(transform: Compose, x: Tensor, context: SRGBContext, inverse: bool, state: _State) -> tuple[Tensor, Tensor]:
    if torch.is_grad_enabled():
        params = [p for p in state.params if p.requires_grad]
        if x.requires_grad or params:
            return _EvalWithGrad.apply(transform, context, inverse, state, x, *params)
    return run_kernel(transform, x, context, inverse, state)


class SRGBFlowTransform(Compose):
    """The layers of an sRGB Noise Flow (a :class:`Compose`) with the native evaluation-mode path (module docstring)."""

    #: take the native kernel when possible (``False``: always the plain PyTorch path)
    use_kernels: bool = True

    def fast_path(self, x: Tensor, context: Any = None) -> bool:
        """Whether ``forward``/``inverse`` of ``x`` take the kernel (see :func:`fast_path_reason`)."""
        return fast_path_reason(self, x, context) is None

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        state = _State(self)
        if fast_path_reason(self, x, context, state) is None:
            return _run(self, x, context, False, state)
        return super().forward(x, context)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        state = _State(self)
        if fast_path_reason(self, z, context, state) is None:
            return _run(self, z, context, True, state)
        return super().inverse(z, context)
