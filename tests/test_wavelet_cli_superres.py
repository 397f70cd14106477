"""`wavelet superres --images` (the SR table), `--anneal` on `sample` / `superres`, and `eval`'s codec reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from visionflows.cli.main import main
from visionflows.wavelet import create_model
from visionflows.wavelet.codecs import codec_bits_per_dim
from visionflows.wavelet.superres import block_mean_low_res, format_superres_table, superres_benchmark


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("wfsr")
    from visionflows.io import save_model

    torch.manual_seed(0)
    model = create_model("tiny_8")
    save_model(model, root / "tiny.safetensors")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):  # smooth photos, so SR baselines are meaningful
        base = rng.integers(0, 256, (3, 3, 3)).astype(np.float64)
        img = Image.fromarray(base.astype(np.uint8)).resize((20, 18), Image.BILINEAR)
        img.save(photos / f"p{k}.png")
    return root


def test_block_mean_low_res_is_rounded_block_average():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    low = block_mean_low_res(x, 2)
    assert low.dtype == torch.uint8 and low.shape == (1, 1, 2, 2)
    assert low.flatten().tolist() == [2, 4, 10, 12]  # means 2.5, 4.5, 10.5, 12.5 round half to even


def test_codec_reference_orders_noise_and_flat_images():
    flat = torch.full((2, 3, 16, 16), 128, dtype=torch.uint8)
    noise = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    f, n = codec_bits_per_dim(flat), codec_bits_per_dim(noise)
    assert set(f) == {"png", "webp_lossless"}
    assert all(f[k] < 2.0 for k in f)  # a constant image compresses to (almost) nothing
    assert all(n[k] > 7.5 for k in n)  # uniform noise cannot be compressed below 8 bits/dim (plus headers)
    with pytest.raises(Exception, match="uint8"):
        codec_bits_per_dim(noise.float())
    with pytest.raises(Exception, match="unknown codec"):
        codec_bits_per_dim(noise, ["jpeg"])


def test_superres_benchmark_table_and_figures(model_file, tmp_path):
    from visionflows.io import load_model

    model = load_model(model_file / "tiny.safetensors")
    imgs = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    res = superres_benchmark(model, imgs, tmp_path, factors=(2, 4), temperature=0.8, mean_of=2, seed=0)
    assert set(res["factors"]) == {"2", "4"}
    for table in res["factors"].values():
        assert {"box", "bicubic", "T=0 (mode)", "mean of 2 (T=1)", "sample T=0.8"} <= set(table)
        assert all(m["n"] == 3 and np.isfinite(m["psnr"]) for m in table.values())
    assert (tmp_path / "superres_x2.png").is_file() and (tmp_path / "superres_x4.png").is_file()
    assert json.loads((tmp_path / "superres_table.json").read_text())["images"] == 3
    assert "x2 PSNR" in format_superres_table(res)
    # the mode is deterministic: a second run gives the same numbers
    again = superres_benchmark(model, imgs, None, factors=(2,), temperature=0.8, mean_of=2, seed=5)
    assert again["factors"]["2"]["T=0 (mode)"]["psnr"] == res["factors"]["2"]["T=0 (mode)"]["psnr"]


def test_superres_folder_cli_with_anneal(model_file, tmp_path, capsys):
    out = tmp_path / "sr"
    rc = main(["wavelet", "superres", "--model", str(model_file / "tiny.safetensors"), "--images",
               str(model_file / "photos"), "--factors", "2,4", "--mean-of", "2", "--temperature", "0.8",
               "--out", str(out), "--anneal", "--anneal-steps", "4", "--anneal-adapt", "2", "--anneal-images", "2",
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "bicubic" in text and "annealed T=0.8" in text and "acceptance" in text
    res = json.loads((out / "superres_table.json").read_text())
    assert res["anneal_images"] == 2 and res["factors"]["4"]["annealed T=0.8"]["n"] == 2
    assert res["factors"]["4"]["bicubic (first 2)"]["n"] == 2


def test_sample_and_single_superres_with_anneal_report_stats(model_file, tmp_path, capsys):
    m = str(model_file / "tiny.safetensors")
    assert main(["wavelet", "sample", "--model", m, "--out", str(tmp_path / "s"), "--n", "2", "--temperature",
                 "0.9", "--anneal", "mala", "--anneal-steps", "3", "--anneal-adapt", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "annealed sampling (mala)" in text and "acceptance" in text
    img = model_file / "photos" / "p0.png"
    assert main(["wavelet", "superres", "--model", m, "--image", str(img), "--center-crop", "--factor", "2",
                 "--out", str(tmp_path / "one"), "--temperature", "0", "--n-samples", "3"]) == 0
    rep = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert rep["mode"] == "mode" and len(rep["samples"]) == 1  # T = 0 is one deterministic output
    assert main(["wavelet", "superres", "--model", m, "--image", str(img), "--center-crop", "--factor", "2",
                 "--out", str(tmp_path / "mean"), "--mean", "--n-samples", "3"]) == 0
    assert json.loads((tmp_path / "mean" / "metrics.json").read_text())["mode"] == "mean"


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--anneal", "--temperature", "0"], "needs --temperature > 0"),
        (["--anneal", "--anneal-steps", "0"], "must be an integer >= 1"),
        (["--anneal", "--anneal-steps", "nan"], "must be an integer"),
        (["--anneal", "--anneal-steps", "5", "--anneal-adapt", "5"], "--anneal-adapt 5 must be less than"),
        (["--anneal", "--step-size", "0"], "> 0"),
        (["--anneal", "--target-accept", "1"], "(0, 1)"),
        (["--anneal-steps", "5"], "--anneal is not given"),
        (["--anneal", "bogus"], "invalid choice"),
    ],
)
def test_bad_anneal_flags_exit_2(model_file, tmp_path, capsys, extra, match):
    rc = main(["wavelet", "sample", "--model", str(model_file / "tiny.safetensors"), "--out", str(tmp_path / "s"),
               "--n", "1", "--no-progress", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--factors", "3"], "power of two"),
        (["--factors", "16"], "--factors 16 is too large"),
        (["--images", "EMPTY"], "point --images at a folder"),
    ],
)
def test_bad_superres_folder_inputs_exit_2(model_file, tmp_path, capsys, extra, match):
    (tmp_path / "empty").mkdir()
    args = ["wavelet", "superres", "--model", str(model_file / "tiny.safetensors"), "--out", str(tmp_path / "o")]
    if "--images" not in extra:
        args += ["--images", str(model_file / "photos")]
    args += [str(tmp_path / "empty") if a == "EMPTY" else a for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_eval_prints_codec_reference(model_file, tmp_path, capsys):
    rc = main(["wavelet", "eval", "--model", str(model_file / "tiny.safetensors"), "--data",
               str(model_file / "photos"), "--json", str(tmp_path / "e.json")])
    assert rc == 0
    assert "webp_lossless" in capsys.readouterr().out
    res = json.loads((tmp_path / "e.json").read_text())
    assert set(res["codecs"]) == {"png", "webp_lossless"}
    assert main(["wavelet", "eval", "--model", str(model_file / "tiny.safetensors"), "--data",
                 str(model_file / "photos"), "--no-codecs"]) == 0
    assert "webp" not in capsys.readouterr().out
