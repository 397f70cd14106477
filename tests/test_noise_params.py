"""Noise models conditioned on measured noise parameters: per-channel NLF contexts, the parameter-conditioned Noise
Flow (``noiseflow_nlf``), cameras beyond the five SIDD phones, and the generalised heteroscedastic baseline."""

from __future__ import annotations

import pytest
import torch

import visionflows
from visionflows.errors import InputError
from visionflows.io import load_model, save_model
from visionflows.noise import CameraNLF, HeteroscedasticNoise, NoiseContext, NoiseFlow
from visionflows.noise.context import as_camera_tensor


def _ctx(b: int = 3, seed: int = 0, camera=(0, 1, 2)) -> tuple[torch.Tensor, NoiseContext, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(b, 4, 8, 8, generator=g) * 0.8 + 0.1
    k = torch.tensor([3e-4, 1e-4, 2e-4, 1e-4], dtype=torch.float64)[None] * torch.arange(1, b + 1)[:, None]
    nlf = torch.stack([k, k * 0.05], dim=-1)  # [B, 4, 2]
    var = (nlf[..., 0, None, None] * clean.double() + nlf[..., 1, None, None]).float()
    noise = torch.randn(b, 4, 8, 8, generator=g) * var.sqrt()
    ctx = NoiseContext.create(clean, 800, list(camera[:b]), noise=noise).with_nlf(nlf)
    return noise, ctx, nlf


def test_per_channel_nlf_context() -> None:
    _, ctx, nlf = _ctx()
    assert ctx.nlf.shape == (3, 4, 2) and torch.equal(ctx.nlf, nlf)
    assert ctx[1:].nlf.shape == (2, 4, 2)
    with pytest.raises(InputError, match=r"\[3, 4, 2\]"):
        ctx.with_nlf(torch.ones(3, 2, 2))
    with pytest.raises(InputError, match="finite"):
        ctx.with_nlf(-nlf)
    zero_b2 = nlf.clone()
    zero_b2[..., 1] = 0
    assert float(ctx.with_nlf(zero_b2).nlf[..., 1].min()) == 1e-6  # SIDD's rule for non-positive beta2


def test_camera_range_is_the_models() -> None:
    assert as_camera_tensor(7, 2, num_cameras=8).tolist() == [7, 7]
    assert as_camera_tensor([3, 40], 2, num_cameras=None).tolist() == [3, 40]
    with pytest.raises(InputError, match="0..5"):
        as_camera_tensor(6, 1, num_cameras=6)
    with pytest.raises(InputError, match="camera index 5"):
        as_camera_tensor(5, 1)  # the SIDD default: five phones
    six = NoiseFlow(num_cameras=6)
    noise, ctx, _ = _ctx(2)
    assert six.log_prob(noise, ctx.clean, 800, [5, 0]).shape == (2,)
    with pytest.raises(InputError, match="6 cameras"):
        six.log_prob(noise, NoiseContext.create(ctx.clean, 800, [7, 0], num_cameras=None))
    assert six.layer("sdn0").cam_params.shape == (3, 6)


def test_camera_nlf_per_channel() -> None:
    noise, ctx, nlf = _ctx()
    lp = CameraNLF().log_prob(noise, ctx)
    var = nlf[..., 0, None, None] * ctx.clean.double() + nlf[..., 1, None, None]
    ref = (-0.5 * (torch.log(2 * torch.pi * var) + noise.double() ** 2 / var)).sum((1, 2, 3))
    assert torch.allclose(lp.double(), ref, rtol=1e-5)
    far = NoiseContext.create(ctx.clean, 800, [9, 10, 11], num_cameras=None).with_nlf(nlf)
    assert torch.allclose(CameraNLF().log_prob(noise, far), lp)  # with measured parameters any camera works
    with pytest.raises(InputError, match="no entry for camera"):
        CameraNLF().log_prob(noise, NoiseContext.create(ctx.clean, 800, [9, 10, 11], num_cameras=None))


def test_nlf_flow_starts_as_the_measured_nlf_and_needs_it() -> None:
    noise, ctx, _ = _ctx()
    model = visionflows.create_model("noiseflow_nlf").eval()
    assert model.uses_measured_params and model.num_cameras is None and model.continuous_iso
    assert torch.allclose(model.log_prob(noise, ctx), CameraNLF().log_prob(noise, ctx), rtol=1e-4)
    unseen = NoiseContext.create(ctx.clean, 1234, [17, 300, 5], allowed_isos=None, num_cameras=None).with_nlf(ctx.nlf)
    assert torch.allclose(model.log_prob(noise, unseen), model.log_prob(noise, ctx))  # ISO, camera: unused
    with pytest.raises(InputError, match="measured noise parameters"):
        model.log_prob(noise, ctx.clean, 800, 0)
    sample = model.sample(ctx, generator=torch.Generator().manual_seed(0))
    assert sample.shape == noise.shape and 0.5 < float((sample / noise.std()).std()) < 2


def test_nlf_flow_learns_beyond_the_profile() -> None:
    noise, ctx, nlf = _ctx(3, seed=1)
    wrong = ctx.with_nlf(nlf * torch.tensor([3.0, 3.0], dtype=torch.float64))  # profile 3x too noisy
    model = visionflows.create_model("noiseflow_nlf")
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    start = float(-model.log_prob(noise, wrong).detach().mean())
    for _ in range(60):
        opt.zero_grad()
        loss = -model.log_prob(noise, wrong).mean()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < start - 0.3 * noise[0].numel()  # the learned correction absorbs the factor 3


def test_heteroscedastic_per_channel_any_isos(tmp_path) -> None:
    noise, ctx, nlf = _ctx(3)
    model = HeteroscedasticNoise(num_cameras=3, isos=(125, 800), per_channel=True)
    noise = torch.cat([noise] * 30)
    clean = torch.cat([ctx.clean] * 30)
    cams = torch.tensor([0, 1, 2] * 30)
    g = torch.Generator().manual_seed(3)
    var = nlf.repeat(30, 1, 1)
    noise = torch.randn(noise.shape, generator=g) * (var[..., 0, None, None] * clean + var[..., 1, None, None]).sqrt()
    model.fit(noise.float(), clean, 800, cams)
    fitted = model.log_beta1[:, 1].exp()
    assert torch.allclose(fitted, nlf[..., 0], rtol=0.15)
    assert model.log_prob(noise[:3], clean[:3], 800, cams[:3]).shape == (3,)
    with pytest.raises(InputError, match="no entry for camera"):
        model.log_prob(noise[:3], clean[:3], 125, cams[:3])
    with pytest.raises(InputError, match="ISO 400"):
        model.log_prob(noise[:3], clean[:3], 400, cams[:3])
    path = save_model(model.eval(), tmp_path / "h.safetensors")
    again = load_model(path)
    assert torch.equal(again.log_prob(noise[:3], clean[:3], 800, cams[:3]),
                       model.log_prob(noise[:3], clean[:3], 800, cams[:3]))
    assert HeteroscedasticNoise().model_config() == {}  # the paper's baseline files are unchanged
