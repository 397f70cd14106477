"""Noise Flow model API, presets, context validation, baselines and model files."""

from __future__ import annotations

import math

import pytest
import torch

from visionflows.cameras import NLF_TABLE
from visionflows.errors import ConfigError, InputError
from visionflows.io import load_model, save_model
from visionflows.noise import NoiseContext, NoiseFlow, create_model, list_models
from visionflows.noise.baselines import CameraNLF, GaussianNoise, HeteroscedasticNoise
from visionflows.noise.model import PRESETS


def _batch(b=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(b, 4, size, size, generator=g) * 0.8 + 0.1
    noise = torch.randn(b, 4, size, size, generator=g) * 0.02
    return noise, clean


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_parameter_counts(name):
    model = create_model(name)
    assert model.num_parameters(official=True) == PRESETS[name][2]
    assert model.arch == PRESETS[name][0]


def test_list_and_unknown_preset():
    assert list_models()[0] == "noiseflow" and len(list_models()) == 5
    with pytest.raises(ConfigError, match="unknown Noise Flow preset"):
        create_model("nope")
    with pytest.raises(ConfigError, match="invalid Noise Flow arch"):
        NoiseFlow(arch="sdn5|foo")


def test_api_shapes_roundtrip_and_sampling():
    model = create_model("noiseflow").eval()
    noise, clean = _batch()
    lp = model.log_prob(noise, clean, 800, "S6")
    assert lp.shape == (3,) and torch.isfinite(lp).all()
    z, ld = model.encode(noise, clean, [100, 400, 800], ["IP", "GP", 2])
    assert torch.allclose(model.decode(z, clean, [100, 400, 800], ["IP", "GP", 2]), noise, atol=1e-6)
    s1 = model.sample(clean, 1600, "N6", generator=torch.Generator().manual_seed(1))
    s2 = model.sample(clean, 1600, "N6", generator=torch.Generator().manual_seed(1))
    assert s1.shape == clean.shape and torch.equal(s1, s2)
    s0 = model.sample(clean, 1600, "N6", temperature=0.0)
    assert s0.abs().max() < 1e-6
    # one patch without batch dimension
    assert model.log_prob(noise[0], clean[0], 100, "G4").shape == (1,)
    # per-sample conditioning equals per-batch conditioning in eval mode
    lp_each = torch.cat([model.log_prob(noise[i : i + 1], clean[i : i + 1], 800, "S6") for i in range(3)])
    assert torch.allclose(lp, lp_each, atol=1e-3)


def test_context_validation_errors():
    model = create_model("noiseflow_s_g_cam")
    noise, clean = _batch()
    with pytest.raises(InputError, match="ISO 250"):
        model.log_prob(noise, clean, 250, "S6")
    with pytest.raises(InputError, match="Unknown camera 'XX'"):
        model.log_prob(noise, clean, 100, "XX")
    with pytest.raises(InputError, match="camera index 7"):
        model.log_prob(noise, clean, 100, 7)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        model.log_prob(noise, clean * 2, 100, "S6")
    bad = clean.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        model.log_prob(noise, bad, 100, "S6")
    with pytest.raises(InputError, match="does not match"):
        model.log_prob(noise[:, :, :4], clean, 100, "S6")
    with pytest.raises(InputError, match="length 3"):
        model.log_prob(noise, clean, [100, 400], "S6")
    with pytest.raises(InputError, match="needs a NoiseContext"):
        model.transform(noise, None)


def test_continuous_iso_interpolates_in_log_iso():
    model = NoiseFlow(arch="sdn5|gain4", continuous_iso=True).eval()
    sdn = model.layer("sdn0")
    with torch.no_grad():
        sdn.gain_params.copy_(torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0]))
    iso = torch.tensor([100, 200, 400, 50, 6400])
    g = sdn._gain_param(iso)
    w = math.log(2) / math.log(4)
    assert torch.allclose(g, torch.tensor([-1.0, -1.0 - w, -2.0, -1.0, -5.0]))
    noise, clean = _batch(5)
    assert torch.isfinite(model.log_prob(noise, clean, iso, "S6")).all()


