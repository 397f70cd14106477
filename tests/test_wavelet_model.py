"""Wavelet Flow model: Haar bookkeeping, closed-form bpd, per-level sums, parameter counts, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from visionflows.errors import ConfigError, InputError
from visionflows.wavelet import (
    WaveletFlow,
    WaveletLevel,
    create_model,
    get_preset,
    level_param_count,
    list_models,
)


def _imgs(b: int, c: int, r: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, r, r), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("res,expected", [(32, 9.658756), (64, 9.659000)])
def test_closed_form_identity_flows_on_zero_image(res, expected):
    # identity flows (K = 0, prior ActNorm at identity) and a constant zero image without noise (doc §2)
    model = WaveletFlow(res, channels=3, steps=0, widths=8)
    x = torch.zeros(1, 3, res, res)
    with torch.no_grad():
        lp = model.level_log_probs_continuous(x)
    bpd = float(-lp.sum() / (model.num_dims * math.log(2)) + 8)
    assert abs(bpd - expected) < 5e-7
    n = model.n_levels
    dims = model.level_dims()
    for lv in range(n + 1):  # per-level train bpd = ½log2(2π) + (n−L) + 8
        train_bpd = float(-lp[0, lv] / (dims[lv] * math.log(2)) + 8)
        assert abs(train_bpd - (0.5 * math.log2(2 * math.pi) + (n - lv) + 8)) < 1e-5


def test_haar_terms_sum_to_the_dense_haar_logdet():
    # Σ_L dim_L·(n−L)·ln ½ equals log|det| of the dense Jacobian of x → (I_0, D_0, …, D_{n−1}) (doc §2: −43.668)
    for c in (1, 3):
        model = WaveletFlow(8, channels=c, steps=0, widths=4).double()
        total = sum(model.levels[lv].haar_logdet(d) for lv, d in enumerate(model.level_dims()))
        pyr = model.pyramid()
        x = torch.randn(1, c, 8, 8, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v, p=pyr, s=x.shape: p(v.view(s))[0].reshape(-1), x.reshape(-1))
        dense = float(torch.linalg.slogdet(jac)[1])
        assert abs(total - dense) < 1e-9
        assert abs(float(pyr(x)[1].detach()) - dense) < 1e-9
        assert sum(model.level_dims()) == c * 64
        if c == 3:
            assert abs(dense - (-43.668)) < 1e-3


def test_full_pass_equals_sum_of_independent_levels():
    torch.manual_seed(0)
    model = create_model("tiny_8")
    imgs = _imgs(6, 3, 8)
    model.train()
    model.log_prob(imgs, torch.Generator().manual_seed(9))  # DDI
    model.eval()
    with torch.no_grad():
        out = model.bits_per_dim(imgs, torch.Generator().manual_seed(3))
        full = model.log_prob(imgs, torch.Generator().manual_seed(3))
        per = sum(lv.log_prob_level(imgs, torch.Generator().manual_seed(3)) for lv in model.levels)
    n = model.num_dims * math.log(2)
    assert float((full - per).abs().max() / n) < 1e-4
    assert torch.allclose(out["levels"].sum(1), out["total"], atol=1e-5)
    assert torch.allclose(out["total"], -full / n + 8, atol=1e-4)
    # per-level train bpd carries the (n − L) + 8 offset: contribution·N/dim
    for lv, level in enumerate(model.levels):
        with torch.no_grad():
            b = level.bits_per_dim_level(imgs, torch.Generator().manual_seed(3))
        dim = model.level_dims()[lv]
        assert torch.allclose(b * dim / model.num_dims, out["levels"][:, lv], atol=1e-4)


def test_parameter_counts_match_reference():
    assert level_param_count(1, 3, 8, 128) == 4_046_794  # 4.05 M (doc §3)
    assert sum(p.numel() for p in WaveletLevel(1, 5, 3, 8, 128).parameters()) == 4_046_794
    assert sum(p.numel() for p in WaveletLevel(0, 5, 3, 8, 128).parameters()) == level_param_count(0, 3, 8, 128)
    assert round(level_param_count(0, 3, 8, 128) / 1e6, 2) == 3.98
    assert round(level_param_count(3, 3, 16, 128) / 1e6, 2) == 8.09
    assert round(level_param_count(3, 3, 16, 256) / 1e6, 2) == 31.91
    assert round(level_param_count(3, 3, 16, 64) / 1e6, 2) == 2.08
    for name in ("imagenet_32", "imagenet_64", "lsun_bedroom_64", "celeba_1024", "ffhq_1024"):
        p = get_preset(name)
        assert round(p.param_count() / 1e6, 1) == p.reference_params_m
    m = create_model("cpu_32")
    assert sum(p.numel() for p in m.parameters()) == get_preset("cpu_32").param_count()


def test_presets_registry():
    names = list_models()
    for n in ("imagenet_32", "imagenet_64", "lsun_bedroom_64", "lsun_tower_64", "lsun_church_64", "celeba_1024",
              "ffhq_1024", "cpu_32", "cpu_64"):
        assert n in names
    p = get_preset("imagenet_64")
    assert p.steps == (8, 8, 16, 16, 16, 16, 16) and p.crops == (1, 1, 1, 1, 1, 2, 2) and p.res_blocks == 3
    m = create_model("tiny_8", channels=1)
    assert (m.resolution, m.channels, m.n_levels, m.kind) == (8, 1, 3, "waveletflow")
    with pytest.raises(ConfigError):
        create_model("nope")
    with pytest.raises(ConfigError):
        create_model("tiny_8", depth=3)


def test_greyscale_level0_is_a_learned_gaussian_and_works():
    from visionflows.flows import DiagonalGaussian

    m = create_model("tiny_8", channels=1)
    assert isinstance(m.levels[0].prior, DiagonalGaussian) and len(m.levels[0].transform) == 0
    imgs = _imgs(4, 1, 8)
    out = m.bits_per_dim(imgs, torch.Generator().manual_seed(0))
    assert out["levels"].shape == (4, 4) and torch.isfinite(out["total"]).all()
    s = m.sample_pyramid(2, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert [t.shape[-1] for t in s] == [1, 2, 4, 8] and s[-1].shape[1] == 1


def test_bad_inputs_raise_input_errors():
    m = create_model("tiny_8")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(InputError, match="power of two"):
        WaveletFlow(12)
    with pytest.raises(InputError, match="channel"):
        m.log_prob(_imgs(2, 1, 8), g)
    with pytest.raises(InputError, match="square"):
        m.log_prob(torch.zeros(2, 3, 8, 4, dtype=torch.uint8), g)
    with pytest.raises(InputError, match="resolution"):
        m.log_prob(_imgs(2, 3, 16), g)
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        m.log_prob(torch.rand(2, 3, 8, 8) - 0.5, g)
    with pytest.raises(InputError, match="power of two"):
        m.super_resolve(_imgs(1, 3, 3), 2)


def test_sampling_temperature_zero_is_deterministic_and_superres_shapes():
    m = create_model("tiny_8")
    m.train()
    m.log_prob(_imgs(8, 3, 8), torch.Generator().manual_seed(0))
    m.eval()
    full = m.sample(3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    a = m.sample_pyramid(3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(full, a[-1])  # the contract's sample is the pyramid's finest level
    b = m.sample_pyramid(3, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [t.shape for t in a] == [(3, 3, 2**k, 2**k) for k in range(4)]
    assert float(a[-1].min()) >= 0 and float(a[-1].max()) <= 255
    low = _imgs(2, 3, 2)
    sr = m.super_resolve(low, 4, temperature=0.7, n_samples=3, generator=torch.Generator().manual_seed(0))
    assert sr.shape == (2, 3, 3, 8, 8)
    # each coarse-to-fine step keeps the block mean: avg_pool(I_L) == I_{L−1} (before conversion to pixels)
    i_prev = torch.rand(2, 3, 2, 2) - 0.5
    i_next = m.levels[2].sample_next(i_prev, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.nn.functional.avg_pool2d(i_next, 2), i_prev, atol=1e-6)


def test_pyramid_round_trip_and_logdet_matches_density():
    m = create_model("tiny_8")
    imgs = _imgs(4, 3, 8)
    m.train()
    m.log_prob(imgs, torch.Generator().manual_seed(0))
    m.eval()
    x = m.dequantize(imgs, torch.Generator().manual_seed(5))
    with torch.no_grad():
        z, ld = m.pyramid()(x)
        xb, _ = m.pyramid().inverse(z)
        prior = sum(
            m.levels[lv].prior.log_prob(zl)
            for lv, zl in enumerate(z.split(m.level_dims(), dim=1))
        )
        lp = m.level_log_probs_continuous(x).sum(1)
    assert (xb - x).abs().max() < 1e-5
    assert torch.allclose(prior + ld, lp, atol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    from visionflows.io import save_model
    from visionflows.wavelet.train import load_wavelet

    m = create_model("tiny_8")
    m.train()
    m.log_prob(_imgs(8, 3, 8), torch.Generator().manual_seed(0))
    m.eval()
    save_model(m, tmp_path / "m.safetensors")
    m2 = load_wavelet(tmp_path / "m.safetensors")
    imgs = _imgs(2, 3, 8, seed=3)
    with torch.no_grad():
        a = m.log_prob(imgs, torch.Generator().manual_seed(1))
        b = m2.log_prob(imgs, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
