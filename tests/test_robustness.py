"""The robustness sweep (issue 14) kept as tests: every bad input a clear error, nothing left behind.

Each case of :data:`CASES` runs one command in-process in a fresh folder and asserts, for an error case: exit
status 2, a first stderr line ``visionflows: error: … Fix: …`` (one error line; any further line a
``visionflows: warning:``), no traceback, and no new file or folder anywhere in that folder. Clean cases
(exit 0) keep the things that work working. Run-directory life cycle tests (lock, resume semantics, stale
temporaries, failed starts, umask) follow; the two-writer and Ctrl-C tests use subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionflows.cli.main import main
from visionflows.errors import CheckpointError, ConfigError
from visionflows.io import save_model
from visionflows.training import TrainConfig, find_checkpoints, train

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "train_tiny_glow.py"
LONG = "n" * 300

# ------------------------------------------------------------------------------------------------ assets


def _png_header(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels (no pixel data): a decompression bomb for a naive loader."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def _nan(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        t = next(t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point())
        t.view(-1)[0] = float("nan")
    return model


def _pairs(folder: Path, n: int = 4, size: int = 40, stem: str = "cam_iso100_{k}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        clean = rng.integers(40, 200, (size, size, 3)).astype(np.uint8)
        noisy = np.clip(clean + rng.normal(0, 4, clean.shape).round(), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / f"{stem.format(k=k)}_clean.png")
        Image.fromarray(noisy).save(folder / f"{stem.format(k=k)}_noisy.png")
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    from visionflows.denoise.dncnn import DnCNN
    from visionflows.glow import Glow
    from visionflows.noise import create_model as noise_model
    from visionflows.noise.srgb import SRGBGaussianNoise
    from visionflows.wavelet import create_model as wavelet_model

    d = tmp_path_factory.mktemp("assets")
    a: dict[str, Path] = {}
    torch.manual_seed(0)
    for name, build in {
        "noiseflow": lambda: noise_model("noiseflow"),
        "noiseflow_nlf": lambda: noise_model("noiseflow_nlf"),
        "srgb": lambda: SRGBGaussianNoise(4.0),
        "dncnn": lambda: DnCNN(depth=3, width=4, domain="raw"),
        "dncnn_srgb": lambda: DnCNN(depth=3, width=4, domain="srgb"),
        "wavelet": lambda: wavelet_model("tiny_8"),
        "glow": lambda: Glow(3, 8, 2, 1, 8),
    }.items():
        a[name] = save_model(build(), d / f"{name}.safetensors")
        a[f"{name}_nan"] = save_model(_nan(build()), d / f"{name}_nan.safetensors")
    run = d / "dncnn_run" / "checkpoints" / "step-00000001"
    run.mkdir(parents=True)
    save_model(DnCNN(depth=3, width=4), run / "model.safetensors")
    a["dncnn_run"] = d / "dncnn_run"
    np.save(d / "clean.npy", np.full((4, 8, 8), 0.3, np.float32))
    a["clean"] = d / "clean.npy"
    np.save(d / "own.npy", np.full((4, 8, 8), 0.3, np.float32))  # an input that an --out must not overwrite
    a["own_npy"] = d / "own.npy"
    (d / "empty.npy").write_bytes(b"")
    a["empty_npy"] = d / "empty.npy"
    for name, shape in (("h0", (4, 0, 8)), ("b0", (0, 4, 8, 8))):
        np.save(d / f"{name}.npy", np.zeros(shape, np.float32))
        a[name] = d / f"{name}.npy"
    np.save(d / "nan.npy", np.full((4, 8, 8), np.nan, np.float32))
    a["nan_npy"] = d / "nan.npy"
    for name, values in (("dn", np.linspace(64, 1023, 256)), ("negative", np.full(256, -1.0)),
                         ("unclipped", np.linspace(-0.05, 1.05, 256))):  # DN, all negative, noisy past [0, 1]
        np.save(d / f"{name}.npy", values.reshape(4, 8, 8).astype(np.float32))
        a[f"{name}_npy"] = d / f"{name}.npy"
    (d / "empty.npz").write_bytes(b"")
    a["empty_npz"] = d / "empty.npz"
    for suffix in (".npy", ".npz"):  # a text file renamed, and arrays of Python objects
        (d / f"text{suffix}").write_text("hello, not an array\n")
        a[f"text_{suffix[1:]}"] = d / f"text{suffix}"
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    a["objects_npy"] = d / "objects.npy"
    np.savez(d / "objects.npz", data=np.array([{"a": 1}], dtype=object))
    a["objects_npz"] = d / "objects.npz"
    a["bomb"] = _png_header(d / "bomb.png", 100_000, 100_000)
    (d / "bombs").mkdir()
    _png_header(d / "bombs" / "bomb.png", 100_000, 100_000)
    a["bombs"] = d / "bombs"
    (d / "corrupt").mkdir()
    for k in range(10):
        (d / "corrupt" / f"bad{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    a["corrupt"] = d / "corrupt"
    (d / "imgs").mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)).save(d / "imgs" / f"{k}.png")
    Image.fromarray((rng.integers(0, 256, (16, 16)) * 257).astype(np.uint16)).save(d / "imgs" / "g16.png")
    a["imgs"] = d / "imgs"
    a["gt"] = d / "imgs" / "0.png"
    a["pairs"] = _pairs(d / "pairs")
    a["nocam"] = _pairs(d / "nocam", stem="{k}")  # no camera labels in the names
    a["one_pair"] = _pairs(d / "one_pair", n=1)
    a["unpaired"] = _pairs(d / "unpaired")
    (d / "unpaired" / "cam_iso100_0_noisy.png").rename(d / "unpaired" / "orphan_iso100_9_noisy.png")
    a["twocams"] = _pairs(d / "twocams", n=3, stem="cama_iso100_{k}")
    _pairs(d / "twocams", n=3, stem="camb_iso100_{k}")
    from visionflows.noise.srgb import SRGBNoiseFlow

    a["srgbflow"] = save_model(SRGBNoiseFlow(cameras=["camb"], isos=[100], noise_std=3.0), d / "srgbflow.safetensors")
    for name, text in (("cfg_two", '{"steps": "two"}'), ("cfg_list", "[1, 2]"), ("cfg_key", '{"learning_rate": 1}'),
                       ("cfg_nan", '{"lr": NaN}'), ("cfg_bad", "{not json")):
        (d / f"{name}.json").write_text(text)
        a[name] = d / f"{name}.json"
    (d / "a_folder").mkdir()
    a["folder"] = d / "a_folder"
    (d / "a_file").write_text("x")
    a["file"] = d / "a_file"
    return {k: str(v) for k, v in a.items()}


# ------------------------------------------------------------------------------------------------ the cases
NOISE_TRAIN = ["noise", "train", "--run-dir", "{out}/run", "--sim-train-images", "1", "--sim-test-images", "1",
               "--steps", "1", "--batch-size", "4", "--no-progress"]
TRAIN_CMDS = {
    "noise": NOISE_TRAIN,
    "srgb-noise": ["srgb-noise", "train", "--data", "{pairs}", "--run-dir", "{out}/run", "--steps", "1", "--patch",
                   "8", "--batch-size", "2", "--no-progress"],
    "denoise": ["denoise", "train", "--noise", "gaussian", "--run-dir", "{out}/run", "--steps", "1", "--depth", "3",
                "--width", "4", "--batch-size", "2", "--n-train-images", "1", "--no-progress"],
    "wavelet": ["wavelet", "train", "--preset", "tiny_8", "--level", "0", "--data", "{imgs}", "--run-dir",
                "{out}/run", "--steps", "1", "--batch-size", "2", "--no-progress"],
    "glow": ["glow", "train", "--data", "{imgs}", "--resolution", "8", "--levels", "2", "--flow-steps", "1",
             "--width", "8", "--run-dir", "{out}/run", "--steps", "1", "--batch-size", "2", "--no-progress"],
}
SHARED_BAD = [("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--grad-clip", "-1"), ("--ema-decay", "5"),
              ("--threads", "0"), ("--max-minutes", "-1"), ("--warmup-steps", "-5"), ("--batch-size", "0"),
              ("--steps", "-1"), ("--steps", "two"), ("--seed", "-3"), ("--checkpoint-every", "0"),
              ("--device", "bogus"), ("--amp", "fp8")]
SAMPLE = ["noise", "sample", "--model", "{noiseflow}", "--clean", "{clean}", "--iso", "100", "--camera", "IP",
          "--out", "{out}/noisy.npy"]
NOISE_EVAL = ["noise", "eval", "--sim-train-images", "1", "--sim-test-images", "1"]
SRGB_EVAL = ["srgb-noise", "eval", "--data", "{pairs}", "--out", "{out}/ev", "--patch", "8"]
DEN_EVAL = ["denoise", "eval", "--model", "{dncnn}", "--out", "{out}/ev", "--n-test-images", "1"]
DEN_EXP = ["denoise", "experiment", "--out", "{out}/x", "--steps", "1", "--flow-steps", "1", "--n-train-images", "1",
           "--n-test-images", "1"]
SRGB_ADAPT = ["srgb-noise", "adapt", "--data", "{twocams}", "--model", "{srgbflow}", "--camera", "cama", "--k", "1",
              "--out", "{out}/a.safetensors", "--adapt-steps", "1", "--batch-size", "2", "--patch", "8"]
SRGB_STUDY = ["srgb-noise", "cameras", "--data", "{twocams}", "--out", "{out}/sc", "--flow-steps", "1", "--folds", "1",
              "--adapt-steps", "1", "--patch", "8", "--k", "1"]
SRGB_XH = ["srgb-noise", "experiment", "--data", "{twocams}", "--out", "{out}/x", "--holdout-camera", "all",
           "--flow-steps", "1", "--denoise-steps", "1", "--patch", "8", "--batch-size", "2", "--no-progress"]
SIM = ["noise", "simulate", "--clean", "{clean}", "--camera", "S6", "--iso", "800", "--out", "{out}/p.npy"]
W_EVAL = ["wavelet", "eval", "--model", "{wavelet}", "--data", "{imgs}"]
W_SAMPLE = ["wavelet", "sample", "--model", "{wavelet}", "--out", "{out}/s"]
W_SUPER = ["wavelet", "superres", "--model", "{wavelet}", "--image", "{gt}", "--out", "{out}/sr", "--factor", "2",
           "--n-samples", "1"]
W_SUPER_DIR = ["wavelet", "superres", "--model", "{wavelet}", "--images", "{imgs}", "--out", "{out}/sr", "--factors",
               "2", "--mean-of", "1", "--max-images", "2"]


def _cases() -> list:
    c = []

    def err(cid: str, argv: list[str], match: str = "", marks=()):
        c.append(pytest.param(argv, 2, match, id=cid, marks=marks))

    def ok(cid: str, argv: list[str], match: str = "", marks=()):
        c.append(pytest.param(argv, 0, match, id=cid, marks=marks))

    # hyper-parameters: the same shared flags, the same checks, in every train command
    for cmd, base in TRAIN_CMDS.items():
        for flag, value in SHARED_BAD:
            err(f"{cmd}-train{flag}={value}", base + [flag, value], flag)
    no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only machine")
    err("noise-train--device=cuda-cpu-only", NOISE_TRAIN + ["--device", "cuda"], "CUDA", marks=no_cuda)
    err("noise-train--device=cuda:7", NOISE_TRAIN + ["--device", "cuda:7"], "--device", marks=no_cuda)
    err("config-steps-two", NOISE_TRAIN + ["--config", "{cfg_two}"], "steps")
    err("config-json-list", NOISE_TRAIN + ["--config", "{cfg_list}"], "JSON list")
    err("config-unknown-key", NOISE_TRAIN + ["--config", "{cfg_key}"], "learning_rate")
    err("config-nan-lr", NOISE_TRAIN + ["--config", "{cfg_nan}"], "lr")
    err("config-not-json", NOISE_TRAIN + ["--config", "{cfg_bad}"], "cfg_bad.json")
    err("config-missing", NOISE_TRAIN + ["--config", "{out}/nope.json"], "does not exist")
    err("config-is-folder", NOISE_TRAIN + ["--config", "{folder}"], "is a folder")
    err("glow-config-list", TRAIN_CMDS["glow"] + ["--config", "{cfg_list}"], "JSON list")
    err("wavelet-config-two", TRAIN_CMDS["wavelet"] + ["--config", "{cfg_two}"], "steps")
    err("resume-and-overwrite", NOISE_TRAIN + ["--resume", "--overwrite"], "--resume")
    err("resume-missing-dir", NOISE_TRAIN + ["--resume"], "does not exist")
    err("run-dir-is-file", ["noise", "train", "--run-dir", "{file}", "--steps", "1"], "existing file")
    err("run-dir-long-name", ["noise", "train", "--run-dir", "{out}/" + LONG, "--steps", "1"], "bytes long")
    err("noise-train-unknown-flag", NOISE_TRAIN + ["--bogus", "1"], "unrecognized")
    err("noise-train-no-run-dir", ["noise", "train", "--steps", "1"], "--run-dir")
    err("noise-train-missing-value", NOISE_TRAIN + ["--lr"], "--lr")
    err("noise-train-bad-preset", NOISE_TRAIN + ["--preset", "nope"], "nope")
    err("noise-train-sim-images-0", NOISE_TRAIN + ["--sim-train-images", "0"], "--sim-train-images")
    err("noise-train-eval-batches-0", NOISE_TRAIN + ["--eval-batches", "0"], "--eval-batches")
    err("noise-train-data-missing", NOISE_TRAIN + ["--data", "{out}/nosidd"], "does not exist")
    err("noise-train-data-is-file", NOISE_TRAIN + ["--data", "{file}"], "is a file")
    # wavelet train
    wt = TRAIN_CMDS["wavelet"]
    err("wavelet-train-parallel-0", wt[:5] + ["all", "--parallel", "0"] + wt[6:], "--parallel")
    err("wavelet-train-one-level-parallel-2", wt + ["--parallel", "2"], "--level 0 trains one level")
    err("wavelet-train-level-abc", wt[:5] + ["abc"] + wt[6:], "--level")
    err("wavelet-train-level-9", wt[:5] + ["9"] + wt[6:], "outside")
    err("wavelet-train-level--1", wt[:5] + ["-1"] + wt[6:], "--level")
    err("wavelet-train-warmup-alias--1", wt + ["--warmup", "-1"], "--warmup")
    err("wavelet-train-channels-2", wt + ["--channels", "2"], "--channels")
    err("wavelet-train-bad-preset", ["wavelet", "train", "--preset", "nope", "--level", "0"], "nope")
    err("wavelet-train-corrupt-folder", wt[:7] + ["{corrupt}"] + wt[8:], "none of the 10")
    err("wavelet-train-corrupt-folder-stop", wt[:7] + ["{corrupt}"] + wt[8:] + ["--on-error", "stop"], "bad0.png")
    err("wavelet-train-bomb-folder", wt[:7] + ["{bombs}"] + wt[8:], "VISIONFLOWS_MAX_IMAGE_PIXELS")
    err("wavelet-train-empty-npz", wt[:7] + ["{empty_npz}"] + wt[8:], "empty.npz")
    err("wavelet-train-data-missing", wt[:7] + ["{out}/nodata"] + wt[8:], "does not exist")
    # denoise train
    dt = TRAIN_CMDS["denoise"]
    for flag, value in (("--sigma", "-5"), ("--sigma", "nan"), ("--sigma", "0"), ("--temperature", "-1"),
                        ("--temperature", "nan"), ("--temperature", "1e30"), ("--depth", "2"), ("--width", "0"),
                        ("--patch", "1"), ("--n-train-images", "0"), ("--test-fraction", "1.5")):
        err(f"denoise-train{flag}={value}", dt + [flag, value], flag)
    err("denoise-train-noise-bogus", dt[:3] + ["bogus"] + dt[4:], "bogus")
    err("denoise-train-noise-nan-model", dt[:3] + ["{noiseflow_nan}"] + dt[4:], "NaN")
    err("denoise-train-noise-srgb-on-raw", dt[:3] + ["{srgb}"] + dt[4:], "srgb domain")
    err("denoise-train-noise-is-denoiser", dt[:3] + ["{dncnn}"] + dt[4:], "DnCNN")
    err("denoise-train-nlf-on-srgb", dt[:3] + ["nlf"] + dt[4:] + ["--data", "{pairs}"], "raw data only")
    err("denoise-train-data-missing", dt + ["--data", "{out}/nodata"], "does not exist")
    # denoise eval / experiment
    err("denoise-eval-crop--5", DEN_EVAL + ["--crop", "-5"], "--crop")
    err("denoise-eval-nan-model", ["denoise", "eval", "--model", "{dncnn_nan}"] + DEN_EVAL[4:], "NaN")
    err("denoise-eval-noise-model", ["denoise", "eval", "--model", "{noiseflow}"] + DEN_EVAL[4:], "not a DnCNN")
    err("denoise-eval-srgb-denoiser-on-raw", ["denoise", "eval", "--model", "{dncnn_srgb}"] + DEN_EVAL[4:], "srgb")
    err("denoise-eval-missing-model", ["denoise", "eval", "--model", "{out}/m.safetensors"] + DEN_EVAL[4:],
        "does not exist")
    err("denoise-eval-out-is-file", DEN_EVAL[:4] + ["--out", "{file}", "--n-test-images", "1"], "existing file")
    err("denoise-eval-n-test-0", DEN_EVAL[:-1] + ["0"], "--n-test-images")
    err("denoise-experiment-dncnn-run-dir", DEN_EXP + ["--noise-flow", "{dncnn_run}"], "not a raw noise model")
    err("denoise-experiment-missing-flow", DEN_EXP + ["--noise-flow", "{out}/nf.safetensors"], "does not exist")
    err("denoise-experiment-nan-flow", DEN_EXP + ["--noise-flow", "{noiseflow_nan}"], "NaN")
    err("denoise-experiment-steps-0", DEN_EXP + ["--steps", "0"], "--steps")
    # noise sample
    err("noise-sample-nan-model", SAMPLE[:3] + ["{noiseflow_nan}"] + SAMPLE[4:], "NaN")
    err("noise-sample-srgb-model", SAMPLE[:3] + ["{srgb}"] + SAMPLE[4:], "not a raw noise model")
    err("noise-sample-denoiser", SAMPLE[:3] + ["{dncnn}"] + SAMPLE[4:], "not a raw noise model")
    err("noise-sample-missing-model", SAMPLE[:3] + ["{out}/m.safetensors"] + SAMPLE[4:], "does not exist")
    err("noise-sample-empty-npy", SAMPLE[:5] + ["{empty_npy}"] + SAMPLE[6:], "0 bytes")
    err("noise-sample-h0", SAMPLE[:5] + ["{h0}"] + SAMPLE[6:], "no pixels")
    err("noise-sample-b0", SAMPLE[:5] + ["{b0}"] + SAMPLE[6:], "no pixels")
    err("noise-sample-nan-clean", SAMPLE[:5] + ["{nan_npy}"] + SAMPLE[6:], "NaN")
    err("noise-sample-clean-folder", SAMPLE[:5] + ["{folder}"] + SAMPLE[6:], "is a folder")
    err("noise-sample-clean-missing", SAMPLE[:5] + ["{out}/c.npy"] + SAMPLE[6:], "does not exist")
    err("noise-sample-out-is-dir", SAMPLE[:-1] + ["{folder}"], "existing folder")
    err("noise-sample-out-long-name", SAMPLE[:-1] + ["{out}/" + LONG + ".npy"], "bytes long")
    err("noise-sample-out-wrong-suffix", SAMPLE[:-1] + ["{out}/noisy.png"], ".npy")
    err("noise-sample-out-under-file", SAMPLE[:-1] + ["{file}/x.npy"], "not a folder")
    for value in ("-1", "nan", "1e30"):
        err(f"noise-sample-temperature={value}", SAMPLE + ["--temperature", value], "--temperature")
    err("noise-sample-iso-0", SAMPLE[:7] + ["0"] + SAMPLE[8:], "--iso")
    err("noise-sample-bad-camera", SAMPLE[:9] + ["XX"] + SAMPLE[10:], "XX")
    nlf_sample = SAMPLE[:3] + ["{noiseflow_nlf}"] + SAMPLE[4:]
    err("noise-sample-nlf-negative-read-variance", nlf_sample + ["--nlf-params=0.001,-1"],
        "every read variance O must be >= 0")
    err("noise-sample-nlf-zero-variance", nlf_sample + ["--nlf-params=1e-4,1e-6,0,0,1e-4,1e-6"], "both 0")
    err("noise-sample-nlf-nan", nlf_sample + ["--nlf-params=1e-4,nan"], "finite")
    err("noise-sample-nlf-space-form-negative", nlf_sample + ["--nlf-params", "-1,-1"], "every S >= 0")
    err("missing-value-negative-hint", NOISE_TRAIN + ["--lr", "-1e-3"], "needs the '=' form, e.g. --lr=-1")
    # noise eval / import
    err("noise-eval-srgb-model", NOISE_EVAL + ["--model", "{srgb}"], "not a raw noise model")
    err("noise-eval-nan-model", NOISE_EVAL + ["--model", "{noiseflow_nan}"], "NaN")
    err("noise-eval-batch-size-0", NOISE_EVAL + ["--batch-size", "0"], "--batch-size")
    err("noise-eval-max-batches-0", NOISE_EVAL + ["--max-batches", "0"], "--max-batches")
    err("noise-eval-out-is-file", NOISE_EVAL + ["--out", "{file}"], "existing file")
    err("noise-eval-data-missing", NOISE_EVAL + ["--data", "{out}/nosidd"], "does not exist")
    err("noise-import-missing", ["noise", "import-official", "{out}/ckpt", "--out", "{out}/o.safetensors"], "")
    err("noise-import-out-is-dir", ["noise", "import-official", "{out}", "--out", "{folder}"], "existing folder")
    err("noise-import-out-wrong-suffix", ["noise", "import-official", "{out}", "--out", "{out}/i6.pt"],
        "must end in .safetensors")
    # srgb-noise eval
    err("srgb-eval-nan-model", SRGB_EVAL + ["--model", "{srgb_nan}"], "NaN")
    err("srgb-eval-raw-model", SRGB_EVAL + ["--model", "{noiseflow}"], "not an sRGB noise model")
    err("srgb-eval-max-patches-0", SRGB_EVAL + ["--max-patches", "0"], "--max-patches")
    err("srgb-eval-patch-1", SRGB_EVAL + ["--patch", "1"], "--patch")
    err("srgb-eval-test-fraction-1", SRGB_EVAL + ["--test-fraction", "1"], "--test-fraction")
    err("srgb-eval-data-missing", ["srgb-noise", "eval", "--data", "{out}/p", "--out", "{out}/ev"], "does not exist")
    err("srgb-eval-data-is-file", ["srgb-noise", "eval", "--data", "{file}", "--out", "{out}/ev"], "is a file")
    err("srgb-eval-nothing", SRGB_EVAL + ["--no-baselines"], "nothing to evaluate")
    err("srgb-train-resume-missing", TRAIN_CMDS["srgb-noise"] + ["--resume"], "does not exist")
    err("srgb-experiment-out-is-file", ["srgb-noise", "experiment", "--data", "{pairs}", "--out", "{file}"],
        "existing file")
    # wavelet eval / sample / superres
    err("wavelet-eval-max-images-0", W_EVAL + ["--max-images", "0"], "--max-images")
    err("wavelet-eval-batch-size-0", W_EVAL + ["--batch-size", "0"], "--batch-size")
    err("wavelet-eval-json-is-dir", W_EVAL + ["--json", "{folder}"], "existing folder")
    err("wavelet-eval-save-model-is-dir", W_EVAL + ["--save-model", "{folder}"], "existing folder")
    err("wavelet-eval-save-model-wrong-suffix", W_EVAL + ["--save-model", "{out}/m.pt"], "must end in .safetensors")
    err("wavelet-eval-json-long-name", W_EVAL + ["--json", "{out}/" + LONG + ".json"], "bytes long")
    err("wavelet-eval-nan-model", ["wavelet", "eval", "--model", "{wavelet_nan}", "--data", "{imgs}"], "NaN")
    err("wavelet-eval-glow-model", ["wavelet", "eval", "--model", "{glow}", "--data", "{imgs}"], "not a full Wavelet")
    err("wavelet-eval-run-dir-missing", ["wavelet", "eval", "--run-dir", "{out}/r"], "does not exist")
    err("wavelet-eval-run-dir-is-file", ["wavelet", "eval", "--run-dir", "{file}"], "is a file")
    err("wavelet-eval-both-sources", W_EVAL + ["--run-dir", "{out}"], "not allowed")
    for flag, value in (("--n", "0"), ("--n", "-4"), ("--temperature", "-1"), ("--temperature", "nan"),
                        ("--temperature", "1e30"), ("--seed", "-1")):
        err(f"wavelet-sample{flag}={value}", W_SAMPLE + [flag, value], flag)
    err("wavelet-sample-out-is-file", W_SAMPLE[:-1] + ["{file}"], "existing file")
    for flag, value in (("--n-samples", "0"), ("--factor", "3"), ("--factor", "1"), ("--factor", "8"),
                        ("--temperature", "nan")):
        err(f"wavelet-superres{flag}={value}", W_SUPER + [flag, value], "--factor" if flag == "--factor" else flag)
    anneal = ["--anneal", "--temperature", "0.5"]
    err("wavelet-sample-anneal-adapt-above-steps", W_SAMPLE + anneal + ["--anneal-steps", "3", "--anneal-adapt", "5"],
        "--anneal-adapt 5 must be less than --anneal-steps 3")
    err("wavelet-superres-anneal-adapt-above-default-steps", W_SUPER + anneal + ["--anneal-adapt", "50"],
        "--anneal-adapt 50 must be less than the default --anneal-steps 40")
    err("wavelet-superres-image-missing", W_SUPER[:5] + ["{out}/x.png"] + W_SUPER[6:], "does not exist")
    err("wavelet-superres-image-folder", W_SUPER[:5] + ["{folder}"] + W_SUPER[6:], "is a folder")
    err("wavelet-superres-image-bomb", W_SUPER[:5] + ["{bomb}"] + W_SUPER[6:], "VISIONFLOWS_MAX_IMAGE_PIXELS")
    # a flag of the other superres mode would be ignored
    err("wavelet-superres-images-factor", W_SUPER_DIR + ["--factor", "2"], "--factor applies to superres --image only")
    err("wavelet-superres-images-n-samples-mean", W_SUPER_DIR + ["--n-samples", "2", "--mean"],
        "--n-samples, --mean apply to superres --image only")
    err("wavelet-superres-image-factors", W_SUPER + ["--factors", "2"], "--factors applies to superres --images only")
    err("wavelet-superres-image-max-images", W_SUPER + ["--max-images", "2"], "--max-images applies")
    err("wavelet-superres-images-anneal-images-no-anneal", W_SUPER_DIR + ["--anneal-images", "1"],
        "--anneal is not given")
    # glow
    gt = TRAIN_CMDS["glow"]
    err("glow-train-levels-0", gt + ["--levels", "0"], "--levels")
    err("glow-train-resolution-12-levels-3", gt + ["--resolution", "12", "--levels", "3"], "divisible")
    err("glow-train-channels-2", gt + ["--channels", "2"], "--channels")
    err("glow-train-data-missing", gt[:3] + ["{out}/nodata"] + gt[4:], "does not exist")
    err("glow-train-bomb-folder", gt[:3] + ["{bombs}"] + gt[4:], "VISIONFLOWS_MAX_IMAGE_PIXELS")
    err("glow-eval-wavelet-model", ["glow", "eval", "--model", "{wavelet}", "--data", "{imgs}"], "not a Glow")
    err("glow-eval-nan-model", ["glow", "eval", "--model", "{glow_nan}", "--data", "{imgs}"], "NaN")
    # demo
    err("demo-run-dir-is-file", ["demo", "--quick", "--run-dir", "{file}"], "existing file")
    err("demo-run-dir-not-empty", ["demo", "--quick", "--run-dir", "{assets}"], "not empty")
    err("demo-official-ckpt-missing", ["demo", "--quick", "--run-dir", "{out}/d", "--official-ckpt", "{out}/ck"],
        "does not exist")
    err("demo-official-ckpt-folder", ["demo", "--quick", "--run-dir", "{out}/d", "--official-ckpt", "{folder}"], "")
    # noise render: several images go into a folder --out
    render2 = ["noise", "render", "{clean}", "{assets}/clean.npy", "--camera", "S6", "--out"]
    err("noise-render-many-out-under-file", render2 + ["{file}/sub"], "not a folder")
    err("noise-render-many-out-is-file", render2 + ["{file}"], "is a file")
    err("noise-render-many-out-png", render2 + ["{out}/r11.png"], "names a PNG file")
    # packed raw must be normalised: noise sample / adapt / simulate / render share the check
    for name in ("dn_npy", "negative_npy"):
        key = "{" + name + "}"
        err(f"noise-sample-{name}", SAMPLE[:5] + [key] + SAMPLE[6:], "clean values must lie in [0, 1]")
        err(f"noise-simulate-{name}", SIM[:3] + [key] + SIM[4:], "clean values must lie in [0, 1]")
        err(f"noise-render-{name}", ["noise", "render", key, "--camera", "S6", "--out", "{out}/r.png"],
            "raw values must lie in [0, 1]")
    # an --out that names the input file would overwrite it
    err("noise-simulate-out-is-clean", SIM[:3] + ["{own_npy}"] + SIM[4:-1] + ["{own_npy}"], "same file as --clean")
    err("noise-simulate-out-is-clean-other-spelling", SIM[:3] + ["{own_npy}"] + SIM[4:-1] + ["{assets}/./own.npy"],
        "same file as --clean")
    err("noise-sample-out-is-clean", SAMPLE[:5] + ["{own_npy}"] + SAMPLE[6:-1] + ["{own_npy}"], "same file as --clean")
    # denoise train/eval take --on-error like srgb-noise (the error suggests it)
    den_srgb_eval = ["denoise", "eval", "--model", "{dncnn_srgb}", "--out", "{out}/ev", "--data", "{unpaired}"]
    err("denoise-train-unpaired-folder", dt + ["--data", "{unpaired}"], "--on-error skip")
    err("denoise-eval-unpaired-folder", den_srgb_eval, "--on-error skip")
    skip_warning = pytest.mark.filterwarnings("ignore:skipped 2 file")
    ok("denoise-train-unpaired-folder-skip", dt + ["--data", "{unpaired}", "--on-error", "skip", "--patch", "8"],
       "trained 1 steps", marks=skip_warning)
    ok("denoise-eval-unpaired-folder-skip", den_srgb_eval + ["--on-error", "skip"], "psnr", marks=skip_warning)
    err("denoise-train-patch-larger-than-simulated-images", dt + ["--patch", "5000"],
        "as large as the patch size 5000")
    # a test fraction that leaves nothing to train on is named as the cause
    st = TRAIN_CMDS["srgb-noise"]
    err("srgb-train-test-fraction-0.999", st + ["--test-fraction", "0.999"], "a test fraction of 0.999 leaves none")
    err("srgb-experiment-test-fraction-0.999", ["srgb-noise", "experiment", "--data", "{pairs}", "--out", "{out}/x",
                                                "--test-fraction", "0.999"], "a test fraction of 0.999 leaves none")
    err("srgb-train-one-pair", st[:3] + ["{one_pair}"] + st[4:], "every camera/ISO group has a single image")
    # each model flag is named in its own errors
    xh_cama = SRGB_XH[:7] + ["cama"] + SRGB_XH[8:]
    err("srgb-experiment-noise-flow-missing", xh_cama + ["--noise-flow", "{out}/nope"], "error: --noise-flow")
    err("srgb-experiment-noise-flow-raw-model", xh_cama + ["--noise-flow", "{noiseflow}"], "error: --noise-flow")
    err("srgb-adapt-out-is-dir", SRGB_ADAPT[:11] + ["{folder}"] + SRGB_ADAPT[12:], "existing folder")
    err("srgb-adapt-out-wrong-suffix", SRGB_ADAPT[:11] + ["{out}/sa7.npy"] + SRGB_ADAPT[12:],
        "must end in .safetensors")
    # sRGB patch sizes larger than the images: checked before any patch is allocated
    err("srgb-train-patch-larger-than-images", st + ["--patch", "5000"], "--patch 5000 is larger than image")
    err("srgb-experiment-patch-larger-than-images", ["srgb-noise", "experiment", "--data", "{pairs}", "--out",
                                                     "{out}/x", "--patch", "5000"], "--patch 5000 is larger")
    err("srgb-adapt-patch-larger-than-tiles", SRGB_ADAPT + ["--patch", "50"], "--patch 50 is larger")
    # the leave-one-camera-out study / eval: checked up front (camera labels, k against the pool), nothing written
    err("srgb-cameras-no-camera-labels", SRGB_STUDY[:3] + ["{nocam}"] + SRGB_STUDY[4:], "has a camera label")
    err("srgb-cameras-k-above-pool", SRGB_STUDY + ["--camera", "cama", "--k", "50"],
        "--k 50 but camera cama has 1 pair(s)")
    err("srgb-cameras-patch-larger-than-images", SRGB_STUDY + ["--patch", "5000"], "--patch 5000 is larger")
    err("srgb-cameras-patch-larger-than-tile", SRGB_STUDY + ["--tile", "16", "--patch", "32"],
        "--patch 32 is larger than --tile 16")
    err("srgb-cameras-unknown-camera", SRGB_STUDY + ["--camera", "nope"], "no pairs of camera 'nope'")
    err("srgb-eval-holdout-k-above-pool", ["srgb-noise", "eval", "--data", "{twocams}", "--model", "{srgbflow}",
                                           "--holdout-camera", "cama", "--k", "100", "--out", "{out}/ev", "--patch",
                                           "8"], "--k 100 but camera cama has 1 pair(s)")
    err("srgb-experiment-holdout-all-no-camera-labels", SRGB_XH[:3] + ["{nocam}"] + SRGB_XH[4:],
        "has a camera label")
    err("srgb-experiment-holdout-patch-larger-than-images", SRGB_XH + ["--patch", "5000"], "--patch 5000 is larger")
    # ... and the clean ones stay clean
    ok("noise-sample-ok", SAMPLE, "noise_std")
    ok("noise-sample-temperature-0", SAMPLE + ["--temperature", "0"], "noise_std")
    ok("noise-sample-nlf-ok", SAMPLE[:3] + ["{noiseflow_nlf}"] + SAMPLE[4:] + ["--nlf-params", "2e-4,1e-6"],
       '"nlf_source": "--nlf-params"')
    ok("noise-presets", ["noise", "presets"], "noiseflow")
    ok("wavelet-presets", ["wavelet", "presets"], "tiny_8")
    ok("wavelet-sample-ok", W_SAMPLE + ["--n", "2"], "")
    ok("wavelet-eval-json-ok", W_EVAL + ["--json", "{out}/r.json", "--max-images", "2"], "total bits/dim")
    ok("wavelet-superres-ok", W_SUPER, "bicubic")
    ok("wavelet-superres-images-ok", W_SUPER_DIR, "bicubic")
    ok("glow-train-16bit-folder-ok", gt, "step")
    ok("wavelet-train-warmup-alias-ok", wt + ["--warmup", "1"], "level 0")
    ok("denoise-train-ok", dt, "trained 1 steps")
    ok("srgb-adapt-ok", SRGB_ADAPT, '"k": 1')
    ok("srgb-cameras-whole-pairs-ok", SRGB_STUDY + ["--camera", "cama", "--tile", "0"],
       "k = number of whole-image pairs")
    ok("noise-simulate-ok", SIM, "noise_std")
    ok("noise-render-unclipped-noisy-ok", ["noise", "render", "{unclipped_npy}", "--camera", "S6", "--out",
                                           "{out}/r.png"], "gain")
    ok("glow-eval-ok", ["glow", "eval", "--model", "{glow}", "--data", "{imgs}"], "bits_per_dim")
    return c


CASES = _cases()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _fill(argv: list[str], assets: dict[str, str], out: Path) -> list[str]:
    keys = {**assets, "out": str(out), "assets": str(Path(assets["clean"]).parent)}
    return [a.format(**keys) for a in argv]


def check_clean_error(code: int, err: str) -> None:
    """Exit 2, one `visionflows: error: … Fix: …` line first, further lines only warnings, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("visionflows: error: ") and " Fix: " in lines[0], err
    assert all(ln.startswith("visionflows: warning: ") for ln in lines[1:]), err


