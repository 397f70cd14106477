"""Sensor physics beyond Poisson-Gaussian: each effect does what its documentation says, is off when switched off,
and the simulator's exact density stays normalised where it is tractable."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from visionflows.cameras.physics import (
    EFFECTS,
    HOT_PIXEL_FRACTION,
    POISSON_GAUSSIAN,
    SIDD_PHYSICS,
    SensorParams,
    SensorPhysics,
    physics_from_names,
    tukey_quantile,
    tukey_variance,
)
from visionflows.data.sensor import SensorSimulator
from visionflows.errors import ConfigError, InputError
from visionflows.noise.simulator_density import sensor_log_prob

# a 12-bit camera with per-channel parameters: read std 8 DN, tiny shot noise so dark frames show read noise
PARAMS = SensorParams("test", 800, (1e-6, 2e-6, 2e-6, 3e-6), ((8 / 4000) ** 2,) * 4, 95, 4095, (7, 7))
SD = 8 / 4000


def _dark(physics: SensorPhysics, n: int = 8, level: float = 0.2, seed: int = 0) -> np.ndarray:
    clean = np.full((n, 4, 64, 64), level)
    return SensorSimulator(PARAMS, physics).simulate(clean, np.random.default_rng(seed)).astype(np.float64) - clean


def test_tukey_lambda_distribution() -> None:
    u = np.random.default_rng(0).random(400_000)
    for lam in (-0.1, 0.0, 0.14):
        x = tukey_quantile(u, lam)
        assert x.var() == pytest.approx(tukey_variance(lam), rel=0.03)
    assert tukey_variance(0.14) == pytest.approx(tukey_variance(0.1401), rel=1e-3)  # smooth in λ


def test_tukey_read_noise_keeps_the_variance_and_adds_tails() -> None:
    g = _dark(POISSON_GAUSSIAN)
    t = _dark(EFFECTS["tukey"])
    assert t.var() == pytest.approx(g.var(), rel=0.03)
    assert stats.kurtosis(t.ravel()) > stats.kurtosis(g.ravel()) + 1.0  # heavy tails (λ = -0.1: excess ≈ 2)


def test_row_noise_is_shared_by_a_sensor_row() -> None:
    n = _dark(EFFECTS["row"], n=16)
    # packed column j of channels 0 and 3 is one sensor row: its mean keeps the row value's variance
    row_means = n[:, (0, 3), :, :].mean(axis=(1, 2))  # [16, 64] one per sensor row
    expected = (0.16 * SD) ** 2 + SD**2 / (2 * 64)
    assert row_means.var() == pytest.approx(expected, rel=0.25)
    assert _dark(POISSON_GAUSSIAN, n=16)[:, (0, 3)].mean(axis=(1, 2)).var() < 0.3 * expected


def test_fixed_pattern_noise_repeats_across_frames() -> None:
    a, b = _dark(EFFECTS["fpn"], n=8, seed=1, level=0.0), _dark(EFFECTS["fpn"], n=8, seed=2, level=0.0)
    hot = a.mean(0) > 5 * SD  # mean of 8 dark frames: noise std 0.37·σ_read, smallest hot offset 10·σ_read
    assert abs(hot.mean() - HOT_PIXEL_FRACTION) < 0.3 * HOT_PIXEL_FRACTION
    assert np.array_equal(hot, b.mean(0) > 5 * SD)  # the same pixels, every frame
    cold = ~hot
    r = np.corrcoef(a[0][cold], b[0][cold])[0, 1]  # DSNU: a fixed offset map of 0.3·σ_read → r ≈ 0.08
    assert 0.05 < r < 0.12
    ga, gb = _dark(POISSON_GAUSSIAN, n=2, seed=1), _dark(POISSON_GAUSSIAN, n=2, seed=2)
    assert abs(np.corrcoef(ga.ravel(), gb.ravel())[0, 1]) < 0.01


def test_quantisation_black_offset_and_clipping() -> None:
    q = _dark(EFFECTS["quantise"], level=0.2)
    levels = (q + 0.2) * PARAMS.levels
    assert np.allclose(levels, np.rint(levels), atol=1e-3)
    cont = (_dark(POISSON_GAUSSIAN) + 0.2) * PARAMS.levels
    assert np.abs(cont - np.rint(cont)).mean() > 0.2  # continuous without quantisation
    off = _dark(EFFECTS["black-offset"]).mean(axis=(0, 2, 3))
    assert np.allclose(np.abs(off), 0.5 * SD, rtol=0.05)  # a fixed ±0.5·σ_read per channel
    assert np.abs(_dark(POISSON_GAUSSIAN).mean(axis=(0, 2, 3))).max() < 0.05 * SD
    dark = _dark(EFFECTS["clip"], level=0.0005)
    assert (dark + 0.0005).min() == 0.0 and ((dark + 0.0005) == 0).mean() > 0.3
    assert (_dark(POISSON_GAUSSIAN, level=0.0005) + 0.0005).min() < 0


def test_physics_names_and_validation() -> None:
    assert physics_from_names("poisson-gaussian") == POISSON_GAUSSIAN
    assert physics_from_names("sidd") == SIDD_PHYSICS
    both = physics_from_names("tukey, row")
    assert both.read_noise == "tukey" and both.row == 0.16 and both.prnu == 0
    assert both.describe() == "poisson-gaussian + tukey + row"
    assert physics_from_names("all").describe() == "poisson-gaussian + " + " + ".join(list(EFFECTS)[1:])
    for bad in ("bogus", "tukey,nope", ""):
        with pytest.raises(ConfigError, match="unknown sensor effect"):
            physics_from_names(bad)
    with pytest.raises(ConfigError, match="read noise"):
        SensorPhysics(read_noise="cauchy")
    with pytest.raises(ConfigError, match="tukey_lambda"):
        SensorPhysics(tukey_lambda=-0.6)
    with pytest.raises(ConfigError, match="row"):
        SensorPhysics(row=-1.0)
    with pytest.raises(ConfigError, match="hot_pixels"):
        SensorPhysics(hot_pixels=0.7)


@pytest.mark.parametrize("physics", [
    replace(POISSON_GAUSSIAN, quantise=True, clip=True),
    replace(POISSON_GAUSSIAN, quantise=True, clip=True, black_offset=0.5, dsnu=0.3, row=0.16, prnu=0.007),
    replace(POISSON_GAUSSIAN, quantise=True, clip=False, black_offset=0.5),
])
def test_quantised_density_is_normalised(physics) -> None:
    params = replace(PARAMS, white=95 + 400, gain=(1e-3, 2e-3, 2e-3, 4e-3), read_var=((3 / 400) ** 2,) * 4)
    lo, hi = (0, 400) if physics.clip else (-60, 460)
    grid = np.arange(lo, hi + 1) / 400
    for x in (0.0, 0.01, 0.5):
        clean = np.full((4, 1, grid.size), x)
        noise = np.broadcast_to(grid - x, clean.shape)
        lp = sensor_log_prob(noise, clean, params, physics)
        assert np.exp(lp).sum(axis=-1).ravel() / 400 == pytest.approx([1.0] * 4, abs=1e-6)


def test_continuous_density_is_normalised_and_errors() -> None:
    params = replace(PARAMS, gain=(1e-3,) * 4, read_var=(1e-6,) * 4)
    v = np.linspace(-0.02, 0.06, 4001)
    clean = np.full((4, 1, v.size), 0.02)
    lp = sensor_log_prob(np.broadcast_to(v - 0.02, clean.shape), clean, params, POISSON_GAUSSIAN)
    assert np.trapezoid(np.exp(lp[0, 0]), v) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InputError, match="not tractable"):
        sensor_log_prob(np.zeros((4, 2, 2)), np.zeros((4, 2, 2)), params, EFFECTS["tukey"])
    with pytest.raises(InputError, match="grid"):
        sensor_log_prob(np.full((4, 2, 2), 1e-4), np.full((4, 2, 2), 0.1), params, SIDD_PHYSICS)
