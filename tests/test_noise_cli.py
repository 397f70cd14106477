"""`visionflows noise ...` commands: happy paths and every user error exits 2 with a one-line message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visionflows.cli.main import main
from visionflows.data.raw_files import write_raw_mat
from visionflows.io import load_model, save_model
from visionflows.noise import create_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "nf.safetensors"
    save_model(create_model("noiseflow_s_ax1_g_ax1").eval(), path)
    return path


@pytest.fixture()
def clean_npy(tmp_path):
    path = tmp_path / "clean.npy"
    np.save(path, (np.random.default_rng(0).random((4, 8, 8)) * 0.5 + 0.1).astype(np.float32))
    return path


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("visionflows: error:")
    return err


def test_import_official(shared_dir, tmp_path, capsys):
    ckpt = shared_dir / "anchors" / "noiseflow_official"
    out = tmp_path / "released.safetensors"
    assert main(["noise", "import-official", str(ckpt), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 2433
    assert load_model(out).num_parameters() == 2431
    assert main(["noise", "import-official", str(tmp_path / "nope"), "--out", str(out)]) == 2
    _err(capsys)


def test_sample_npy_single_and_batched(model_file, clean_npy, tmp_path, capsys):
    out = tmp_path / "noisy.npy"
    args = ["noise", "sample", "--model", str(model_file), "--clean", str(clean_npy), "--iso", "800",
            "--camera", "S6", "--out", str(out), "--seed", "3"]
    assert main(args) == 0
    a = np.load(out)
    assert a.shape == (4, 8, 8) and a.min() >= 0 and a.max() <= 1
    assert main(args) == 0
    assert np.array_equal(np.load(out), a)  # seeded
    batched = tmp_path / "b.npy"
    np.save(batched, np.stack([np.load(clean_npy)] * 3))
    assert main(args[:5] + [str(batched)] + args[6:]) == 0
    assert np.load(out).shape == (3, 4, 8, 8)
    capsys.readouterr()


def test_sample_mat_roundtrip(model_file, tmp_path, capsys):
    from visionflows.data.sidd import read_raw_mat

    gt = tmp_path / "0001_GT_RAW_010.MAT"
    bayer = (np.random.default_rng(1).random((16, 12)) * 0.6).astype(np.float32)
    write_raw_mat(gt, bayer)
    assert np.array_equal(read_raw_mat(gt), bayer)
    out = tmp_path / "noisy.MAT"
    assert main(["noise", "sample", "--model", str(model_file), "--clean", str(gt), "--iso", "100",
                 "--camera", "IP", "--out", str(out)]) == 0
    noisy = read_raw_mat(out)
    assert noisy.shape == bayer.shape and 0 <= noisy.min() and noisy.max() <= 1
    capsys.readouterr()


@pytest.mark.parametrize(
    "case, match",
    [
        ("camera", "Unknown camera"),
        ("iso", "ISO 801"),
        ("shape", "expected packed raw"),
        ("range", "[0, 1]"),
        ("nan", "NaN"),
        ("missing", "does not exist"),
        ("corrupt", "not a numeric .npy array: it has no NumPy header"),
        ("corrupt_model", "not a readable"),
        ("unwritable", "cannot write"),
        ("extension", "must end in .npy"),
    ],
)
def test_sample_errors_exit_2(case, match, model_file, clean_npy, tmp_path, capsys):
    clean, model, out, iso, cam = str(clean_npy), str(model_file), str(tmp_path / "o.npy"), "800", "S6"
    if case == "camera":
        cam = "XX"
    elif case == "iso":
        iso = "801"
    elif case == "shape":
        np.save(tmp_path / "s.npy", np.zeros((3, 8, 8), np.float32))
        clean = str(tmp_path / "s.npy")
    elif case == "range":
        np.save(tmp_path / "r.npy", np.full((4, 8, 8), 1.5, np.float32))
        clean = str(tmp_path / "r.npy")
    elif case == "nan":
        np.save(tmp_path / "n.npy", np.full((4, 8, 8), np.nan, np.float32))
        clean = str(tmp_path / "n.npy")
    elif case == "missing":
        clean = str(tmp_path / "none.npy")
    elif case == "corrupt":
        (tmp_path / "c.npy").write_bytes(b"not numpy")
        clean = str(tmp_path / "c.npy")
    elif case == "corrupt_model":
        (tmp_path / "m.safetensors").write_bytes(b"\x00" * 40)
        model = str(tmp_path / "m.safetensors")
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        out = str(tmp_path / "file" / "sub" / "o.npy")
    elif case == "extension":
        out = str(tmp_path / "o.png")
    code = main(["noise", "sample", "--model", model, "--clean", clean, "--iso", iso, "--camera", cam,
                 "--out", out])
    assert code == 2
    assert match in _err(capsys)
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.slow
def test_train_resume_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["noise", "train", "--preset", "noiseflow_s_g_cam", "--run-dir", str(run), "--batch-size", "8",
            "--sim-train-images", "2", "--sim-test-images", "1", "--eval-batches", "1", "--no-progress",
            "--checkpoint-every", "2", "--lr", "1e-2"]
    assert main(base + ["--steps", "2"]) == 0
    assert main(base + ["--steps", "2"]) == 2  # refuses a non-empty run dir
    _err(capsys)
    assert main(base + ["--steps", "4", "--resume"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["step"] == 4 and np.isfinite(info["test_nll"])
    out = tmp_path / "ev"
    assert main(["noise", "eval", "--model", str(run), "--sim-train-images", "2", "--sim-test-images", "1",
                 "--batch-size", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Gaussian" in text and "Camera NLF" in text and "Heteroscedastic" in text and "run" in text
    assert (out / "results.json").is_file() and (out / "histograms.png").is_file()


def test_eval_errors(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["noise", "eval", "--model", str(tmp_path / "missing.safetensors")]) == 2
    _err(capsys)
    assert main(["noise", "eval", "--out", str(tmp_path / "f" / "x")]) == 2
    _err(capsys)
    assert main(["noise", "eval", "--data", str(tmp_path / "no_sidd")]) == 2
    _err(capsys)


def test_presets_listing(capsys):
    from visionflows.noise.model import PARAM_PRESETS, PRESETS

    assert main(["noise", "presets"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == [*PRESETS, *PARAM_PRESETS]  # the paper's presets, in order, then ours
    for r, (arch, _paper, count) in zip(rows, PRESETS.values()):
        assert r[-2:] == [str(count), arch], r
    assert rows[-1][-2:] == ["2417", PARAM_PRESETS["noiseflow_nlf"][0]]
