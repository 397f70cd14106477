"""Annealed MCMC sampling of Wavelet Flow levels (doc §8): exact checks on affine levels, nonlinear levels, API."""

from __future__ import annotations

import math

import pytest
import torch

from _require import require_module
from visionflows.errors import ConfigError, InputError
from visionflows.flows import AffineCoupling
from visionflows.wavelet import WaveletLevel, create_model
from visionflows.wavelet.anneal import AnnealConfig, as_anneal_config

QUIET = {"progress": False}


def _affine_level(seed: int = 0) -> WaveletLevel:
    """Level 1 (1×1×9 details given 1×1×3) whose couplings are the identity (zero-initialised outputs) but whose
    ActNorms and 1×1 convs are random: an affine map ``x = A ε + b`` with a non-diagonal ``A``."""
    torch.manual_seed(seed)
    lv = WaveletLevel(1, 3, 3, steps=2, width=8, res_blocks=1).eval()
    with torch.no_grad():
        for name, p in lv.named_parameters():
            if ".net." not in name and name.endswith((".loc", ".log_scale")):
                p.normal_(0.0, 0.15)
    return lv


def _nonlinear_level(seed: int = 0) -> WaveletLevel:
    """Level 2 (2×2×9 given 2×2×3) with random coupling outputs: scale and shift depend on the input."""
    torch.manual_seed(seed)
    lv = WaveletLevel(2, 3, 3, steps=3, width=16, res_blocks=1)
    data, cond = lv.example_inputs(64)
    lv.train()
    lv.flow_log_prob(data, cond)  # DDI
    lv.eval()
    with torch.no_grad():
        for name, p in lv.named_parameters():
            if name.endswith(("net.out.weight", "net.out.bias")):
                p.normal_(0.0, 0.3)
    assert sum(isinstance(m, AffineCoupling) for m in lv.modules()) == 3
    return lv


@pytest.mark.slow
def test_affine_level_annealed_std_is_temperature_times_sigma():
    """π ∝ p^γ of a Gaussian N(b, AAᵀ) is N(b, T²·AAᵀ): per-dimension std T·σ_d with σ_d = sqrt((AAᵀ)_dd).

    4000 chains started at T0 = 1 (not at the target), 40 iterations; the sample std of 4000 draws has relative
    error ≈ 1/sqrt(2·4000) = 1.1 %, so the 5 % tolerance is 4.5 standard errors per dimension (fixed seed)."""
    lv = _affine_level()
    cond = torch.rand(1, 3, 1, 1, generator=torch.Generator().manual_seed(3)) - 0.5
    f = lv.latent_map(cond)
    jac = torch.autograd.functional.jacobian(lambda e: f(e.view(1, 9, 1, 1))[0].flatten(), torch.zeros(9))
    sigma = jac.pow(2).sum(1).sqrt()
    mean = f(torch.zeros(1, 9, 1, 1))[0].flatten().detach()
    assert not torch.allclose(jac, torch.diag(torch.diagonal(jac)), atol=1e-3)  # a real mixing of dimensions
    n, temp = 4000, 0.6
    cfg = AnnealConfig(init_temperature=1.0, **QUIET)
    x = lv.sample(cond.expand(n, 3, 1, 1), temperature=temp, generator=torch.Generator().manual_seed(1), anneal=cfg)
    x = x.flatten(1).double()
    ratio = x.std(0) / (temp * sigma.double())
    assert ratio.sub(1).abs().max() < 0.05, ratio
    assert ((x.mean(0) - mean.double()).abs() / (temp * sigma.double())).max() < 0.1
    stats = lv.last_anneal_stats
    assert 0.3 < stats.accept_rate < 0.95 and stats.never_accepted == 0 and stats.chains == n and stats.dims == 9
    # direct sampling at T = 1 has std σ (the Jacobian is the right reference)
    x1 = lv.sample(cond.expand(n, 3, 1, 1), temperature=1.0, generator=torch.Generator().manual_seed(2))
    assert (x1.flatten(1).std(0) / sigma).sub(1).abs().max() < 0.05


def test_nonlinear_level_annealed_beats_direct_in_mean_log_p_gamma():
    lv = _nonlinear_level()
    n, temp = 256, 0.7
    gamma = 1.0 / temp**2
    cond = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(5)) - 0.5
    direct = lv.sample(cond, temperature=temp, generator=torch.Generator().manual_seed(0))
    annealed = lv.sample(cond, temperature=temp, generator=torch.Generator().manual_seed(0),
                         anneal=AnnealConfig(**QUIET))
    with torch.no_grad():
        lp_direct = gamma * lv.flow_log_prob(direct, cond)
        lp_annealed = gamma * lv.flow_log_prob(annealed, cond)
    # the log-det really varies (a nonlinear level), so the two samplers target different distributions
    with torch.no_grad():
        _, ld = lv.latent_map(cond)(torch.randn(n, 9, 2, 2, generator=torch.Generator().manual_seed(9)))
    assert float(ld.std()) > 0.5
    diff = float(lp_annealed.mean() - lp_direct.mean())
    se = math.sqrt(float(lp_annealed.var() + lp_direct.var()) / n)
    assert diff > 4 * se, (diff, se)


