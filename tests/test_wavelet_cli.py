"""`visionflows wavelet train | eval | sample | superres` end to end on the tiny preset, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionflows.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tiny_8 trained for a few steps per level (each level in its own run dir)."""
    root = tmp_path_factory.mktemp("wf")
    data = root / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(data / f"{k}.png")
    for lv in range(4):
        rc = main(["wavelet", "train", "--preset", "tiny_8", "--level", str(lv), "--data", str(data),
                   "--run-dir", str(root / "run"), "--steps", str(2 + lv), "--batch-size", "4", "--no-progress"])
        assert rc == 0
    return root


def _png(path, h, w, mode="RGB"):
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_eval_prints_levels_sources_and_saves(trained, capsys, tmp_path):
    run = trained / "run"
    rc = main(["wavelet", "eval", "--run-dir", str(run), "--data", str(trained / "imgs"), "--json",
               str(tmp_path / "e.json"), "--save-model", str(tmp_path / "full.safetensors")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "total bits/dim" in out and "step 5" in out and "level_3" in out
    res = json.loads((tmp_path / "e.json").read_text())
    assert abs(sum(res["levels"]) - res["total"]) < 1e-6 and len(res["levels"]) == 4
    assert main(["wavelet", "eval", "--model", str(tmp_path / "full.safetensors"), "--data",
                 str(trained / "imgs")]) == 0


def test_sample_writes_a_grid_per_resolution(trained, tmp_path):
    rc = main(["wavelet", "sample", "--run-dir", str(trained / "run"), "--out", str(tmp_path / "s"), "--n", "4",
               "--temperature", "0.7"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["samples_0001.png", "samples_0002.png", "samples_0004.png", "samples_0008.png"]


def test_superres_metrics(trained, tmp_path, capsys):
    img = _png(tmp_path / "gt.png", 16, 16)
    rc = main(["wavelet", "superres", "--run-dir", str(trained / "run"), "--image", str(img), "--factor", "4",
               "--out", str(tmp_path / "sr"), "--n-samples", "2"])
    assert rc == 0
    rep = json.loads((tmp_path / "sr" / "metrics.json").read_text())
    assert len(rep["samples"]) == 2 and {"bicubic", "box", "sample_mean"} <= set(rep)
    assert all(np.isfinite(rep[k]["psnr"]) for k in ("bicubic", "box"))
    assert (tmp_path / "sr" / "superres.png").is_file()
    assert "bicubic" in capsys.readouterr().out
    # any photo works with --center-crop
    odd = _png(tmp_path / "odd.png", 30, 20)
    assert main(["wavelet", "superres", "--run-dir", str(trained / "run"), "--image", str(odd), "--factor", "2",
                 "--out", str(tmp_path / "sr2"), "--center-crop", "--n-samples", "1"]) == 0


@pytest.mark.parametrize(
    "case,match",
    [
        ("nonsquare", "not square"),
        ("nonpow2", "power of two"),
        ("grey", "channel"),
        ("corrupt", "cannot read image"),
        ("factor", "power of two"),
        ("missing", "missing checkpoint for level"),
    ],
)
def test_bad_inputs_exit_2(trained, tmp_path, capsys, case, match):
    run = str(trained / "run")
    args = ["wavelet", "superres", "--run-dir", run, "--out", str(tmp_path / "o"), "--factor", "2", "--image"]
    if case == "nonsquare":
        args.append(str(_png(tmp_path / "a.png", 16, 8)))
    elif case == "nonpow2":
        args.append(str(_png(tmp_path / "a.png", 12, 12)))
    elif case == "grey":
        args.append(str(_png(tmp_path / "a.png", 16, 16, mode="L")))
    elif case == "corrupt":
        (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
        args.append(str(tmp_path / "a.png"))
    elif case == "factor":
        args = args[:-3] + ["--factor", "3", "--image", str(_png(tmp_path / "a.png", 16, 16))]
    elif case == "missing":
        import shutil

        partial = tmp_path / "partial"
        shutil.copytree(trained / "run", partial)
        shutil.rmtree(partial / "level_2")
        args = ["wavelet", "eval", "--run-dir", str(partial)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_train_errors_exit_2(tmp_path, capsys):
    assert main(["wavelet", "train", "--preset", "nope", "--level", "0"]) == 2
    assert "unknown Wavelet Flow preset" in capsys.readouterr().err
    data = tmp_path / "d"
    data.mkdir()
    _png(data / "ok.png", 16, 16)
    (data / "bad.png").write_bytes(b"garbage")
    args = ["wavelet", "train", "--preset", "tiny_8", "--level", "0", "--data", str(data), "--run-dir",
            str(tmp_path / "r"), "--steps", "1", "--batch-size", "2", "--no-progress"]
    assert main(args + ["--on-error", "stop"]) == 2
    assert "bad.png" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="bad.png"):
        assert main(args) == 0
    assert main(args) == 2  # run dir not empty without --resume/--overwrite: refused before the data are read
    err = capsys.readouterr().err
    assert "not empty" in err and "bad.png" not in err
    assert main(["wavelet", "train", "--preset", "tiny_8", "--level", "9", "--run-dir", str(tmp_path / "q")]) == 2
    npz = tmp_path / "x.npz"
    np.savez(npz, data=np.zeros((2, 3 * 16 * 16), dtype=np.uint8))
    assert main(["wavelet", "train", "--preset", "tiny_8", "--level", "0", "--data", str(npz), "--run-dir",
                 str(tmp_path / "n")]) == 2
    assert "16×16 images but the model is 8×8" in capsys.readouterr().err


# ---------------------------------------------------------------------- every directory the commands write
def _layout(trained, tmp_path, form):
    """The trained levels copied into the directory layout ``form``; returns the path to pass as --run-dir."""
    import shutil

    run = trained / "run"
    if form == "root":  # `wavelet train --run-dir X` writes X/level_L
        return run
    if form in ("levels_parent", "levels_folder"):  # a root that keeps its levels in levels/
        shutil.copytree(run, tmp_path / "wf" / "levels", ignore=shutil.ignore_patterns("imgs"))
        return tmp_path / "wf" if form == "levels_parent" else tmp_path / "wf" / "levels"
    # `visionflows demo --run-dir X` writes its Wavelet Flow levels to X/wavelet/levels/level_L
    shutil.copytree(run, tmp_path / "demo" / "wavelet" / "levels")
    (tmp_path / "demo" / "wavelet" / "samples").mkdir()
    (tmp_path / "demo" / "noise").mkdir()
    return tmp_path / "demo" if form == "demo" else tmp_path / "demo" / "wavelet"


@pytest.mark.parametrize("form", ["root", "levels_parent", "levels_folder", "demo", "demo_wavelet"])
def test_eval_sample_superres_accept_every_run_layout(trained, tmp_path, capsys, form):
    from visionflows.wavelet.train import find_level_runs

    where = _layout(trained, tmp_path, form)
    found = find_level_runs(where)
    assert sorted(found) == [0, 1, 2, 3] and all(p.name == f"level_{lv}" for lv, p in found.items())
    assert main(["wavelet", "eval", "--run-dir", str(where), "--data", str(trained / "imgs"), "--max-images",
                 "4"]) == 0
    assert "step 5" in capsys.readouterr().out
    assert main(["wavelet", "sample", "--run-dir", str(where), "--out", str(tmp_path / "s"), "--n", "2"]) == 0
    img = _png(tmp_path / "gt.png", 8, 8)
    assert main(["wavelet", "superres", "--run-dir", str(where), "--image", str(img), "--factor", "2", "--out",
                 str(tmp_path / "sr"), "--n-samples", "1"]) == 0


def test_single_level_dirs_resolve_and_unknown_layouts_fail_clearly(trained, tmp_path, capsys):
    from visionflows.errors import CheckpointError
    from visionflows.training import find_checkpoints
    from visionflows.wavelet.train import find_level_runs

    level = trained / "run" / "level_2"
    ckpt = find_checkpoints(level)[-1]
    for path in (level, ckpt, ckpt / "model.safetensors"):
        assert find_level_runs(path) == {2: path}
    # one level is not a whole model: eval says which levels are missing
    assert main(["wavelet", "eval", "--run-dir", str(level), "--data", str(trained / "imgs")]) == 2
    assert "level(s) [0, 1, 3]" in capsys.readouterr().err
    empty = tmp_path / "nothing"
    (empty / "checkpoints_elsewhere").mkdir(parents=True)
    with pytest.raises(CheckpointError) as err:
        find_level_runs(empty)
    msg = str(err.value)
    for looked in ("level_<L>", "levels/level_<L>", "wavelet/levels/level_<L>", "checkpoints/step-*"):
        assert looked in msg, looked
    assert main(["wavelet", "sample", "--run-dir", str(empty), "--out", str(tmp_path / "s")]) == 2
    err_text = capsys.readouterr().err
    assert "no Wavelet Flow levels" in err_text and "Traceback" not in err_text


@pytest.mark.slow
def test_train_all_levels_cli_shared_flags_resume_and_refusal(trained, tmp_path, capsys):
    run = tmp_path / "all"
    base = ["wavelet", "train", "--preset", "tiny_8", "--level", "all", "--parallel", "2", "--data",
            str(trained / "imgs"), "--run-dir", str(run), "--batch-size", "4", "--threads", "1", "--grad-clip", "1"]
    assert main(base + ["--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "trained levels [0, 1, 2, 3]" in out and out.count(": done (step 0 → 3") == 4
    assert json.loads((run / "level_1" / "config.json").read_text())["train"]["grad_clip"] == 1.0
    assert main(base + ["--steps", "4"]) == 2  # a run is there: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(base + ["--steps", "4", "--resume"]) == 0
    assert capsys.readouterr().out.count("step 3 → 4") == 4
