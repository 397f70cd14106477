"""The native sRGB Noise Flow kernel (kernels/srgb.cpp, noise.srgb.fused) against the plain PyTorch path: latents,
samples and log-dets to float32 rounding for every arch token, norm and width on odd sizes; when it is not taken."""

from __future__ import annotations

import copy

import pytest
import torch

from _require import needs_kernels
from visionflows import kernels
from visionflows.denoise import ModelSource
from visionflows.noise.srgb import SRGBNoiseFlow
from visionflows.noise.srgb.fused import SRGBFlowTransform, fast_path_reason, kernel_library
from visionflows.noise.srgb.model import DEFAULT_ARCH, SDL_ARCH, SPATIAL_ARCH

CAMERAS, ISOS = ["d800", "ip", "s6"], [100, 800, 3200]


def _random_model(arch: str = DEFAULT_ARCH, norm: str = "batch", width: int = 4, seed: int = 0) -> SRGBNoiseFlow:
    """An evaluation-mode model away from its initialisation (every parameter and BatchNorm statistic matters)."""
    model = SRGBNoiseFlow(arch, width, CAMERAS, ISOS, noise_std=4.0, seed=seed, norm=norm)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


def _inputs(model: SRGBNoiseFlow, batch: int, h: int, w: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, h, w, generator=gen)
    noise = 3.0 * torch.randn(batch, 3, h, w, generator=gen)
    isos = [(100, 3200, None, 800, 6400)[i % 5] for i in range(batch)]  # known, unknown and out-of-vocabulary
    cams = [("d800", "s6", "ip", None, "nexus")[i % 5] for i in range(batch)]
    return noise, model.context(clean, isos, cams)


def _plain(model: SRGBNoiseFlow) -> SRGBNoiseFlow:
    ref = copy.deepcopy(model)
    ref.transform.use_kernels = False
    return ref


def _close(actual, expected, what, rtol=3e-6):
    assert actual.shape == expected.shape, what
    scale = max(float(expected.abs().max()), 1.0)
    err = float((actual - expected).abs().max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} for values up to {scale:.3g}"


@needs_kernels
def test_kernel_builds_and_the_model_uses_it():
    assert kernel_library() is not None, kernels.build_error("srgb")
    model = _random_model()
    assert isinstance(model.transform, SRGBFlowTransform)
    noise, ctx = _inputs(model, 2, 8, 8)
    with torch.no_grad():
        assert fast_path_reason(model.transform, noise, ctx) is None
        assert model.transform.fast_path(noise, ctx)


@needs_kernels
@pytest.mark.parametrize("arch,norm,width", [(DEFAULT_ARCH, "batch", 4), (SPATIAL_ARCH, "act", 4),
                                             (SDL_ARCH, "act", 8), (DEFAULT_ARCH, "none", 16),
                                             ("SDL|CL2|SPC|CAC", "batch", 4)])