def test_nothing_accepted_keeps_the_initial_state_which_is_the_direct_sample():
    lv = _nonlinear_level(1)
    cond = torch.rand(8, 3, 2, 2) - 0.5
    cfg = AnnealConfig(num_adaptation=0, step_size=1e6, leapfrog_steps=1, num_results=3, jitter=0.0, **QUIET)
    out = lv.sample(cond, temperature=0.8, generator=torch.Generator().manual_seed(4), anneal=cfg)
    direct = lv.sample(cond, temperature=0.8, generator=torch.Generator().manual_seed(4))
    stats = lv.last_anneal_stats
    assert stats.never_accepted == 8 and stats.accepted == 0.0 and stats.accept_rate == 0.0
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, direct)


@pytest.mark.parametrize("method", ["hmc", "mala"])
def test_full_model_annealed_sampling_is_deterministic_and_reports(method):
    model = create_model("tiny_8").eval()
    cfg = AnnealConfig(method=method, num_results=6, num_adaptation=3, leapfrog_steps=3, **QUIET)
    a = model.sample(3, temperature=0.9, generator=torch.Generator().manual_seed(0), anneal=cfg)
    stats = model.last_anneal_stats
    b = model.sample(3, temperature=0.9, generator=torch.Generator().manual_seed(0), anneal=cfg)
    c = model.sample(3, temperature=0.9, generator=torch.Generator().manual_seed(1), anneal=cfg)
    assert a.shape == (3, 3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert [s.level for s in stats.levels] == list(range(model.n_levels + 1))
    assert stats.gamma == pytest.approx(1 / 0.81) and stats.images == 3
    assert all(0.0 <= s.accept_rate <= 1.0 and s.step_size > 0 for s in stats.levels)
    assert "acceptance" in stats.summary() and stats.to_dict()["levels"][0]["level"] == 0
    if method == "mala":
        assert all(s.grad_evals == 1 + 6 for s in stats.levels)
    # super-resolution with annealing: the detail levels above the input only
    low = torch.randint(0, 256, (2, 3, 2, 2), dtype=torch.uint8)
    sr = model.super_resolve(low, 4, 0.9, 2, torch.Generator().manual_seed(0), anneal=cfg)
    assert sr.shape == (2, 2, 3, 8, 8)
    assert [s.level for s in model.last_anneal_stats.levels] == [2, 3]


@pytest.mark.slow
def test_official_nuts_settings_run_through_pyro():
    require_module("pyro", "test")
    cfg = AnnealConfig.official(num_results=4, num_adaptation=2, max_tree_depth=3, progress=False)
    assert (cfg.method, cfg.step_size, cfg.target_accept) == ("nuts", 0.01, 0.6)
    assert AnnealConfig.official().num_results == 40 and AnnealConfig.official().max_tree_depth == 10
    lv = _nonlinear_level(2)
    cond = torch.rand(2, 3, 2, 2) - 0.5
    a = lv.sample(cond, temperature=0.9, generator=torch.Generator().manual_seed(0), anneal=cfg)
    st = lv.last_anneal_stats
    b = lv.sample(cond, temperature=0.9, generator=torch.Generator().manual_seed(0), anneal=cfg)
    assert torch.equal(a, b) and a.shape == (2, 9, 2, 2) and torch.isfinite(a).all()
    assert st.method == "nuts" and st.chains == 2 and 0.0 <= st.accept_rate <= 1.0 and st.grad_evals >= 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_results": 0}, "num_results"),
        ({"leapfrog_steps": 0}, "leapfrog_steps"),
        ({"num_adaptation": 40}, "num_adaptation"),
        ({"target_accept": 1.0}, "target_accept"),
        ({"step_size": float("nan")}, "step_size"),
        ({"step_size": 0.0}, "step_size"),
        ({"method": "gibbs"}, "method"),
        ({"init_temperature": -1.0}, "temperature"),
    ],
)
def test_bad_anneal_settings_are_one_clear_error(kwargs, match):
    with pytest.raises((ConfigError, InputError), match=match) as err:
        AnnealConfig(**kwargs)
    assert err.value.fix


@pytest.mark.parametrize("temp", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_annealing_temperature(temp):
    model = create_model("tiny_8").eval()
    with pytest.raises(InputError, match="temperature") as err:
        model.sample(2, temperature=temp, anneal=AnnealConfig(**QUIET))
    assert "Fix:" in str(err.value)


def test_as_anneal_config():
    assert as_anneal_config(None) is None and as_anneal_config(False) is None
    assert as_anneal_config(True) == AnnealConfig()
    assert as_anneal_config("official").method == "nuts"
    assert as_anneal_config({"method": "mala"}).method == "mala"
    with pytest.raises(ConfigError):
        as_anneal_config({"steps": 3})
