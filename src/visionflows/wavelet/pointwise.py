"""1×1 convolutions on channels-last rows with a fused epilogue, for the coupling networks on the CPU.

``relu?(rows @ weightᵀ + bias + skip)`` is one matrix product (``torch.mm``) and one native pass over the output
(``visionflows/kernels/pointwise.cpp``) instead of an ``addmm`` (which first copies the bias into every row), an
add and a ReLU; its backward pass is one native pass (ReLU mask and bias gradient together) and two matrix
products, in one autograd node. Same arithmetic as the unfused ops up to the order of the bias-gradient sum
(double here). :func:`available` says whether the kernels are built; callers fall back to the plain ops.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from visionflows import kernels

__all__ = ["available", "linear_epilogue"]

_ABI = 1
_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_long


def _lib() -> ctypes.CDLL | None:
    lib = kernels.load("pointwise")
    if lib is None:
        return None
    if not getattr(lib, "_vf_ready", False):
        if lib.pw_abi_version() != _ABI:
            return None
        lib.pw_epilogue.argtypes = [_P, _P, _P, _I, _L, _I, _I]
        lib.pw_epilogue_adj.argtypes = [_P, _P, _I, _P, _P, _P, _L, _I, _I]
        lib._vf_ready = True
    return lib


def available() -> bool:
    """Whether the pointwise kernels are built (no compiler or ``VISIONFLOWS_KERNELS=0``: ``False``)."""
    return _lib() is not None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forward(rows: Tensor, weight: Tensor, bias: Tensor | None, skip: Tensor | None, relu: bool) -> Tensor:
    y = torch.mm(rows, weight.t())
    skip = None if skip is None else skip.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    _lib().pw_epilogue(y.data_ptr(), _ptr(bias), _ptr(skip), int(relu), y.shape[0], y.shape[1],
                       torch.get_num_threads())
    return y


#: a product whose output has fewer columns than this is formed in the layout MKL handles well (see below)
NARROW = 16


def _narrow_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (``b [K, N]`` contiguous); for a narrow ``N`` with ``b`` passed column-major (MKL's kernels for a
    few output columns and a row-major ``b`` ran ~2x slower: [4096, 128] @ [128, 7] 0.37 vs 0.16 ms on a 2-core
    EPYC)."""
    if b.shape[1] < NARROW:
        return torch.mm(a, b.t().contiguous().t())
    return torch.mm(a, b)


def _weight_grad(dz: Tensor, rows: Tensor) -> Tensor:
    """``dzᵀ @ rows [C_out, C_in]``; for a narrow ``C_in`` as ``(rowsᵀ @ dz)ᵀ``, whose product has ``C_out``
    columns (3x faster for [4096, 128]ᵀ @ [4096, 7]), copied back to a contiguous ``[C_out, C_in]``."""
    if rows.shape[1] < NARROW:
        return torch.mm(rows.t(), dz).t().contiguous()
    return torch.mm(dz.t(), rows)


class _LinearEpilogue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, weight: Tensor, bias: Tensor | None, skip: Tensor | None,  # type: ignore[override]
                relu: bool) -> Tensor:
        y = _forward(rows, weight, bias, skip, relu)
        ctx.save_for_backward(rows, weight, y)
        ctx.relu, ctx.has_bias, ctx.has_skip = relu, bias is not None, skip is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        rows, weight, y = ctx.saved_tensors
        want = ctx.needs_input_grad
        dy = dy.contiguous()
        n, c = y.shape
        nt = torch.get_num_threads()
        if ctx.relu:
            dz = torch.empty_like(y)
        else:
            dz = dy
        db = torch.empty(c) if ctx.has_bias and want[2] else None
        if ctx.relu or db is not None:
            scratch = torch.empty(max(nt, 1), c, dtype=torch.float64) if db is not None else None
            _lib().pw_epilogue_adj(dy.data_ptr(), y.data_ptr(), int(ctx.relu), dz.data_ptr(), _ptr(db),
                                   _ptr(scratch), n, c, nt)
        drows = _narrow_mm(dz, weight) if want[0] else None
        dw = _weight_grad(dz, rows) if want[1] else None
        dskip = dz if ctx.has_skip and want[3] else None
        return drows, dw, db, dskip, None


def linear_epilogue(rows: Tensor, weight: Tensor, bias: Tensor | None = None, skip: Tensor | None = None,
                    relu: bool = False) -> Tensor:
    """``relu?(rows @ weightᵀ + bias + skip)``: ``rows [N, C_in]``, ``weight [C_out, C_in]``, ``bias [C_out]``,
    ``skip [N, C_out]`` (a residual added before the ReLU) → ``[N, C_out]``, float32 CPU; differentiable in all
    four (first order). Needs :func:`available`."""
    if rows.dim() != 2 or weight.dim() != 2 or weight.shape[1] != rows.shape[1]:
        raise ValueError(f"linear_epilogue: rows {tuple(rows.shape)} [N, C_in] and weight {tuple(weight.shape)} "
                         f"[C_out, C_in] do not match")
    n, co = rows.shape[0], weight.shape[0]
    if bias is not None and tuple(bias.shape) != (co,):
        raise ValueError(f"linear_epilogue: bias {tuple(bias.shape)} is not [C_out] = [{co}]")
    if skip is not None and tuple(skip.shape) != (n, co):
        raise ValueError(f"linear_epilogue: skip {tuple(skip.shape)} is not [N, C_out] = [{n}, {co}]")
    if any(t is not None and (t.dtype != torch.float32 or t.device.type != "cpu") for t in (rows, weight, bias, skip)):
        raise ValueError("linear_epilogue takes float32 CPU tensors")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (rows, weight, bias, skip))
    if not needs_grad:
        return _forward(rows, weight, bias, skip, bool(relu))
    return _LinearEpilogue.apply(rows, weight, bias, skip, bool(relu))
