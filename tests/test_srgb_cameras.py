"""Unseen cameras: vocabulary extension, adaptation of the camera-specific part only, adaptation folds, the
spatial sRGB flow, and the srgb-noise train/eval --holdout-camera, adapt and cameras commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_srgb_noise import make_pairs
from visionflows.cli.main import main
from visionflows.data.srgb_pairs import load_pairs
from visionflows.experiments.srgb_cameras import adaptation_folds, run_camera_study
from visionflows.io import load_model, save_model
from visionflows.noise.srgb import (
    SPATIAL_ARCH,
    SRGBNoiseFlow,
    adapt_srgb_flow,
    extend_vocabulary,
    nll_per_dim,
)
from visionflows.registry import create_model

CAMS = ("cama_iso100_1", "cama_iso100_2", "camb_iso400_1", "camb_iso400_2", "camc_iso100_1", "camc_iso100_2",
        "camc_iso800_1", "camc_iso800_2")


def _perturbed(model: SRGBNoiseFlow, seed: int = 0) -> SRGBNoiseFlow:
    gen = torch.Generator().manual_seed(seed)
    model.train()
    model.log_prob(torch.randn(4, 3, 8, 8, generator=gen) * 3, torch.rand(4, 3, 8, 8, generator=gen),
                   [100, 400, None, 100], ["a", "b", None, "b"])  # ActNorm's data-dependent init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("arch,norm", [("CL2|CAC|CAC", "batch"), ("CL2|SPC|CAC|CAC", "act"),
                                       ("SDL|CL2|SPC|CAC|CAC", "act")])
def test_extend_vocabulary_starts_new_entries_from_unknown(arch, norm):
    m = _perturbed(SRGBNoiseFlow(arch, cameras=["a", "b"], isos=[100, 400], noise_std=3.0, norm=norm))
    ext = extend_vocabulary(m, ["C"], [800, 100])
    assert ext.cameras == ["a", "b", "c"] and ext.isos == [100, 400, 800]
    g = torch.Generator().manual_seed(1)
    n, clean = torch.randn(3, 3, 8, 8, generator=g) * 3, torch.rand(3, 3, 8, 8, generator=g)
    with torch.no_grad():
        # the new camera / ISO get exactly what the original model gave an unknown one; known ones are unchanged
        assert torch.allclose(ext.log_prob(n, clean, [800, 100, 400], ["c", "c", "b"]),
                              m.log_prob(n, clean, [None, 100, 400], [None, None, "b"]), atol=1e-4)
        assert torch.allclose(ext.log_prob(n, clean, 400, "a"), m.log_prob(n, clean, 400, "a"), atol=1e-4)
    with pytest.raises(Exception, match="sRGB Noise Flow"):
        extend_vocabulary(create_model("srgb_gaussian"), ["c"])


@pytest.mark.parametrize("arch", ["CL2|SPC|CAC|CAC", "SDL|CL2|SPC|CAC|CAC"])
def test_adaptation_fits_only_the_camera_and_helps(tmp_path, arch):
    data = load_pairs(make_pairs(tmp_path / "d", CAMS, sigma=3.0))
    for i, name in enumerate(data.names):  # camera c: three times the noise of the others
        if name.startswith("camc"):
            extra = np.random.default_rng(i).normal(0, 8.0, data.noisy[i].shape)
            data.noisy[i] = np.clip(np.round(data.noisy[i] + extra), 0, 255).astype(np.uint8)
    rest, held = data.camera_split("camc")
    model = _perturbed(SRGBNoiseFlow(arch, cameras=rest.vocab()[0], isos=rest.vocab()[1],
                                     noise_std=3.0, norm="act"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pool, ev = adaptation_folds(held, tile=16, folds=1)[0]
    adapted, hist = adapt_srgb_flow(model, pool.subset([0, 1]), "camc", steps=25, batch_size=8, patch=16, lr=0.08)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    assert adapted.cameras[-1] == "camc" and 800 in adapted.isos and hist[-1]["nll_per_dim"] < hist[0]["nll_per_dim"]
    # everything shared is unchanged; what changed is the camera's CL2 (and SDL) rows and embedding-input columns
    ext = extend_vocabulary(model, ["camc"], [800])
    c = adapted.cameras.index("camc") + 1
    for k, v in adapted.state_dict().items():
        if not torch.equal(v, ext.state_dict()[k]):
            assert k.endswith(("log_scale", "bias", "log_a", "log_b", "inp.weight")) and (
                "inp" in k or "transform" in k), k
            diff = (v != ext.state_dict()[k])
            if k.endswith("inp.weight"):
                cols = set(diff.any(0).nonzero().flatten().tolist())
                assert cols <= {adapted.n_iso + c, adapted.isos.index(800) + 1}, (k, cols)
            elif v.dim() == 2:  # CL2 / SDL table [n_iso * n_cam, 3]
                rows = diff.any(1).nonzero().flatten()
                assert set((rows % adapted.n_cam).tolist()) == {c}, k
            else:
                raise AssertionError(f"{k} changed")
    patches = ev.grid_patches(16)
    zero = nll_per_dim(ext, patches)
    assert nll_per_dim(adapted, patches) < zero - 0.05


def test_adaptation_folds_pool_and_eval_disjoint(tmp_path):
    held = load_pairs(make_pairs(tmp_path, CAMS[4:], size=32))
    folds = adaptation_folds(held, tile=16, folds=3, seed=0)
    assert len(folds) == 2  # two images per ISO
    for pool, ev in folds:
        pool_images = {n.split("#")[0] for n in pool.names}
        assert pool_images.isdisjoint(ev.names) and len(pool) == 8 and len(ev) == 2
        assert {pool.isos[0], pool.isos[1]} == {100, 800}  # round-robin over the ISO groups
    assert adaptation_folds(held, tile=None, folds=1)[0][0].names[0] in ("camc_iso100_1", "camc_iso800_1")
    with pytest.raises(Exception, match="at least two"):
        adaptation_folds(held.subset([0]))


def test_spatial_flow_models_correlated_noise_better(tmp_path):
    # noise smoothed over neighbouring pixels (like demosaicked sRGB noise): the spatial couplings see it
    rng = np.random.default_rng(0)
    clean = torch.rand(32, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    white = torch.from_numpy(rng.normal(0, 4, (32, 3, 13, 13))).float()
    noise = (white[..., 1:, 1:] + white[..., :-1, 1:] + white[..., 1:, :-1] + white[..., :-1, :-1]) / 2
    res = {}
    for name, arch in (("channel", "CL2|CAC|CAC"), ("spatial", "CL2|SPC|CAC|CAC")):
        torch.manual_seed(0)
        m = SRGBNoiseFlow(arch, noise_std=4.0, norm="act")
        opt = torch.optim.Adam(m.parameters(), lr=5e-3)
        for _ in range(30):
            loss = -m.log_prob(noise, clean).mean() / noise[0].numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
        res[name] = float(loss.detach())
    assert res["spatial"] < res["channel"] - 0.1, res
    assert create_model("srgb_noiseflow_spatial").arch == SPATIAL_ARCH


def test_cli_holdout_train_eval_adapt(tmp_path, capsys):
    d = make_pairs(tmp_path / "d", CAMS, size=32)
    run = tmp_path / "r"
    assert main(["srgb-noise", "train", "--data", str(d), "--holdout-camera", "camc", "--run-dir", str(run),
                 "--steps", "2", "--batch-size", "4", "--patch", "16", "--preset", "srgb_noiseflow_spatial",
                 "--unknown-prob", "0.3", "--no-progress"]) == 0
    flow = load_model(run)
    assert flow.cameras == ["cama", "camb"] and flow.norm == "act"
    capsys.readouterr()
    assert main(["srgb-noise", "eval", "--data", str(d), "--holdout-camera", "camc", "--model", str(run), "--k", "1",
                 "--folds", "1", "--adapt-steps", "2", "--patch", "16", "--tile", "16", "--max-patches", "8",
                 "--out", str(tmp_path / "e")]) == 0
    rows = json.loads((tmp_path / "e" / "noise_models.json").read_text())
    assert {(r["model"], r["k"]) for r in rows} == {
        ("gaussian (other cameras)", 0), ("heteroscedastic (other cameras)", 0), ("r", 0),
        ("heteroscedastic (k pairs)", 1), ("r adapted", 1)}
    out = tmp_path / "adapted.safetensors"
    assert main(["srgb-noise", "adapt", "--model", str(run), "--data", str(d), "--camera", "camc", "--k", "2",
                 "--tile", "16", "--adapt-steps", "2", "--patch", "16", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["k"] == 2 and len(info["pairs"]) == 2 and load_model(out).cameras == ["cama", "camb", "camc"]
    # errors: one line, exit 2
    for argv, msg in (
        (["adapt", "--model", str(run), "--data", str(d), "--camera", "zz", "--k", "1", "--out", str(out)],
         "no pairs of camera 'zz'"),
        (["adapt", "--model", str(run), "--data", str(d), "--camera", "camc", "--k", "99", "--out", str(out)],
         "--k 99 but camera camc has 4 pair"),
        (["eval", "--data", str(d), "--k", "1", "--out", str(tmp_path / "e2")], "--holdout-camera"),
        (["train", "--data", str(d), "--holdout-camera", "camz", "--run-dir", str(tmp_path / "r2"), "--steps", "1"],
         "no pairs of camera 'camz'"),
    ):
        capsys.readouterr()
        assert main(["srgb-noise", *argv]) == 2, argv
        assert msg in capsys.readouterr().err, argv
    save_model(create_model("srgb_gaussian"), tmp_path / "g.safetensors")
    assert main(["srgb-noise", "adapt", "--model", str(tmp_path / "g.safetensors"), "--data", str(d), "--camera",
                 "camc", "--k", "1", "--out", str(out)]) == 2
    assert "no camera entries" in capsys.readouterr().err


def test_camera_study_tiny(tmp_path):
    d = make_pairs(tmp_path / "d", CAMS, size=32)
    r = run_camera_study(d, tmp_path / "x", ["camc"], ks=(1,), flow_steps=2, adapt_steps=2, folds=1, tile=16,
                         batch_size=4, patch=16, max_eval_patches=8)
    assert [(row["model"], row["k"]) for row in r["rows"]][-2:] == [("heteroscedastic (k pairs)", 1),
                                                                   ("srgb_noiseflow adapted", 1)]
    for f in ("cameras.txt", "cameras.csv", "cameras.png", "experiment.json",
              "adapted/srgb_noiseflow_camc_k1.safetensors"):
        assert (tmp_path / "x" / f).is_file()
    assert (tmp_path / "x" / "cameras.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
