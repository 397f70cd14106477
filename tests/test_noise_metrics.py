"""Noise metrics (§8 protocol), evaluation of several models and the report writers."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from visionflows.noise import CameraNLF, GaussianNoise, create_model
from visionflows.noise.evaluate import write_noise_report
from visionflows.noise.metrics import KL_EDGES, evaluate_noise_models, kl_patch_indices, marginal_kl


def test_kl_edges_and_indices():
    assert KL_EDGES.size == 67 and KL_EDGES[0] == -1000 and KL_EDGES[-1] == 1000
    assert abs(KL_EDGES[1] + 0.1) < 1e-15 and abs(KL_EDGES[-2] - 0.1) < 1e-12
    assert len(kl_patch_indices(138)) == 28 and kl_patch_indices(138)[-1] == 135


def test_marginal_kl_by_hand():
    real = np.array([0.0, 0.0, 0.0, 0.05])  # bins: 3 in the bin of 0, 1 in the bin of 0.05
    model = np.array([0.0, 0.05, 0.05, 0.5])  # 0.5 falls in the [0.1, 1000] bin
    p0, p1, q0, q1 = 0.75, 0.25, 0.25, 0.5
    expect = p0 * math.log(p0 / q0) + p1 * math.log(p1 / q1)
    assert abs(marginal_kl(real, model) - expect) < 1e-12
    assert marginal_kl(real, real) == 0.0
    # bins where q is empty are dropped, not smoothed
    assert marginal_kl(np.array([0.0, 0.05]), np.array([0.0, 0.0])) == 0.5 * math.log(0.5)


def _test_set(n=12, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 4, size, size, generator=g) * 0.5 + 0.1
    iso = torch.tensor([100] * (n // 2) + [800] * (n - n // 2))
    cam = torch.tensor([2] * (n // 2) + [1] * (n - n // 2))
    b1 = torch.tensor([4.79e-4] * (n // 2) + [1.764e-3] * (n - n // 2))[:, None, None, None]
    noise = torch.randn(clean.shape, generator=g) * torch.sqrt(b1 * clean + 2e-6)
    return {"clean": clean, "noise": noise, "iso": iso, "camera": cam}


def test_evaluate_and_report(tmp_path):
    data = _test_set()
    models = {"Gaussian": GaussianNoise().fit(data["noise"]), "NLF": CameraNLF(),
              "NF": create_model("noiseflow_s_g_cam")}
    res = evaluate_noise_models(models, data, batch_size=6, generator=torch.Generator().manual_seed(0))
    s = res.summary()
    assert s["n_patches"] == 12 and s["n_batches"] == 2 and s["n_kl_patches"] == 4
    nlf = CameraNLF().nll_per_dim(data["noise"], data["clean"], data["iso"], data["camera"])
    assert abs(s["overall"]["NLF"]["nll"] - float(nlf.mean())) < 1e-5
    assert set(s["per_camera"]) == {"GP", "S6"} and set(s["per_iso"]) == {"100", "800"}
    assert s["overall"]["NLF"]["nll"] < s["overall"]["Gaussian"]["nll"]
    # KL: mean over batches of the mean over KL patches
    per_batch = [res.kl["NLF"][res.kl_batch == b].mean() for b in (0, 1)]
    assert abs(s["overall"]["NLF"]["kl"] - float(np.mean(per_batch))) < 1e-12
    paths = write_noise_report(res, tmp_path / "rep")
    assert "NLL (nats/dim)" in paths["table"].read_text()
    assert json.loads(paths["json"].read_text())["overall"]["NF"]["n_patches"] == 12
    assert paths["csv"].read_text().startswith("scope,group,model,nll_nats_per_dim,kl,n_patches")
    for k in ("histograms", "samples"):
        assert paths[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unscorable_pairs_are_nan_not_fatal():
    data = _test_set()
    data["camera"][:] = 4  # G4
    data["iso"][:] = 1600  # no G4/1600 row in the NLF table
    res = evaluate_noise_models({"NLF": CameraNLF(), "G": GaussianNoise()}, data, batch_size=6)
    s = res.summary()
    assert s["overall"]["NLF"]["n_patches"] == 0 and math.isnan(s["overall"]["NLF"]["nll"])
    assert s["overall"]["G"]["n_patches"] == 12


def test_format_table_keeps_long_model_names_whole():
    from visionflows.noise.evaluate import format_table

    names = ["Gaussian", "Heteroscedastic (fitted)", "runs/a-long-noise-flow-run-name"]
    r = {"nll": -4.0, "kl": 0.01, "n_patches": 8}
    summary = {"overall": {m: r for m in names}, "per_camera": {"Canon EOS 1000D": {m: r for m in names}},
               "per_iso": {800: {m: r for m in names}}, "n_patches": 8, "values_per_patch": 4096,
               "n_kl_patches": 2, "n_batches": 1}
    text = format_table(summary)
    per_camera = text.split("per camera\n")[1].splitlines()
    for m in names:
        assert m in per_camera[0]
    assert len(per_camera[1]) == len(per_camera[0])  # the cells line up with their headers
