"""The leave-one-camera-out denoising study (experiments.srgb_denoise), its CLI (srgb-noise experiment
--holdout-camera) and the per-patch Gaussian noise source."""

from __future__ import annotations

import json

import pytest
import torch

from test_srgb_noise import make_pairs
from visionflows.cli.main import main
from visionflows.data.srgb_pairs import load_pairs
from visionflows.denoise import DnCNN, GaussianSource
from visionflows.errors import ConfigError
from visionflows.experiments.srgb_denoise import DENOISERS, plot_denoise_examples, run_srgb_denoise_study
from visionflows.io import save_model
from visionflows.noise.srgb import SRGBNoiseFlow

CAMS = ("cama_iso100_1", "cama_iso100_2", "camb_iso400_1", "camb_iso400_2", "camc_iso100_1", "camc_iso800_1")


def _patch_sigmas(src: GaussianSource, n: int = 64) -> torch.Tensor:
    clean = torch.full((n, 3, 16, 16), 0.5)
    noisy = src.noisy({"clean": clean}, torch.Generator().manual_seed(0))
    return (noisy - clean).flatten(1).std(1) * 255.0


def test_gaussian_source_per_patch_sigma():
    lo, hi = 1.0 / 255, 30.0 / 255
    per_batch = _patch_sigmas(GaussianSource(None, (lo, hi), domain="srgb"))
    per_patch = _patch_sigmas(GaussianSource(None, (lo, hi), domain="srgb", per_patch=True))
    # one σ for the whole batch (the default) vs one per patch spread over the range
    assert float(per_batch.std()) < 1.0
    assert float(per_patch.std()) > 5.0 and float(per_patch.min()) < 8.0 and float(per_patch.max()) > 22.0
    fixed = _patch_sigmas(GaussianSource(10.0 / 255, domain="srgb", per_patch=True))
    assert abs(float(fixed.mean()) - 10.0) < 0.5
    with pytest.raises(ConfigError, match="sigma range"):
        GaussianSource(None, (0.2, 0.1))


def test_plot_denoise_examples(tmp_path):
    held = load_pairs(make_pairs(tmp_path / "d", CAMS[:2], size=40))
    plot_denoise_examples(held, {"a": DnCNN(depth=3, width=4, domain="srgb")}, tmp_path / "f.png", crop=32)
    from PIL import Image

    im = Image.open(tmp_path / "f.png")
    assert im.width > 200 and im.height > 150


@pytest.mark.slow
def test_denoise_study_tiny(tmp_path, capsys):
    d = make_pairs(tmp_path / "d", CAMS, size=40)
    r = run_srgb_denoise_study(d, tmp_path / "x", ["camc", "camb"], steps=3, max_minutes=1.0, flow_steps=2,
                               batch_size=4, patch=16, depth=3, width=4, progress=False, log=None)
    assert r["cameras"] == ["camc", "camb"]
    assert [(row["camera"], row["model"]) for row in r["rows"]] == [
        (c, m) for c in ("camc", "camb") for m in ("noisy input", *DENOISERS)]
    for row in r["rows"]:
        assert row["images"] == 2 and 0 < row["ssim"] <= 1 and row["psnr_db"] > 10
        assert row["steps"] == (0 if row["model"] == "noisy input" else 3)
    # the flow never saw the held-out camera; files of every stage are there
    cfg = json.loads((tmp_path / "x" / "camc" / "runs" / "srgb_noiseflow" / "config.json").read_text())
    assert cfg["task"]["cameras"] == ["cama", "camb"] and not any("camc" in n for n in cfg["task"]["train_images"])
    for f in ("denoise.txt", "denoise.csv", "experiment.json", "denoise_examples.png", "camc/table.json",
              "camc/denoise_examples.png", "camb/images/real.png"):
        assert (tmp_path / "x" / f).is_file(), f
    assert r["timing"]["camc"]["flow"]["steps"] == 2


def test_cli_experiment_holdout(tmp_path, capsys):
    d = make_pairs(tmp_path / "d", CAMS, size=40)
    flow = tmp_path / "nf.safetensors"
    save_model(SRGBNoiseFlow(cameras=["cama", "camb"], isos=[100, 400], noise_std=4.0), flow)
    assert main(["srgb-noise", "experiment", "--data", str(d), "--holdout-camera", "camc", "--out",
                 str(tmp_path / "x"), "--noise-flow", str(flow), "--denoise-steps", "2", "--batch-size", "4",
                 "--patch", "16", "--max-minutes", "1", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[camc]" in out and "srgb_noiseflow" in out and "denoise_examples.png" in out
    rows = json.loads((tmp_path / "x" / "denoise.json").read_text())
    assert [r["model"] for r in rows] == ["noisy input", *DENOISERS]


def test_cli_experiment_holdout_errors(tmp_path, capsys):
    d = make_pairs(tmp_path / "d", CAMS, size=40)
    seen = tmp_path / "seen.safetensors"
    save_model(SRGBNoiseFlow(cameras=["cama", "camc"], isos=[100], noise_std=4.0), seen)
    base = ["srgb-noise", "experiment", "--data", str(d), "--out"]
    for extra, msg in (
        (["--holdout-camera", "camz"], "no pairs of camera 'camz'"),
        (["--holdout-camera", "camc", "--noise-flow", str(seen)], "trained on camera 'camc'"),
        (["--holdout-camera", "all", "--noise-flow", str(seen)], "not --holdout-camera all"),
        (["--noise-flow", str(seen)], "--noise-flow is for the held-out-camera study"),
    ):
        assert main([*base, str(tmp_path / "o"), *extra]) == 2, extra
        assert msg in capsys.readouterr().err, extra