def test_training_mode_gradients_and_save_load(tmp_path):
    model = create_model("noiseflow_s_ax1_g_ax1").double()
    noise, clean = (t.double() for t in _batch())

    def loss():
        return -model.log_prob(noise, clean, 800, "IP").mean()

    loss().backward()
    # backprop through the signal-dependent and gain layers equals central differences (float64)
    for layer, attr in (("sdn0", "beta1"), ("sdn0", "beta2"), ("gain2", "gain_val")):
        p, name = getattr(model.layer(layer), attr), f"{layer}.{attr}"
        h = 1e-6 * max(1.0, float(p.detach().abs()))
        with torch.no_grad():
            p0 = p.detach().clone()
            p.copy_(p0 + h)
            up = float(loss())
            p.copy_(p0 - h)
            down = float(loss())
            p.copy_(p0)
        assert float(p.grad) != 0.0 and math.isclose(float(p.grad), (up - down) / (2 * h), rel_tol=1e-4), name
    model = model.float()
    noise, clean = noise.float(), clean.float()
    model.eval()
    path = save_model(model, tmp_path / "nf.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, NoiseFlow) and loaded.arch == model.arch
    assert torch.equal(loaded.log_prob(noise, clean, 800, "IP"), model.log_prob(noise, clean, 800, "IP"))


def test_context_object_passthrough():
    noise, clean = _batch()
    ctx = NoiseContext.create(clean, 100, "S6")
    assert ctx.batch_size == 3 and ctx.to(torch.float64).clean.dtype == torch.float64
    model = create_model("noiseflow_s_g").eval()
    assert torch.allclose(model.log_prob(noise, ctx), model.log_prob(noise, clean, 100, 2))


def test_gaussian_baseline_fit_and_nll(tmp_path):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(20, 4, 8, 8, generator=g) * 0.03
    m = GaussianNoise().fit(train)
    assert abs(float(m.variance) - float(train.double().var())) < 1e-12
    noise, clean = _batch()
    v = float(m.variance)
    expect = 0.5 * (math.log(2 * math.pi) + math.log(v) + noise.double() ** 2 / v)
    assert torch.allclose(m.nll_per_dim(noise, clean, 123, "S6").double(), expect.mean((1, 2, 3)), atol=1e-5)
    loaded = load_model(save_model(m, tmp_path / "g.safetensors"))
    assert float(loaded.variance) == float(m.variance)


def test_camera_nlf_baseline():
    m = CameraNLF()
    noise, clean = _batch()
    b1, b2 = NLF_TABLE[("S6", 800)]
    var = b1 * clean.double() + b2
    expect = 0.5 * (math.log(2 * math.pi) + torch.log(var) + noise.double() ** 2 / var).mean((1, 2, 3))
    assert torch.allclose(m.nll_per_dim(noise, clean, 800, "S6").double(), expect, atol=1e-5)
    per_sample = m.nll_per_dim(noise, clean, 800, "S6", nlf=(torch.full((3,), b1), torch.full((3,), b2)))
    assert torch.allclose(per_sample.double(), expect, atol=1e-5)
    with pytest.raises(InputError, match="G4 at ISO 1600"):
        m.log_prob(noise, clean, 1600, "G4")
    flat = torch.full((64, 4, 16, 16), 0.4)
    s = m.sample(flat, 800, "S6", generator=torch.Generator().manual_seed(0))
    var = b1 * 0.4 + b2
    assert s.shape == flat.shape  # 65536 draws: the variance is the NLF's to ~1 %, the mean 0 to ~0.4 % of a sigma
    assert abs(float(s.var()) / var - 1) < 0.03 and abs(float(s.mean())) < 0.02 * math.sqrt(var)


def test_heteroscedastic_fit_recovers_nlf(tmp_path):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(40, 4, 16, 16, generator=g)
    b1, b2 = 2e-3, 4e-5
    noise = torch.randn(clean.shape, generator=g) * torch.sqrt(b1 * clean + b2)
    m = HeteroscedasticNoise().fit(noise, clean, 800, "GP", steps=200)
    got1, got2 = float(m.log_beta1[1, 2].detach().exp()), float(m.log_beta2[1, 2].detach().exp())
    assert abs(got1 / b1 - 1) < 0.05 and abs(got2 / b2 - 1) < 0.15
    with pytest.raises(InputError, match="IP at ISO 100"):
        m.log_prob(noise[:1], clean[:1], 100, "IP")
    loaded = load_model(save_model(m, tmp_path / "h.safetensors"))
    assert torch.allclose(loaded.log_prob(noise[:2], clean[:2], 800, "GP"), m.log_prob(noise[:2], clean[:2], 800, "GP"))
