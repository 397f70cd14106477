"""Fused 1×1 convolutions on rows (visionflows.wavelet.pointwise) against float64 ops: values and the gradients of
rows, weight, bias and skip for every combination of bias / skip / ReLU; the no-grad path; a skip shared with the
rows (the residual block's case); bad inputs."""

from __future__ import annotations

import pytest
import torch

from _require import needs_kernels
from visionflows import kernels
from visionflows.wavelet import pointwise as pw


@needs_kernels
def test_kernels_build() -> None:
    assert pw.available(), kernels.build_error("pointwise")


@needs_kernels
@pytest.mark.parametrize("n, ci, co", [(4096, 128, 128), (37, 7, 19), (5, 128, 10)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_matches_float64(n: int, ci: int, co: int, bias: bool, skip: bool, relu: bool) -> None:
    gen = torch.Generator().manual_seed(n + ci + co)
    rows = torch.randn(n, ci, generator=gen)
    weight = 0.1 * torch.randn(co, ci, generator=gen)
    b = torch.randn(co, generator=gen) if bias else None
    s = torch.randn(n, co, generator=gen) if skip else None
    gy = torch.randn(n, co, generator=gen)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (rows, weight, b, s)]
    y = pw.linear_epilogue(*leaves, relu=relu)
    (y * gy).sum().backward()

    ref_leaves = [t.double().requires_grad_() if t is not None else None for t in (rows, weight, b, s)]
    r, w, b64, s64 = ref_leaves
    pre = r @ w.t() + (b64 if b64 is not None else 0.0) + (s64 if s64 is not None else 0.0)
    ref = torch.where(y.detach() > 0, pre, 0.0) if relu else pre  # the mask of the fused output (ties at 0)
    (ref * gy.double()).sum().backward()
    scale = float(pre.detach().abs().max())
    assert (y.double() - ref).abs().max() <= 1e-5 * scale
    for got, want in zip(leaves, ref_leaves):
        if got is None:
            continue
        assert got.grad.shape == want.shape
        assert (got.grad.double() - want.grad).abs().max() <= 1e-5 * float(want.grad.abs().max())


@needs_kernels
def test_no_grad_path_equals_autograd_path() -> None:
    gen = torch.Generator().manual_seed(1)
    rows, weight = torch.randn(50, 12, generator=gen), torch.randn(8, 12, generator=gen).requires_grad_()
    bias, skip = torch.randn(8, generator=gen), torch.randn(50, 8, generator=gen)
    with torch.no_grad():
        a = pw.linear_epilogue(rows, weight, bias, skip, relu=True)
    b = pw.linear_epilogue(rows, weight, bias, skip, relu=True)
    assert b.requires_grad and not a.requires_grad
    torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@needs_kernels
def test_skip_that_is_also_the_input() -> None:
    """``relu(h @ Wᵀ + b + h)``: the two gradients of ``h`` (through the product and the skip) add up."""
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(64, 16, generator=gen)
    weight, bias = 0.2 * torch.randn(16, 16, generator=gen), torch.randn(16, generator=gen)
    gy = torch.randn(64, 16, generator=gen)
    hs = h.clone().requires_grad_()
    (pw.linear_epilogue(hs, weight, bias, skip=hs, relu=True) * gy).sum().backward()
    h64 = h.double().requires_grad_()
    (torch.relu(h64 @ weight.double().t() + bias.double() + h64) * gy.double()).sum().backward()
    torch.testing.assert_close(hs.grad.double(), h64.grad, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        pw.linear_epilogue(torch.zeros(4, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="bias"):
        pw.linear_epilogue(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="skip"):
        pw.linear_epilogue(torch.zeros(4, 3), torch.zeros(5, 3), skip=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="float32 CPU"):
        pw.linear_epilogue(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64))
