"""DnCNN model, noise sources, denoiser training/evaluation, the raw experiment and the denoise CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from visionflows.cli.main import main
from visionflows.denoise import (
    DnCNN,
    GaussianSource,
    NLFSource,
    SimulatorPatches,
    evaluate_denoisers,
    make_noise_source,
    psnr,
    run_denoising_experiment,
    ssim,
    train_denoiser,
)
from visionflows.errors import CheckpointError, ConfigError, InputError
from visionflows.io import load_model, save_model
from visionflows.noise.simulator import SimulatedSidd


def _fake_sim(n: int = 16, size: int = 16, seed: int = 0) -> SimulatedSidd:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 4, size, size, generator=g) * 0.5 + 0.1
    noise = torch.randn(n, 4, size, size, generator=g) * 0.03
    iso = torch.tensor([100, 800] * (n // 2))
    cam = torch.tensor([2, 0] * (n // 2))
    return SimulatedSidd(clean, noise, iso, cam, torch.zeros(n, dtype=torch.long))


def test_dncnn_architecture_and_residual():
    m = DnCNN()  # the paper's raw setup
    convs = [x for x in m.net if isinstance(x, nn.Conv2d)]
    bns = [x for x in m.net if isinstance(x, nn.BatchNorm2d)]
    assert len(convs) == 9 and len(bns) == 7 and all(c.bias is None for c in convs[1:-1])
    assert convs[0].in_channels == 4 and convs[-1].out_channels == 4 and convs[1].out_channels == 32
    assert all(b.eps == 1e-4 for b in bns)
    w = convs[1].weight.reshape(32, -1)
    assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-4)  # orthogonal init (rows)
    x = torch.rand(2, 4, 8, 8)
    m.eval()
    assert torch.allclose(m(x), x - m.predict_noise(x))
    rgb = DnCNN(domain="srgb", depth=5, width=8)
    assert rgb.channels == 3 and rgb.denoise(torch.rand(3, 8, 8)).shape == (3, 8, 8)
    with pytest.raises(InputError):
        m(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError):
        DnCNN(domain="xyz")


def test_dncnn_save_load(tmp_path):
    m = DnCNN(domain="srgb", depth=4, width=8, seed=3)
    m.eval()
    save_model(m, tmp_path / "d.safetensors")
    m2 = load_model(tmp_path / "d.safetensors")
    x = torch.rand(1, 3, 8, 8)
    assert m2.kind == "dncnn" and m2.domain == "srgb" and torch.equal(m2(x), m(x))


def test_metrics():
    a = np.random.default_rng(0).random((3, 16, 16))
    assert psnr(a, a, 1.0) == float("inf")
    assert abs(psnr(a + 0.01, a, 1.0) - 40.0) < 1e-9
    assert abs(ssim(a, a, 1.0) - 1.0) < 1e-12 and ssim(a * 0.5, a, 1.0) < 1.0


def test_sources():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((8, 4, 16, 16), 0.5)
    batch = {"clean": clean, "noisy": clean, "iso": torch.full((8,), 800), "camera": torch.full((8,), 2)}
    stds = [float((GaussianSource().noisy(batch, g) - clean).std()) for _ in range(20)]
    assert 0.24186 / 255 * 0.8 < min(stds) and max(stds) < 11.507 / 255 * 1.1 and max(stds) > 2 * min(stds)
    fixed = GaussianSource(5 / 255, domain="srgb").noisy(batch, g)
    assert torch.allclose(fixed * 255, torch.round(fixed * 255))  # sRGB: quantised to 8 bits
    nlf = NLFSource(rows=[(0.001, 1e-5)]).noisy(batch, g)
    assert abs(float((nlf - clean).var()) - (0.001 * 0.5 + 1e-5)) < 5e-5
    assert nlf.min() >= 0 and nlf.max() <= 1
    with pytest.raises(ConfigError, match="raw data only"):
        make_noise_source("nlf", "srgb")
    with pytest.raises(ConfigError, match="neither"):
        make_noise_source("no/such/file.safetensors", "raw")


def test_wrong_domain_noise_model(tmp_path, capsys):
    from visionflows.noise import create_model
    from visionflows.noise.srgb import SRGBNoiseFlow

    save_model(create_model("noiseflow_s_g"), tmp_path / "raw_nf.safetensors")
    save_model(SRGBNoiseFlow(), tmp_path / "srgb_nf.safetensors")
    save_model(DnCNN(depth=3, width=4), tmp_path / "dncnn.safetensors")
    with pytest.raises(CheckpointError, match="raw_nf.safetensors is for the raw domain"):
        make_noise_source(str(tmp_path / "raw_nf.safetensors"), "srgb")
    with pytest.raises(CheckpointError, match="srgb_nf.safetensors is for the srgb domain"):
        make_noise_source(str(tmp_path / "srgb_nf.safetensors"), "raw")
    with pytest.raises(CheckpointError, match="not a noise model"):
        make_noise_source(str(tmp_path / "dncnn.safetensors"), "raw")
    src = make_noise_source(str(tmp_path / "raw_nf.safetensors"), "raw")
    g = torch.Generator().manual_seed(0)
    sim = _fake_sim(4)
    out = src.noisy(SimulatorPatches(sim).sample(4, g), g)
    assert out.shape == (4, 4, 16, 16) and out.min() >= 0 and out.max() <= 1
    code = main(["denoise", "train", "--noise", str(tmp_path / "srgb_nf.safetensors"), "--run-dir",
                 str(tmp_path / "r"), "--steps", "1", "--n-train-images", "1"])
    assert code == 2 and "srgb_nf.safetensors" in capsys.readouterr().err


def test_train_resume_and_evaluate(tmp_path):
    data = SimulatorPatches(_fake_sim())
    res = train_denoiser(data, "real", tmp_path / "run", steps=2, batch_size=4, depth=3, width=8)
    assert res.step == 2 and res.model.kind == "dncnn"
    res2 = train_denoiser(data, "real", tmp_path / "run", steps=4, batch_size=4, depth=3, width=8, resume=True)
    assert res2.step == 4
    rows = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rows["task"]["noise"] == "real"
    test = _fake_sim(4, 24, seed=1)
    table = evaluate_denoisers({"a": res2.model, "b": tmp_path / "run"}, test, tmp_path / "ev", n_show=2)
    assert [r["model"] for r in table] == ["noisy input", "a", "b"]
    for f in ("table.txt", "table.csv", "table.json", "images/a.png", "images/b.png"):
        assert (tmp_path / "ev" / f).is_file()
    with pytest.raises(CheckpointError, match="raw data but the evaluation data are srgb|for raw data"):
        from visionflows.data.srgb_pairs import SRGBPairs

        img = np.zeros((16, 16, 3), np.uint8)
        evaluate_denoisers({"a": res2.model}, SRGBPairs(["x"], [img], [img], [None], [None]))


def test_denoiser_learns_gaussian():
    torch.manual_seed(0)
    data = SimulatorPatches(_fake_sim(32))
    src = GaussianSource(0.05)
    from visionflows.denoise import DenoiseTask

    task = DenoiseTask(data, src, batch_size=8, depth=3, width=16)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    first = last = None
    for step in range(60):
        loss, _ = task.loss(model, task.batch(step, torch.Generator().manual_seed(step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    # the denoiser starts as the identity (zero-initialised last conv): it must beat the noisy input
    assert last < 0.97 * first, (first, last)


@pytest.mark.slow
def test_raw_experiment_tiny(tmp_path):
    rows = run_denoising_experiment(tmp_path / "x", steps=2, flow_steps=2, batch_size=4, n_train_images=1,
                                    n_test_images=1, depth=3, width=4)
    assert [r["model"] for r in rows] == ["noisy input", "gaussian", "nlf", "noiseflow", "real"]
    assert all(np.isfinite(r["psnr_db"]) for r in rows)
    info = json.loads((tmp_path / "x" / "experiment.json").read_text())
    assert info["steps"] == 2 and (tmp_path / "x" / "noiseflow.safetensors").is_file()


def test_cli_train_eval(tmp_path, capsys):
    run = tmp_path / "g"
    assert main(["denoise", "train", "--noise", "gaussian", "--run-dir", str(run), "--steps", "1", "--batch-size",
                 "2", "--depth", "3", "--width", "4", "--n-train-images", "1", "--no-progress"]) == 0
    assert main(["denoise", "train", "--noise", "gaussian", "--run-dir", str(run), "--steps", "1",
                 "--n-train-images", "1"]) == 2  # non-empty run dir without --resume/--overwrite
    assert main(["denoise", "eval", "--model", str(run), "--out", str(tmp_path / "e"), "--n-test-images",
                 "1"]) == 0
    assert "noisy input" in capsys.readouterr().out
    assert main(["denoise", "eval", "--model", str(tmp_path / "missing.safetensors"), "--out",
                 str(tmp_path / "e2"), "--n-test-images", "1"]) == 2
    assert main(["denoise", "train", "--noise", "real", "--data", str(tmp_path / "nodata"), "--run-dir",
                 str(tmp_path / "r2"), "--steps", "1"]) == 2
