"""The main job: `visionflows demo --quick` runs end to end and its report renders in headless Chromium."""

from __future__ import annotations

import json

import pytest

from browser import render_dom
from visionflows.cli.main import main


@pytest.mark.slow
def test_quick_demo_end_to_end_and_report_renders(tmp_path, shared_dir, capsys):
    run = tmp_path / "demo"
    official = shared_dir / "anchors" / "noiseflow_official"
    code = main(["demo", "--quick", "--run-dir", str(run), "--official-ckpt", str(official), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for heading in ("Noise Flow on the built-in camera simulator", "DnCNN denoisers", "Wavelet Flow"):
        assert heading in out
    results = json.loads((run / "results.json").read_text())
    models = [r["model"] for r in results["noise"]["table"]]
    assert models[:4] == ["Gaussian", "Camera NLF", "Heteroscedastic", "Noise Flow"]
    assert "Noise Flow (official SIDD weights)" in models
    assert [r["model"] for r in results["denoise"]["table"]][0] == "noisy input"
    wf = results["wavelet"]
    assert wf["bits_per_dim"] < wf["untrained_bits_per_dim"]  # even a few steps per level help
    levels = [r for r in wf["table"] if r["level"] != "total"]
    assert abs(sum(r["trained (bits/dim contribution)"] for r in levels) - wf["bits_per_dim"]) < 1e-4
    assert set(wf["codecs"]) == {"png", "webp_lossless"} and all(2 < v < 9 for v in wf["codecs"].values())
    assert wf["anneal"]["images"] == 8 and 0 <= wf["anneal"]["accept_rate"] <= 1
    sr = wf["superres"]["factors"]
    assert set(sr) == {"2", "4"} and {"T=0 (mode)", "bicubic", "box", "annealed T=0.8"} <= set(sr["4"])
    assert (run / "wavelet" / "samples_annealed" / "samples_0032.png").is_file()
    html = (run / "report.html").read_text()
    counts = render_dom(run / "report.html")
    assert counts["images-total"] >= 8 and counts["images-loaded"] == counts["images-total"], counts
    assert counts["tables"] >= 5 and html.count("<img") == counts["images-total"]


def test_demo_refuses_a_non_empty_run_dir(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert main(["demo", "--quick", "--run-dir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep me"
