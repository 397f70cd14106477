"""ctypes bindings of the Noise Flow kernels (``visionflows/kernels/noiseflow.cpp``) and the autograd functions of
the training fast path; used by :mod:`visionflows.noise.fused`.

* :func:`kernel_library`: the compiled library with its signatures, or ``None``.
* ``_UncTrain`` / :func:`unc_train`: one ``unc`` step (1×1 convolution + affine coupling with batch-statistics
  BatchNorm) forward and backward; the BatchNorm running statistics are updated as ``nn.BatchNorm2d`` does.
* ``_SdnTrain`` / :func:`sdn_train`: the signal-dependent layer ``z = x / sqrt(a·y + c)``.
* :func:`squared_norm`: ``Σ z²`` per sample for the standard-normal prior.

Tensors are float32, contiguous, on the CPU, ``[B, 4, H, W]``; the checks are :func:`~visionflows.noise.fused.
fast_path_reason`'s.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from visionflows import kernels
from visionflows.flows import AffineCoupling, logdet_dtype
from visionflows.noise.context import NoiseContext
from visionflows.noise.layers import NoiseFlowCouplingNet

__all__ = ["kernel_library", "unc_train", "sdn_train", "squared_norm"]

_ABI = 5
_P = ctypes.c_void_p
_I = ctypes.c_int


def kernel_library() -> ctypes.CDLL | None:
    """The compiled ``noiseflow`` kernels with their signatures set, or ``None`` (no compiler, build failed,
    ``VISIONFLOWS_KERNELS=0``, or an out-of-date build)."""
    lib = kernels.load("noiseflow")
    if lib is None:
        return None
    if not getattr(lib, "_vf_ready", False):
        if lib.nf_abi_version() != _ABI:
            return None
        lib.nf_eval.argtypes = [_P, _P, _P, _P, _I, _I, _I, _P, _I, _P, _P, _I, _I, _I]
        lib.nf_sdn_fwd.argtypes = [_P, _P, _P, _P, _P, _P, _I, _I, _I, _I]
        lib.nf_sdn_bwd.argtypes = [_P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I]
        lib.nf_unc_train_fwd.argtypes = [_P, _P, _P, _P, _P, _I, _I, _I, _I, ctypes.c_float, _I]
        lib.nf_unc_train_bwd.argtypes = [_P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, ctypes.c_float, _I]
        lib._vf_lanes = int(lib.nf_vector_lanes())  # pixels per vector block: rows of bias maps are padded to it
        lib._vf_ready = True
    return lib


def _padded_map(bias_map: Tensor, width: int) -> Tensor:
    """``[1, 4, H, W] -> [4, H, Wr]`` zero-padded to a multiple of the kernels' vector length (16 pixels with
    AVX-512, 8 with AVX2, 4 otherwise)."""
    lanes = kernel_library()._vf_lanes
    wr = -(-width // lanes) * lanes
    return F.pad(bias_map[0], (0, wr - width))


# ------------------------------------------------------------------------------------------- training mode
class _UncTrain(torch.autograd.Function):
    """One unc step in training mode: ``(x [B,4,H,W], small, bm [4,H,W]) -> (z, log-det [B], stats)``."""

    @staticmethod
    def forward(ctx, x, small, bm, width, eps):  # noqa: ANN001
        b, _, h, w = x.shape
        x = x.contiguous()
        packed = torch.cat([small, _padded_map(bm[None], w).reshape(-1)]).contiguous()
        z = torch.empty_like(x)
        ld = torch.empty(b, dtype=torch.float32)
        stats = torch.empty(4 * width, dtype=torch.float64)
        rc = kernel_library().nf_unc_train_fwd(x.data_ptr(), packed.data_ptr(), z.data_ptr(), ld.data_ptr(),
                                               stats.data_ptr(), b, h, w, width, eps, torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"nf_unc_train_fwd failed ({rc})")
        ctx.save_for_backward(x, packed, stats)
        ctx.width, ctx.eps, ctx.nsmall = width, eps, small.numel()
        ctx.mark_non_differentiable(stats)
        return z, ld, stats

    @staticmethod
    @once_differentiable
    def backward(ctx, gz, gld, _gstats):  # noqa: ANN001
        x, packed, stats = ctx.saved_tensors
        b, _, h, w = x.shape
        gz = gz.to(torch.float32).contiguous()
        gld = gld.to(torch.float32).contiguous()
        dx = torch.empty_like(x)
        dprm = torch.empty(ctx.nsmall + 4 * h * w, dtype=torch.float32)
        rc = kernel_library().nf_unc_train_bwd(x.data_ptr(), packed.data_ptr(), stats.data_ptr(), gz.data_ptr(),
                                               gld.data_ptr(), dx.data_ptr(), dprm.data_ptr(), b, h, w, ctx.width,
                                               ctx.eps, torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"nf_unc_train_bwd failed ({rc})")
        return dx, dprm[: ctx.nsmall], dprm[ctx.nsmall :].view(4, h, w), None, None


def _update_running_stats(net: NoiseFlowCouplingNet, stats: Tensor, count: int) -> None:
    """``nn.BatchNorm2d``'s update: ``r ← (1 − m)·r + m·batch`` (unbiased variance), ``num_batches_tracked += 1``."""
    wd = net.bn_1.num_features
    with torch.no_grad():
        for k, bn in enumerate((net.bn_1, net.bn_2)):
            mean, var = stats[2 * k * wd : (2 * k + 1) * wd], stats[(2 * k + 1) * wd : (2 * k + 2) * wd]
            m = bn.momentum
            bn.running_mean.mul_(1 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
            bn.running_var.mul_(1 - m).add_((var * (count / (count - 1))).to(bn.running_var.dtype), alpha=m)
            bn.num_batches_tracked.add_(1)


def unc_train(conv: Any, coupling: AffineCoupling, x: Tensor, in_gain: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Training-mode ``conv`` then ``coupling`` through the fused kernels (same values as the two layers).
    ``in_gain``: a preceding gain layer's ``g`` folded into the 1×1 convolution (``M·(x/g) = (M/g)·x``)."""
    net = coupling.net
    _, _, h, w = x.shape
    w3, bias_map = net.l_last.folded(h, w)
    m = conv.weight()
    if in_gain is not None:
        m = m / in_gain
    small = torch.cat([m.reshape(-1), net.l_1.weight.reshape(-1), net.l_1.bias,
                       net.l_2.weight.reshape(-1), net.l_2.bias, w3.reshape(-1),
                       coupling.scale_bound.to(torch.float32).reshape(1)])
    width = net.l_1.out_channels
    z, ld, stats = _UncTrain.apply(x, small, bias_map[0], width, float(net.bn_1.eps))
    _update_running_stats(net, stats, x.shape[0] * h * w)
    lad = conv.log_abs_det()
    return z, (lad.to(logdet_dtype(x)) * (h * w)).expand(x.shape[0]) + ld


class _SdnTrain(torch.autograd.Function):
    """The signal-dependent layer ``z = x / sqrt(a·y + c)``: ``(x, clean, a [B, 4], c [B, 4]) -> (z, log-det)``."""

    @staticmethod
    def forward(ctx, x, clean, a, c):  # noqa: ANN001
        b, _, h, w = x.shape
        x, clean, a, c = x.contiguous(), clean.contiguous(), a.contiguous(), c.contiguous()
        z = torch.empty_like(x)
        ld = torch.empty(b, dtype=torch.float32)
        kernel_library().nf_sdn_fwd(x.data_ptr(), clean.data_ptr(), a.data_ptr(), c.data_ptr(), z.data_ptr(),
                                    ld.data_ptr(), b, h, w, torch.get_num_threads())
        ctx.save_for_backward(x, clean, a, c)
        return z, ld

    @staticmethod
    @once_differentiable
    def backward(ctx, gz, gld):  # noqa: ANN001
        x, clean, a, c = ctx.saved_tensors
        b, _, h, w = x.shape
        gz, gld = gz.to(torch.float32).contiguous(), gld.to(torch.float32).contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        da = torch.empty(b, 4, dtype=torch.float64)
        dc = torch.empty(b, 4, dtype=torch.float64)
        kernel_library().nf_sdn_bwd(x.data_ptr(), clean.data_ptr(), a.data_ptr(), c.data_ptr(), gz.data_ptr(),
                                    gld.data_ptr(), None if dx is None else dx.data_ptr(), da.data_ptr(),
                                    dc.data_ptr(), b, h, w, torch.get_num_threads())
        return dx, None, da.to(a.dtype), dc.to(c.dtype)


def sdn_train(layer: Any, x: Tensor, context: NoiseContext) -> tuple[Tensor, Tensor]:
    a, c = layer.coefficients(context)
    if a.dim() == 1:
        a, c = a[:, None].expand(-1, 4), c[:, None].expand(-1, 4)
    return _SdnTrain.apply(x, context.clean, a.to(torch.float32), c.to(torch.float32))


class _SquaredNorm(torch.autograd.Function):
    """``Σ z²`` per sample ``[B]`` in one pass forward and one backward (``2·z·g``), for the standard-normal prior."""

    @staticmethod
    def forward(ctx, z):  # noqa: ANN001
        ctx.save_for_backward(z)
        return torch.linalg.vector_norm(z.reshape(z.shape[0], -1), dim=1).square()

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001
        (z,) = ctx.saved_tensors
        return z * (2 * g).view(-1, *([1] * (z.dim() - 1)))


def squared_norm(z: Tensor) -> Tensor:
    """``Σ z²`` over every dimension but the batch, ``[B]`` (differentiable)."""
    return _SquaredNorm.apply(z)