@pytest.mark.parametrize("h,w", [(32, 32), (7, 19), (1, 1), (5, 33)])
def test_encode_and_decode_match_plain_path(arch, norm, width, h, w):
    model = _random_model(arch, norm, width)
    ref = _plain(model)
    noise, ctx = _inputs(model, 5, h, w)
    with torch.no_grad():
        z, ld = model.transform(noise, ctx)
        z0, ld0 = ref.transform(noise, ctx)
        _close(z, z0, "latent")
        _close(ld, ld0, "log-det", rtol=2e-6)
        # decode the latent of real-looking noise (random latents of a random flow blow up, in both paths alike)
        x, ldi = model.transform.inverse(z0, ctx)
        x0, ldi0 = ref.transform.inverse(z0, ctx)
        _close(x, x0, "decoded noise", rtol=1e-5)
        _close(ldi, ldi0, "inverse log-det", rtol=2e-6)
        _close(x, noise, "round trip", rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_sampling_and_log_prob_match_plain_path(threads):
    model = _random_model(SPATIAL_ARCH, "act")
    ref = _plain(model)
    noise, ctx = _inputs(model, 4, 16, 16)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        s = model.sample(ctx, generator=torch.Generator().manual_seed(3), temperature=0.7)
        s0 = ref.sample(ctx, generator=torch.Generator().manual_seed(3), temperature=0.7)
        with torch.no_grad():
            lp, lp0 = model.log_prob(noise, ctx), ref.log_prob(noise, ctx)
    finally:
        torch.set_num_threads(before)
    _close(s, s0, "samples", rtol=1e-5)
    _close(lp, lp0, "log p", rtol=2e-6)


@needs_kernels
def test_the_plain_path_runs_where_the_kernel_does_not_apply():
    model = _random_model(norm="act")
    noise, ctx = _inputs(model, 2, 8, 8)
    clean = ctx.clean.clone().requires_grad_(True)
    assert fast_path_reason(model.transform, noise, model.context(clean, 100, "d800")) == \
        "the context requires a gradient"
    with torch.no_grad():
        assert fast_path_reason(model.transform, noise.double(), ctx) is not None
        model.train()
        assert "training mode" in fast_path_reason(model.transform, noise, ctx)
        model.eval()
        model.transform.use_kernels = False
        assert fast_path_reason(model.transform, noise, ctx) == "use_kernels is False"
        model.transform.use_kernels = True
        odd = SRGBNoiseFlow(DEFAULT_ARCH, 6, CAMERAS, ISOS).eval()  # width without a kernel instantiation
        assert fast_path_reason(odd.transform, noise, odd.context(ctx.clean, 100, "d800")) == \
            "a layer without a kernel"
        assert torch.isfinite(odd.log_prob(noise, ctx.clean, 100, "d800")).all()


@needs_kernels
@pytest.mark.parametrize("inverse", [False, True])
def test_eval_with_autograd_same_values_and_plain_gradients(inverse):
    model = _random_model(SDL_ARCH, "act")
    ref = _plain(model)
    noise, ctx = _inputs(model, 3, 9, 10)
    with torch.no_grad():
        start = ref.transform(noise, ctx)[0] if inverse else noise  # a latent of real-looking noise to decode
        y_ng, ld_ng = (model.transform.inverse if inverse else model.transform)(start, ctx)
    outs = []
    for m in (model, ref):
        x = start.clone().requires_grad_(True)
        y, ld = (m.transform.inverse if inverse else m.transform)(x, ctx)
        (y.square().sum() + ld.sum()).backward()
        outs.append((y.detach(), ld.detach(), x.grad))
    (y, ld, gx), (y0, ld0, gx0) = outs
    assert torch.equal(y, y_ng) and torch.equal(ld, ld_ng)  # the kernel's values, with or without autograd
    _close(y, y0, "values")
    # the plain path's backward at the kernel's values: the output gradient (2y) differs by float32 rounding
    _close(gx, gx0, "input gradient", rtol=1e-4)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert p.grad is not None, name
        _close(p.grad, q.grad, name, rtol=1e-4)


@needs_kernels
def test_parameter_updates_invalidate_the_cached_plan():
    model = _random_model(SDL_ARCH, "act")
    noise, ctx = _inputs(model, 3, 8, 8)
    with torch.no_grad():
        model.transform(noise, ctx)
        model.transform[1].log_a.add_(0.3)  # SDL table
        model.transform[3].net.l_last.conv.bias.add_(0.5)  # a spatial coupling's bias map
        model.transform[6].net.l_1.bias.add_(0.1)  # a channel coupling's first convolution
        model.transform[2].bias.add_(0.2)  # CL2 table
        z, ld = model.transform(noise, ctx)
        z0, ld0 = _plain(model).transform(noise, ctx)
    _close(z, z0, "latent after in-place updates")
    _close(ld, ld0, "log-det after in-place updates", rtol=2e-6)


@needs_kernels
def test_denoiser_synthesis_takes_the_kernel():
    model = _random_model()
    source = ModelSource(model, "srgb", 1.0)
    gen = torch.Generator().manual_seed(0)
    clean_u8 = torch.randint(0, 256, (4, 3, 12, 12), generator=gen, dtype=torch.uint8)
    batch = {"clean": clean_u8.float() / 255, "clean_u8": clean_u8, "iso": torch.tensor([100, 800, 3200, 100]),
             "camera": ["d800", "ip", "s6", "d800"]}
    noisy = source.noisy(batch, torch.Generator().manual_seed(1))
    ref = ModelSource(_plain(model), "srgb", 1.0).noisy(batch, torch.Generator().manual_seed(1))
    assert noisy.shape == (4, 3, 12, 12)
    # quantised to 8 bits: a float32 rounding difference flips at most a rare value by one level
    assert float((noisy - ref).abs().max()) <= 1 / 255 + 1e-6
    assert float((noisy != ref).float().mean()) < 1e-3
