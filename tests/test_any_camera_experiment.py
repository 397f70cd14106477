"""The any-camera experiments on a tiny budget: sensor formats, hold-out splits, and that every model of the tables
is trained and scored (finite NLL and KL), with the simulator floor below the Gaussian."""

from __future__ import annotations

import math

import pytest

from visionflows.cameras.darktable import load_darktable_profiles
from visionflows.cameras.formats import SENSOR_FORMATS, sensor_format
from visionflows.cameras.physics import EFFECTS
from visionflows.experiments.any_camera import effects_experiment, holdout_cameras, zero_shot_experiment


@pytest.fixture(scope="module")
def zoo(shared_dir):
    return load_darktable_profiles(shared_dir / "data" / "noise_profiles" / "darktable_noiseprofiles.json")


def test_sensor_formats(zoo) -> None:
    assert sensor_format("Canon", "EOS 5D Mark III") == "full-frame"
    assert sensor_format("Canon", "EOS R10") == "aps-c"
    assert sensor_format("Canon", "EOS-1D Mark IV") == "aps-h"
    assert sensor_format("Sony", "DSC-RX100M3") == "1-inch"
    assert sensor_format("Olympus", "TG-5") == "small"
    assert sensor_format("Panasonic", "DMC-GH4") == "four-thirds"
    assert sensor_format("Fujifilm", "GFX100S") == "medium"
    assert sensor_format("Acme", "X") == "unknown"
    formats = {sensor_format(c.maker, c.model) for c in zoo}
    assert formats <= set(SENSOR_FORMATS) and "unknown" not in formats  # every zoo camera classified
    held, rest = holdout_cameras(zoo, "maker", "Fujifilm")
    assert len(held) == 34 and not set(held) & set(rest) and len(held) + len(rest) == len(zoo)
    small, _ = holdout_cameras(zoo, "format", "small")
    assert "LGE Nexus 5" in small and "Nikon D850" not in small


@pytest.mark.slow
def test_tables_on_a_tiny_budget(zoo) -> None:
    pairs = [("Canon EOS 5D Mark III", 800), ("Fujifilm X-T2", 3200)]
    effects = {"poisson-gaussian": EFFECTS["poisson-gaussian"], "quantise": EFFECTS["quantise"],
               "tukey": EFFECTS["tukey"]}
    rows = effects_experiment(zoo, pairs, effects, n_train=4, n_test=2, seconds=600.0, max_steps=3)
    assert [r["effect"] for r in rows] == list(effects)
    for r in rows:
        assert set(r["models"]) == {"Gaussian", "Camera NLF (profile)", "Heteroscedastic",
                                    "Noise Flow (official arch)", "Noise Flow (measured params)"}
        assert all(math.isfinite(m["nll"]) and math.isfinite(m["kl"]) for m in r["models"].values())
        assert all(t["steps"] == 3 for t in r["training"].values())  # a step budget: same on any machine
        if r["effect"] == "tukey":
            assert r["floor"] is None
        else:  # the exact density beats every model, the Gaussian by a margin
            assert r["floor"] < min(m["nll"] for m in r["models"].values()) + 0.01
            assert r["floor"] < r["models"]["Gaussian"]["nll"] - 0.1
    res = zero_shot_experiment(zoo, ["Fujifilm X-T2"], ["Nikon D850", "Sony ILCE-7M3"], EFFECTS["row"],
                               isos=(800,), n_train=2, n_test=2, seconds=600.0,
                               max_steps=3)
    assert res["n_train_cameras"] == 2 and len(res["models"]) == 5
    assert all(math.isfinite(m["nll"]) for m in res["models"].values())
