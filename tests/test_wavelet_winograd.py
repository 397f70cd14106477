"""Winograd F(4×4, 3×3) convolutions of the Wavelet Flow coupling networks (visionflows.wavelet.winograd) against
direct float64 convolutions: values, input/weight/bias gradients, odd sizes and channel tails; the weight transform
and its adjoint; the no-grad path; the coupling network and a level against their direct-convolution paths."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from _require import needs_kernels
from visionflows import kernels
from visionflows.wavelet import winograd as wg
from visionflows.wavelet.level import WaveletLevel
from visionflows.wavelet.nets import CouplingNet


def _set_winograd(module: torch.nn.Module, on: bool) -> None:
    for m in module.modules():
        if isinstance(m, CouplingNet):
            m.winograd = on


@needs_kernels
def test_kernels_build() -> None:
    assert wg.available(), kernels.build_error("winograd")


def test_g_matrix_interpolates_the_points() -> None:
    """Row i of G evaluates a degree-2 polynomial at the points 0, 1, −1, 2, −2 (scaled by the Lagrange factors
    1/4, −1/6, −1/6, 1/24, 1/24) and the last row takes its leading coefficient (the point at infinity)."""
    points = [0, 1, -1, 2, -2]
    scale = []
    for p in points:
        den = Fraction(1)
        for q in points:
            if q != p:
                den *= p - q
        scale.append(1 / den)
    for i, (p, s) in enumerate(zip(points, scale)):
        expected = [float(s * p**k) for k in range(3)]
        assert wg.G_MATRIX[i].tolist() == pytest.approx(expected, abs=1e-15)
    assert wg.G_MATRIX[5].tolist() == [0.0, 0.0, 1.0]


@needs_kernels
@pytest.mark.parametrize("b, h, w, c, co", [(2, 16, 16, 128, 128), (3, 7, 9, 16, 10), (2, 5, 13, 20, 33),
                                            (1, 4, 4, 128, 10), (1, 1, 6, 17, 3), (2, 6, 10, 6, 24)])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_matches_direct_float64(b: int, h: int, w: int, c: int, co: int, relu: bool) -> None:
    gen = torch.Generator().manual_seed(b * 1000 + h * 10 + c)
    x = torch.randn(b, h, w, c, generator=gen)
    weight = 0.05 * torch.randn(co, c, 3, 3, generator=gen)
    bias = torch.randn(co, generator=gen)
    gy = torch.randn(b, h, w, co, generator=gen)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    y = wg.winograd_conv3x3(xs, ws, bs, relu=relu)
    (y * gy).sum().backward()

    x64, w64, b64 = (t.double().requires_grad_() for t in (x, weight, bias))
    pre = F.conv2d(x64.permute(0, 3, 1, 2), w64, b64, padding=1).permute(0, 2, 3, 1)
    # ReLU: take the mask from the Winograd output so that a pre-activation within rounding of 0 cannot flip it
    ref = torch.where(y.detach() > 0, pre, 0.0) if relu else pre
    (ref * gy.double()).sum().backward()
    scale = float(pre.detach().abs().max())
    assert (y.double() - ref).abs().max() <= 2e-5 * scale
    assert (xs.grad.double() - x64.grad).abs().max() <= 2e-5 * float(x64.grad.abs().max())
    assert (ws.grad.double() - w64.grad).abs().max() <= 2e-5 * float(w64.grad.abs().max())
    assert (bs.grad.double() - b64.grad).abs().max() <= 2e-5 * float(b64.grad.abs().max())


@needs_kernels
@pytest.mark.parametrize("co", [128, 10, 19])
def test_per_channel_weight_scale_matches_direct_float64(co: int) -> None:
    """``scale`` multiplies the weight per output channel inside the weight transform (a folded normalisation):
    values and the gradients of x, weight, scale and bias against a float64 convolution with ``weight · scale``."""
    gen = torch.Generator().manual_seed(co)
    x = torch.randn(2, 12, 8, 128, generator=gen)
    weight = 0.05 * torch.randn(co, 128, 3, 3, generator=gen)
    scale = torch.exp(0.5 * torch.randn(co, generator=gen))
    bias = torch.randn(co, generator=gen)
    gy = torch.randn(2, 12, 8, co, generator=gen)
    xs, ws, ss, bs = (t.clone().requires_grad_() for t in (x, weight, scale, bias))
    y = wg.winograd_conv3x3(xs, ws, bs, relu=True, scale=ss)
    (y * gy).sum().backward()
    x64, w64, s64, b64 = (t.double().requires_grad_() for t in (x, weight, scale, bias))
    pre = F.conv2d(x64.permute(0, 3, 1, 2), w64 * s64.view(-1, 1, 1, 1), b64, padding=1).permute(0, 2, 3, 1)
    ref = torch.where(y.detach() > 0, pre, 0.0)
    (ref * gy.double()).sum().backward()
    assert (y.double() - ref).abs().max() <= 2e-5 * float(pre.detach().abs().max())
    for got, want in ((xs.grad, x64.grad), (ws.grad, w64.grad), (ss.grad, s64.grad), (bs.grad, b64.grad)):
        assert got.is_contiguous() and got.shape == want.shape
        assert (got.double() - want).abs().max() <= 2e-5 * float(want.abs().max())
    # only some inputs need gradients: the others get none and the rest are unchanged
    xs2, ss2 = x.clone().requires_grad_(), scale.clone().requires_grad_()
    (wg.winograd_conv3x3(xs2, weight, bias, relu=True, scale=ss2) * gy).sum().backward()
    torch.testing.assert_close(xs2.grad, xs.grad, rtol=0, atol=0)
    torch.testing.assert_close(ss2.grad, ss.grad, rtol=0, atol=0)
    with pytest.raises(ValueError, match="scale"):
        wg.winograd_conv3x3(x, weight, bias, scale=torch.ones(co + 1))


@needs_kernels
def test_weight_transform_and_its_adjoint() -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(21, 18, 3, 3, generator=gen, requires_grad=True)
    u = wg.weight_transform(weight)
    g = wg.G_MATRIX
    ref = torch.einsum("ai,oqij,bj->abqo", g, weight.detach().double(), g).reshape(36, 18, 21)
    torch.testing.assert_close(u.double(), ref, rtol=1e-6, atol=1e-6)
    du = torch.randn(36, 18, 21, generator=gen)
    (grad,) = torch.autograd.grad(u, weight, du)
    # <U(w), dU> = <w, U*(dU)>: the backward kernel is the exact adjoint
    lhs = float((ref * du.double()).sum())
    rhs = float((weight.detach().double() * grad.double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


@needs_kernels
def test_no_grad_path_equals_autograd_path() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, 8, 32, generator=gen)
    weight = 0.1 * torch.randn(24, 32, 3, 3, generator=gen, requires_grad=True)
    bias = torch.randn(24, generator=gen)
    with torch.no_grad():
        a = wg.winograd_conv3x3(x, weight, bias, relu=True)
    b = wg.winograd_conv3x3(x, weight, bias, relu=True)
    assert b.requires_grad
    torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        wg.winograd_conv3x3(torch.zeros(1, 4, 4, 8), torch.zeros(8, 7, 3, 3))
    with pytest.raises(ValueError, match="float32 CPU"):
        wg.winograd_conv3x3(torch.zeros(1, 4, 4, 8, dtype=torch.float64), torch.zeros(8, 8, 3, 3))


def _trained_net(width: int = 32, seed: int = 0) -> tuple[CouplingNet, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    net = CouplingNet(7, 10, width, 2)
    x = torch.randn(6, 7, 12, 16, generator=gen)
    with torch.no_grad():
        net(x)  # DDI
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return net, x


@needs_kernels
def test_coupling_net_winograd_matches_direct() -> None:
    net, x = _trained_net()
    assert net._winograd_applies(x)
    outs, grads = [], []
    for on in (True, False):
        _set_winograd(net, on)
        xs = x.clone().requires_grad_()
        y = net(xs)
        params = list(net.parameters())
        g = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), [xs, *params])
        outs.append(y.detach())
        grads.append(g)
    scale = float(outs[1].abs().max())
    assert (outs[0] - outs[1]).abs().max() <= 1e-4 * scale
    # gradients agree in norm (a ReLU kink flipped by rounding moves single entries, not the whole gradient)
    for ga, gb in zip(*grads):
        assert float((ga - gb).norm()) <= 1e-3 * float(gb.norm()) + 1e-12


@needs_kernels
def test_level_winograd_matches_direct_and_inverts() -> None:
    torch.manual_seed(0)
    level = WaveletLevel(4, 4, channels=3, steps=2, width=32, res_blocks=2)
    gen = torch.Generator().manual_seed(3)
    data, cond = 0.1 * torch.randn(4, 9, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen) - 0.5
    with torch.no_grad():
        level.flow_log_prob(data, cond)  # DDI
        for m in level.modules():
            if isinstance(m, CouplingNet):
                m.out.conv.weight.normal_(0.0, 0.01, generator=gen)
    direct = copy.deepcopy(level)
    _set_winograd(direct, False)
    lp_w, lp_d = level.flow_log_prob(data, cond), direct.flow_log_prob(data, cond)
    torch.testing.assert_close(lp_w, lp_d, rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        z, _ = level.transform(data, cond)
        back, _ = level.transform.inverse(z, cond)
    torch.testing.assert_close(back, data, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_winograd_is_skipped_where_it_does_not_apply() -> None:
    net, x = _trained_net(width=16)
    assert not net._winograd_applies(x.double())
    assert not net._winograd_applies(x[:, :, :3, :3])
    fresh = CouplingNet(7, 10, 16, 1)
    assert not fresh._winograd_applies(x)  # ActNorms not initialised yet: the DDI batch runs the direct path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not net._winograd_applies(x)


def test_without_kernels_the_direct_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    net, x = _trained_net(width=16)
    _set_winograd(net, False)
    with torch.no_grad():
        direct = net(x)
    _set_winograd(net, True)
    monkeypatch.setattr(wg, "_lib", lambda: None)
    assert not wg.available() and not net._winograd_applies(x)
    with torch.no_grad():
        torch.testing.assert_close(net(x), direct, rtol=0, atol=0)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    u = wg.weight_transform(w)  # the two-matmul fallback
    assert u.shape == (36, 3, 4) and u.requires_grad


@needs_kernels
@pytest.mark.parametrize("c, co", [(24, 20), (24, 10), (6, 20)])  # wide; narrow output (transposed products)
def test_chunked_batches_match_one_chunk(monkeypatch: pytest.MonkeyPatch, c: int, co: int) -> None:
    """Batches larger than the scratch budget run chunk by chunk of images, with the same values and gradients."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 8, 12, c, generator=gen)
    weight = 0.1 * torch.randn(co, c, 3, 3, generator=gen)
    bias = torch.randn(co, generator=gen)
    gy = torch.randn(5, 8, 12, co, generator=gen)
    results = []
    for budget in (wg.CHUNK_VALUES, 36 * 6 * max(c, co) * 2):  # one chunk; two images per chunk (3 chunks)
        monkeypatch.setattr(wg, "CHUNK_VALUES", budget)
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
        y = wg.winograd_conv3x3(xs, ws, bs, relu=True)
        (y * gy).sum().backward()
        results.append((y.detach(), xs.grad, ws.grad, bs.grad))
    assert len(wg._chunks(5, 8, 12, max(c, co))) == 3
    for a, b in zip(*results):  # the weight gradient is summed in another order across chunks
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5 * float(b.abs().max()))
