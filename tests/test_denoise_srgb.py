"""Denoisers on sRGB pairs: training with sRGB Noise Flow noise via the CLI, and the sRGB experiment."""

from __future__ import annotations

import json

import pytest

from test_srgb_noise import make_pairs
from visionflows.cli.main import main
from visionflows.denoise import run_srgb_experiment
from visionflows.io import save_model
from visionflows.noise.srgb import SRGBNoiseFlow


@pytest.mark.slow
def test_cli_denoise_srgb_with_noise_model(tmp_path, capsys):
    d = make_pairs(tmp_path / "d")
    save_model(SRGBNoiseFlow(cameras=["cama"], isos=[100], noise_std=4.0), tmp_path / "nf.safetensors")
    run = tmp_path / "run"
    assert main(["denoise", "train", "--noise", str(tmp_path / "nf.safetensors"), "--data", str(d), "--run-dir",
                 str(run), "--steps", "2", "--batch-size", "2", "--patch", "16", "--depth", "3", "--width", "4",
                 "--no-progress"]) == 0
    assert main(["denoise", "eval", "--model", str(run), "--data", str(d), "--out", str(tmp_path / "e")]) == 0
    rows = json.loads((tmp_path / "e" / "table.json").read_text())
    assert rows[0]["model"] == "noisy input" and rows[1]["model"] == "run" and rows[1]["ssim"] <= 1.0
    assert (tmp_path / "e" / "images" / "run.png").is_file()
    # a raw-domain denoiser on sRGB data: exit 2 naming the file
    assert main(["denoise", "train", "--noise", "gaussian", "--run-dir", str(tmp_path / "raw"), "--steps", "1",
                 "--batch-size", "2", "--depth", "3", "--width", "4", "--n-train-images", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["denoise", "eval", "--model", str(tmp_path / "raw"), "--data", str(d), "--out",
                 str(tmp_path / "e2")]) == 2
    assert "raw" in capsys.readouterr().err


@pytest.mark.slow
def test_srgb_experiment_tiny(tmp_path):
    d = make_pairs(tmp_path / "d")
    r = run_srgb_experiment(d, tmp_path / "x", flow_steps=2, denoise_steps=2, batch_size=4, patch=16,
                            test_fraction=0.4, max_eval_patches=16, depth=3, width=4)
    assert [row["model"] for row in r["noise_models"]] == ["gaussian", "heteroscedastic", "srgb_noiseflow"]
    assert [row["model"] for row in r["denoisers"]][:2] == ["noisy input", "srgb_noiseflow"]
    for f in ("noise_models.txt", "noise_models.csv", "table.json", "experiment.json",
              "noise_models/srgb_noiseflow.safetensors"):
        assert (tmp_path / "x" / f).is_file()
