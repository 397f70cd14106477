"""Tests of the built-in camera simulator, its NLL floor and the simulated SIDD-like dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionflows.cameras import TRAIN_PAIRS, camera_index
from visionflows.errors import InputError
from visionflows.noise.simulator import (
    CAMERA_SPECS,
    PHOTOS,
    TEST_PHOTOS,
    CameraSimulator,
    load_photo,
    make_simulated_dataset,
    mosaic_packed,
    noise_params,
    simulator_log_prob,
    simulator_nll_floor,
    unprocess,
)


@pytest.fixture(scope="module")
def data() -> dict:
    return make_simulated_dataset(12, 6, seed=3)


def test_noise_params_sources() -> None:
    assert noise_params("S6", 100) == pytest.approx((1.625e-3, 1.18e-6))
    assert noise_params("GP", 6400) == pytest.approx((1.409e-2, 5.33e-5))
    assert noise_params("IP", 800)[0] == pytest.approx(1.299e-3)
    assert noise_params("N6", 800) == (0.003476, 0.000052)
    with pytest.raises(InputError, match="G4 at ISO 1600"):
        noise_params("G4", 1600)
    with pytest.raises(InputError, match="ISO 50"):
        noise_params("S6", 50)


def test_packed_colours_match_sidd() -> None:
    r, g, b = 0, 1, 2
    assert CAMERA_SPECS["IP"].packed_colors == (r, g, b, g)
    assert CAMERA_SPECS["S6"].packed_colors == (g, b, g, r)
    for cam in ("GP", "N6", "G4"):
        assert CAMERA_SPECS[cam].packed_colors == (b, g, r, g)
    spec = CAMERA_SPECS["S6"]
    rgb = np.zeros((4, 6, 3))
    rgb[..., 0] = 1.0  # pure red in camera space
    packed = mosaic_packed(rgb, spec)
    assert packed.shape == (4, 3, 2)
    assert packed[3].min() == 1 and packed[:3].max() == 0


def test_unprocess_range() -> None:
    img = load_photo("chelsea")
    assert img.shape[-1] == 3 and 0 <= img.min() and img.max() <= 1
    lin = unprocess(img[:64, :64], CAMERA_SPECS["IP"])
    assert lin.shape == (64, 64, 3) and lin.min() >= 0 and lin.max() <= 1
    assert lin.mean() < img[:64, :64].mean()  # linearisation darkens mid-tones
    assert load_photo("motorcycle_left").ndim == 3


def test_simulate_determinism_and_quantisation() -> None:
    sim = CameraSimulator("N6", 800)
    clean = np.full((2, 4, 16, 16), 0.3)
    a = sim.simulate(clean, np.random.default_rng(5))
    b = sim.simulate(clean, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sim.simulate(clean, np.random.default_rng(6)))
    levels = a.astype(np.float64) * CAMERA_SPECS["N6"].levels
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)  # discrete sensor levels
    t = sim.simulate(torch.full((4, 8, 8), 0.2), 1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    with pytest.raises(InputError):
        sim.simulate(np.zeros((3, 8, 8)))


@pytest.mark.parametrize("cam,iso", [("S6", 800), ("IP", 1600), ("GP", 100), ("G4", 800)])
def test_noise_variance_follows_physics(cam: str, iso: int) -> None:
    sim = CameraSimulator(cam, iso)
    rng = np.random.default_rng(0)
    for level in (0.05, 0.3):
        clean = np.full((8, 4, 32, 32), level)
        noise = sim.simulate(clean, rng) - clean
        expected = sim.gain * level + sim.read_var + sim.row_var + (0.007 * level) ** 2
        assert 0.8 < noise.var() / expected < 1.25
        assert abs(noise.mean()) < 0.1 * np.sqrt(expected)


def test_dark_noise_is_one_sided() -> None:
    sim = CameraSimulator("S6", 3200)
    clean = np.full((4, 4, 32, 32), 0.002)
    noisy = sim.simulate(clean, np.random.default_rng(1))
    noise = noisy - clean
    assert noise.min() >= -0.002 - 1e-6  # clipping at black: noisy >= 0
    assert (noisy == 0).mean() > 0.3
    assert noise.mean() > 0.0005  # clipped noise is biased upwards, unlike a zero-mean Gaussian NLF


def test_dataset_shapes_ranges_and_determinism(data: dict) -> None:
    train, test = data["train"], data["test"]
    assert train.clean.shape == (12 * 16, 4, 32, 32) and test.noise.shape == (6 * 16, 4, 32, 32)
    assert train.clean.dtype == torch.float32 and train.iso.dtype == torch.int64
    noisy = train.clean + train.noise
    assert train.clean.min() >= 0 and train.clean.max() <= 1
    assert noisy.min() >= -1e-6 and noisy.max() <= 1 + 1e-6
    pairs = {(int(c), int(i)) for c, i in zip(train.camera, train.iso)}
    assert pairs <= {(camera_index(c), i) for c, i in TRAIN_PAIRS}
    again = make_simulated_dataset(12, 6, seed=3)
    for key in ("clean", "noise", "iso", "camera", "photo"):
        assert torch.equal(train.tensors()[key], again["train"].tensors()[key])
    assert torch.equal(test.noise, make_simulated_dataset(2, 6, seed=3)["test"].noise)
    assert not torch.equal(test.noise, make_simulated_dataset(0, 6, seed=4)["test"].noise)
    item = train[0]
    assert item["noise"].shape == (4, 32, 32)


def test_split_is_photo_disjoint(data: dict) -> None:
    train_ph = {PHOTOS[i] for i in data["train"].photo.tolist()}
    test_ph = {PHOTOS[i] for i in data["test"].photo.tolist()}
    assert not train_ph & test_ph
    assert test_ph <= set(TEST_PHOTOS)
    assert {"motorcycle_left", "motorcycle_right"}.isdisjoint(test_ph)


def test_filters() -> None:
    d = make_simulated_dataset(3, 1, cameras=["S6"], isos=[3200], patches_per_side=1, seed=0)
    assert set(d["train"].camera.tolist()) == {2} and set(d["train"].iso.tolist()) == {3200}
    with pytest.raises(InputError, match="pair"):
        make_simulated_dataset(1, 1, cameras=["G4"], isos=[3200])


def test_log_prob_normalised() -> None:
    for cam, iso in (("S6", 800), ("IP", 100), ("GP", 800)):
        levels = CAMERA_SPECS[cam].levels
        grid = np.arange(levels + 1) / levels
        for x in (0.0, 0.01, 0.5):
            clean = np.full((4, 1, grid.size), x)
            noise = np.broadcast_to(grid - x, clean.shape)
            lp = simulator_log_prob(noise, clean, cam, iso)
            assert np.exp(lp[0]).sum() / levels == pytest.approx(1.0, abs=1e-6)


def test_nll_floor_beats_gaussian_fit(data: dict) -> None:
    test = data["test"]
    floor = simulator_nll_floor(test.noise, test.clean, test.camera, test.iso)
    assert np.isfinite(floor)
    # best heteroscedastic Gaussian fit var = a*y + b per (camera, ISO), fitted on the same data
    y, n = test.clean.double().numpy(), test.noise.double().numpy()
    nll = np.empty_like(y)
    for cam, iso in {(int(c), int(i)) for c, i in zip(test.camera, test.iso)}:
        sel = ((test.camera == cam) & (test.iso == iso)).numpy()
        ys, ns = y[sel].ravel(), n[sel].ravel()
        a, b = np.linalg.lstsq(np.stack([ys, np.ones_like(ys)], 1), ns**2, rcond=None)[0]
        var = np.maximum(a * y[sel] + b, 1e-8)
        nll[sel] = 0.5 * (np.log(2 * np.pi * var) + n[sel] ** 2 / var)
    gauss = float(nll.mean())
    assert floor < gauss - 0.05, (floor, gauss)
    with pytest.raises(InputError, match="grid"):
        simulator_nll_floor(test.noise + 1e-4, test.clean, test.camera, test.iso)