@pytest.mark.parametrize(("argv", "expect", "match"), CASES)
def test_sweep(argv, expect, match, assets, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before = _tree(tmp_path)
    assets_before = _tree(Path(assets["clean"]).parent)
    code = main(_fill(argv, assets, out))
    cap = capsys.readouterr()
    if expect == 2:
        check_clean_error(code, cap.err)
        assert match.lower() in cap.err.splitlines()[0].lower(), cap.err
        assert _tree(tmp_path) == before, "left behind: " + ", ".join(sorted(_tree(tmp_path) - before))
    else:
        assert code == 0, cap.err
        assert "Traceback" not in cap.err and "error" not in cap.err, cap.err
        assert match in cap.out, cap.out
    assert _tree(Path(assets["clean"]).parent) == assets_before


def test_case_table_covers_the_issue():
    """The sweep keeps its size: every shared flag in every train command, and the listed holes."""
    errors = [p for p in CASES if p.values[1] == 2]
    assert len(CASES) >= 180 and len(errors) >= 170
    ids = {p.id for p in CASES}
    for cmd in TRAIN_CMDS:
        assert f"{cmd}-train--grad-clip=-1" in ids and f"{cmd}-train--device=bogus" in ids


# ------------------------------------------------------------------------------------------------ faults
def test_full_disk_is_one_clear_error_and_leaves_nothing(assets, tmp_path, capsys, monkeypatch):
    def full(fd):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    out.mkdir()
    code = main(_fill(SAMPLE, assets, out))
    check_clean_error(code, capsys.readouterr().err)
    assert not list(out.iterdir())
    # a training whose first checkpoint hits the full disk: one error, and no half-made run dir
    code = main(_fill(TRAIN_CMDS["glow"], assets, out))
    err = capsys.readouterr().err
    check_clean_error(code, err)
    assert "no space left" in err and not list(out.iterdir())


def test_umask_is_respected(assets, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        code = main(_fill(TRAIN_CMDS["glow"], assets, tmp_path) + ["--checkpoint-every", "1"])
        assert code == 0, capsys.readouterr().err
        run = tmp_path / "run"
        ckpt = find_checkpoints(run)[-1]
        for f in (run / "config.json", run / "metrics.jsonl", ckpt / "model.safetensors", ckpt / "state.pt"):
            assert f.stat().st_mode & 0o777 == 0o640, (f, oct(f.stat().st_mode))
        assert ckpt.stat().st_mode & 0o777 == 0o750
        assert not (run / ".lock").exists()
    finally:
        os.umask(old)


def test_random_patches_check_the_patch_size_before_allocating(assets):
    from visionflows.data.srgb_pairs import load_pairs
    from visionflows.errors import DataError

    pairs = load_pairs(assets["pairs"])
    with pytest.raises(DataError, match="larger than image cam_iso100_0 .40x40.*Fix: use the patch size 40 or less"):
        pairs.random_patches(512, 5000, torch.Generator().manual_seed(0))  # 35.8 GiB if allocated first
    assert pairs.random_patches(2, 40, torch.Generator().manual_seed(0))["noisy"].shape == (2, 3, 40, 40)


def test_srgb_adapt_zero_steps_prints_valid_json(assets, tmp_path, capsys):
    """--adapt-steps 0 (accepted, like the trainer's --steps 0: the new camera's entries as initialised) has no
    training NLL to report: null, not NaN (which is not JSON)."""
    code = main(_fill(SRGB_ADAPT + ["--adapt-steps", "0"], assets, tmp_path))
    cap = capsys.readouterr()
    assert code == 0, cap.err

    def no_nan(name: str):  # noqa: ANN202
        raise AssertionError(f"{name} in the JSON summary")

    info = json.loads(cap.out.strip().splitlines()[-1], parse_constant=no_nan)
    assert info["train_nll_per_dim_first"] is None and info["train_nll_per_dim_last"] is None
    assert (tmp_path / "a.safetensors").is_file()


@pytest.mark.parametrize("name", ["text", "objects"])
def test_non_numeric_npy_and_npz_say_so_without_suggesting_pickle(name, assets, tmp_path, capsys):
    """A text file renamed .npy/.npz, or arrays of Python objects: numpy's own message suggests loading it with
    pickling (which runs code from the file); ours says what the file is not."""
    npy, npz, wt = "{" + name + "_npy}", "{" + name + "_npz}", TRAIN_CMDS["wavelet"]
    why = {"text": "is not a numeric .npy array: it has no NumPy header",
           "objects": "is not a numeric .npy array: it holds Python objects"}[name]
    for argv, match in ((SAMPLE[:5] + [npy] + SAMPLE[6:], why), (SIM[:3] + [npy] + SIM[4:], why),
                        (wt[:7] + [npz] + wt[8:], "is not an .npz archive of numeric arrays")):
        argv = _fill(argv, assets, tmp_path)
        code = main(argv)
        err = capsys.readouterr().err
        check_clean_error(code, err)
        assert match in err and "pickle" not in err, err
    assert not list(tmp_path.iterdir())


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` read-only, also for root (whom the permission bits do not stop): os.access denies writing."""
    folder.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).absolute() == folder.absolute()
                        and mode & os.W_OK else real(p, mode, **kw))


def test_render_into_a_read_only_folder_is_one_clear_error(assets, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    try:
        code = main(["noise", "render", assets["clean"], assets["clean"], "--camera", "S6", "--out", str(ro / "sub")])
        err = capsys.readouterr().err
        check_clean_error(code, err)
        assert f"--out {ro / 'sub'}" in err and "not writable" in err, err
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_srgb_adapt_into_a_read_only_folder_names_the_whole_out_path(assets, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    try:
        argv = _fill(SRGB_ADAPT, assets, tmp_path)
        argv[argv.index("--out") + 1] = str(ro / "sa.safetensors")
        code = main(argv)
        err = capsys.readouterr().err
        check_clean_error(code, err)
        assert f"cannot write --out {ro / 'sa.safetensors'}: the folder {ro} is not writable" in err, err
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_render_failing_midway_leaves_no_partial_folder(assets, tmp_path, capsys, monkeypatch):
    import visionflows.io

    real, calls = visionflows.io.atomic_write_bytes, []

    def second_fails(path, data):  # noqa: ANN001
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(visionflows.io, "atomic_write_bytes", second_fails)
    np.save(tmp_path / "b.npy", np.full((4, 8, 8), 0.5, np.float32))
    for out in (tmp_path / "new", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
            (out / "keep.txt").write_text("mine")
        calls.clear()
        code = main(["noise", "render", assets["clean"], str(tmp_path / "b.npy"), "--camera", "S6", "--out",
                     str(out)])
        check_clean_error(code, capsys.readouterr().err)
        assert len(calls) == 2
        assert not out.exists() if out.name == "new" else [q.name for q in out.iterdir()] == ["keep.txt"]


# ------------------------------------------------------------------------------------------------ run dirs
def _glow_task():
    from visionflows.glow import GlowImageTask

    images = torch.randint(0, 256, (8, 3, 12, 12), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    return GlowImageTask(images, resolution=8, levels=2, steps=1, width=8, batch_size=4)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=2, lr=1e-3, progress=False, tensorboard=False, checkpoint_every=1, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class _FailingTask:
    """A task whose loss turns NaN at ``fail_at`` (the data-init call is step -1)."""

    def __init__(self, fail_at: int) -> None:
        self.inner, self.fail_at = _glow_task(), fail_at
        self.name, self.unit = "failing", "bits/dim"

    def build_model(self):
        return self.inner.build_model()

    def config(self):
        return self.inner.config()

    def batch(self, step, generator):
        return step, self.inner.batch(step, generator)

    def loss(self, model, batch):
        step, b = batch
        loss, metrics = self.inner.loss(model, b)
        return (loss * float("nan") if step >= self.fail_at else loss), metrics

    def evaluate(self, model):
        return {}


def test_resume_semantics_never_guess(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        train(_glow_task(), _cfg(), tmp_path / "missing", resume=True)
    assert not (tmp_path / "missing").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="cannot resume .*empty"):
        train(_glow_task(), _cfg(), empty, resume=True)
    assert not list(empty.iterdir())
    run = tmp_path / "run"
    train(_glow_task(), _cfg(), run)
    with pytest.raises(ConfigError, match="contradict"):
        train(_glow_task(), _cfg(), run, resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="holds a run"):
        train(_glow_task(), _cfg(), run)
    assert train(_glow_task(), _cfg(steps=3), run, resume=True).step == 3


def test_failed_start_leaves_nothing_and_a_leftover_is_reused(tmp_path):
    run = tmp_path / "a" / "run"
    with pytest.raises(Exception, match="loss became nan"):
        train(_FailingTask(0), _cfg(), run)
    assert not (tmp_path / "a").exists()  # the folders this start created are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="loss became nan"):
        train(_FailingTask(0), _cfg(), empty)
    assert empty.is_dir() and not list(empty.iterdir())  # the user's folder stays, empty
    # what a start killed before its first checkpoint leaves (config.json, metrics) is not a run: reused
    left = tmp_path / "left"
    (left / "checkpoints").mkdir(parents=True)
    (left / "config.json").write_text(json.dumps({"task_name": "glow"}))
    (left / "metrics.jsonl").write_text('{"step": 1}\n')
    assert train(_glow_task(), _cfg(), left).step == 2
    with pytest.raises(ConfigError, match="not empty"):  # a folder of someone else's files is refused
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "notes.txt").write_text("mine")
        train(_glow_task(), _cfg(), tmp_path / "foreign")
    # a failure after a checkpoint keeps the run (it can be resumed)
    kept = tmp_path / "kept"
    with pytest.raises(Exception, match="loss became nan"):
        train(_FailingTask(1), _cfg(), kept)
    assert [c.name for c in find_checkpoints(kept)] == ["step-00000001"]


def test_stale_temporaries_are_cleaned(tmp_path):
    run = tmp_path / "run"
    train(_glow_task(), _cfg(), run)
    stale_dir = run / "checkpoints" / ".step-00000003.abcd.tmp"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    stale_file = run / ".config.json.xyz.tmp"
    stale_file.write_text("{")
    assert train(_glow_task(), _cfg(steps=3), run, resume=True).step == 3
    assert not stale_dir.exists() and not stale_file.exists()


def test_checkpoint_beyond_the_run_is_refused(tmp_path):
    run = tmp_path / "run"
    train(_glow_task(), _cfg(steps=2), run)
    last = find_checkpoints(run)[-1]
    state = torch.load(last / "state.pt", weights_only=True)
    state["step"] = 999
    torch.save(state, last / "state.pt")
    with pytest.raises(CheckpointError, match="claims step 999"):
        train(_glow_task(), _cfg(steps=4), run, resume=True)
    last.rename(last.with_name("step-00000999"))
    with pytest.raises(CheckpointError, match="beyond this run's 4 steps"):
        train(_glow_task(), _cfg(steps=4), run, resume=True)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")


def _sigint_default() -> None:
    """Run in the child before exec: Ctrl-C's default action, as in a terminal. A test run started in the
    background (``cmd &`` without job control) inherits SIGINT *ignored*, and Python then installs no
    KeyboardInterrupt handler, so the child would never see the signal this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the training ended too early"
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run), "40", "--sleep", "0.2"], env=_env())
    try:
        _wait_for(run / "checkpoints" / "step-00000004" / "state.pt", proc)
        with pytest.raises(ConfigError, match=f"in use by another training: pid {proc.pid} on host"):
            train(_glow_task(), _cfg(steps=50), run, resume=True)
        # the CLI says the same in its one-line form, before any work
        code = main(["glow", "train", "--data", str(tmp_path), "--run-dir", str(run), "--resume", "--steps", "50"])
        err = capsys.readouterr().err
        check_clean_error(code, err)
        assert f"pid {proc.pid}" in err
    finally:
        proc.kill()
        proc.wait()
    # the holder was killed (-9): its lock died with it, so the run resumes
    assert train(_glow_task_like_script(), _cfg_like_script(44), run, resume=True).step == 44
    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]
    assert rows == sorted(set(rows)), "duplicate or unordered steps in metrics.jsonl"


def _glow_task_like_script():
    from visionflows.glow import GlowImageTask

    images = torch.randint(0, 256, (8, 3, 12, 12), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    return GlowImageTask(images, resolution=8, levels=2, steps=2, width=8, batch_size=4)


def _cfg_like_script(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, lr=1e-3, seed=3, checkpoint_every=4, progress=False, tensorboard=False,
                       log_every=1, ema_decay=0.9, warmup_steps=3, device="cpu")


@pytest.mark.slow
def test_ctrl_c_then_resume_matches_uninterrupted(tmp_path):
    steps = 12
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(SCRIPT), str(ref), str(steps), "--dump", str(tmp_path / "ref.pt")],
                   check=True, env=_env())
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run), str(steps), "--sleep", "0.3"], env=_env(),
                            preexec_fn=_sigint_default)
    _wait_for(run / "checkpoints" / "step-00000004" / "state.pt", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not (run / ".lock").exists()  # released on Ctrl-C
    assert "step-00000012" not in [c.name for c in find_checkpoints(run)]
    subprocess.run([sys.executable, str(SCRIPT), str(run), str(steps), "--resume", "--dump", str(tmp_path / "res.pt")],
                   check=True, env=_env())
    a = torch.load(str(tmp_path / "ref.pt") + ".rank0", weights_only=True)
    b = torch.load(str(tmp_path / "res.pt") + ".rank0", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------ notes
def test_nlf_params_zero_read_variance_is_a_note(assets, tmp_path, capsys):
    """``O = 0`` is accepted (a sensor without read noise) but the models floor it at 1e-6: one stderr note."""
    argv = SAMPLE[:3] + ["{noiseflow_nlf}"] + SAMPLE[4:] + ["--nlf-params=2e-4,0"]
    with pytest.warns(UserWarning) as rec:
        code = main(_fill(argv, assets, tmp_path))
    assert code == 0, capsys.readouterr().err
    assert [str(w.message) for w in rec] == ["--nlf-params '2e-4,0': a read variance O of 0 is used as 1e-6, the "
                                             "floor of the models (as SIDD does)."]


def test_superres_image_larger_than_the_model_is_a_note(assets, tmp_path):
    """A 16x16 --image on an 8x8 model is block-averaged to 8x8 first: said in one line (not silently)."""
    with pytest.warns(UserWarning) as rec:
        assert main(_fill(W_SUPER, assets, tmp_path)) == 0
    assert [str(w.message) for w in rec] == [
        f"--image {assets['gt']} is 16x16, larger than the model's 8x8: it is block-averaged to 8x8 (the ground "
        "truth), whose x2 reduction (4x4) is super-resolved back to 8x8."]


def test_fp16_skipped_steps_do_not_step_the_schedule(assets, tmp_path, capsys):
    """--amp fp16: the grad scaler skips the steps whose gradients overflow (at first, the initial scale 2^16
    does on CPU); the LR schedule waits for the optimiser (no raw PyTorch lr_scheduler warning, no schedule value
    skipped): it has stepped once per optimiser update."""
    import math
    import warnings

    argv = _fill(TRAIN_CMDS["wavelet"], assets, tmp_path)
    argv[argv.index("--steps") + 1] = "6"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert main(argv + ["--amp", "fp16", "--device", "cpu", "--warmup-steps", "4"]) == 0, capsys.readouterr().err
    assert not [str(w.message) for w in rec if "lr_scheduler" in str(w.message)]
    state = torch.load(find_checkpoints(tmp_path / "run" / "level_0")[-1] / "state.pt", weights_only=False)
    skipped = round(math.log2(65536.0 / state["scaler"]["scale"]))  # each overflow halves the scale
    assert state["scheduler"]["last_epoch"] == 6 - skipped
