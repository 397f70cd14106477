"""``visionflows denoise train|eval|experiment``: DnCNN denoisers trained on synthetic or real noise.

A skin over :mod:`visionflows.denoise` (data, noise sources, training task on the shared trainer, evaluation);
every input (flags, noise-model and denoiser files, data folders, output folders) is checked before any work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visionflows.cli.common import add_trainer_args, check_train_args, trainer_settings
from visionflows.errors import CheckpointError, ConfigError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    OPEN_UNIT,
    POSITIVE_INT,
    TEMPERATURE,
    Range,
    check_input_dir,
    check_model_file,
    check_output_dir,
    model_family,
    number_arg,
)

__all__ = ["register"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)
_KEYWORDS = ("gaussian", "nlf", "real")


def _add_data(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--data", default="simulator",
                   help="'simulator' (built-in camera simulator, raw) or a folder of *_noisy.png/*_clean.png pairs")
    p.add_argument("--patch", type=number_arg(Range(integer=True, low=2)), default=32, help="training patch size")
    p.add_argument("--n-train-images", type=_INT1, default=24, help="simulated training images (simulator)")
    p.add_argument("--n-test-images", type=_INT1, default=6, help="simulated test images (simulator)")
    p.add_argument("--test-fraction", type=number_arg(OPEN_UNIT), default=0.25,
                   help="held-out fraction of sRGB images")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="a folder of pairs: unreadable, differently sized, misaligned or unpaired files stop "
                        "(default) or are skipped with a warning")
    if seed:
        p.add_argument("--seed", type=_INT0, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("denoise", help="train and evaluate DnCNN denoisers")
    sub = p.add_subparsers(dest="denoise_command", metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="train a DnCNN with noise from a noise model (or real pairs)")
    t.add_argument("--noise", required=True,
                   help="gaussian | nlf | real | path of a noise-model file (Noise Flow, sRGB Noise Flow, baseline)")
    t.add_argument("--depth", type=number_arg(Range(integer=True, low=3)), default=9, help="conv layers")
    t.add_argument("--width", type=_INT1, default=32)
    t.add_argument("--sigma", type=number_arg(Range(low=0, high=255, low_open=True)), default=None,
                   help="fixed Gaussian σ in 8-bit levels (default: σ ~ U(0.24, 11.5)/255 per batch)")
    t.add_argument("--temperature", type=number_arg(TEMPERATURE), default=1.0,
                   help="noise-model sampling temperature")
    _add_data(t, seed=False)
    add_trainer_args(t, steps=1000, lr=1e-3, batch_size=32,
                     seed_help="seed of the training, the data and the initialisation (default 0)",
                     device_help="cpu (default), auto, cuda, cuda:1")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="PSNR/SSIM of denoisers on real or simulated noisy/clean pairs")
    e.add_argument("--model", action="append", required=True, help="DnCNN model file or run dir (repeatable)")
    e.add_argument("--out", required=True, help="output folder (table.txt/csv/json, images/)")
    e.add_argument("--crop", type=_INT0, default=256, help="central crop of sRGB test images (0 = full)")
    _add_data(e)
    e.set_defaults(func=_eval)

    x = sub.add_parser("experiment", help="the paper's table on the camera simulator (Gaussian/NLF/Noise Flow/real)")
    x.add_argument("--out", required=True)
    x.add_argument("--steps", type=_INT1, default=100)
    x.add_argument("--flow-steps", type=_INT1, default=150)
    x.add_argument("--batch-size", type=_INT1, default=16)
    x.add_argument("--n-train-images", type=_INT1, default=8)
    x.add_argument("--n-test-images", type=_INT1, default=6)
    x.add_argument("--noise-flow", default=None, help="a trained raw Noise Flow file (default: fit one here)")
    x.add_argument("--seed", type=_INT0, default=0)
    x.set_defaults(func=_experiment)


def _domain(data: str) -> str:
    if data == "simulator":
        return "raw"
    check_input_dir(data, "--data", "folder of sRGB pairs (or 'simulator')")
    return "srgb"


def _check_noise(noise: str, domain: str) -> str:
    """``--noise``: a keyword fitting the data, or a noise-model file of the data's domain with finite weights."""
    if noise in _KEYWORDS:
        if noise == "nlf" and domain != "raw":
            raise ConfigError("--noise nlf (the camera NLF) is for raw data only, but --data is a folder of sRGB "
                              "pairs.",
                              "use --noise gaussian, real or an sRGB noise-model file with sRGB pairs.")
        return
    if not Path(noise).exists():
        raise ConfigError(f"--noise {noise!r} is neither gaussian, nlf, real nor an existing noise-model file.",
                          "pass one of gaussian, nlf, real, or the path of a noise-model .safetensors file.")
    family = f"{domain}-noise"
    other = "srgb" if domain == "raw" else "raw"
    meta = check_model_file(noise, "--noise", families=("raw-noise", "srgb-noise"),
                            fix="pass a noise model (Noise Flow, sRGB Noise Flow or a noise baseline), or gaussian, "
                                "nlf, real.")
    if model_family(meta.get("kind")) != family:
        data_desc = "the built-in simulator (raw)" if domain == "raw" else "sRGB pairs"
        raise CheckpointError(f"noise model {noise} is for the {other} domain but the training data are "
                              f"{data_desc}.", f"use a {domain} noise model, or {other} data.")
    return meta["path"]


def _train(args: argparse.Namespace) -> int:
    from visionflows.denoise.train import load_denoise_data, train_denoiser

    check_train_args(args, device="cpu", tensorboard=False)
    domain = _domain(args.data)
    args.noise = _check_noise(args.noise, domain) or args.noise
    settings = trainer_settings(args)
    steps, batch, lr = settings.pop("steps", 1000), settings.pop("batch_size", 32), settings.pop("lr", 1e-3)
    seed = settings.pop("seed", 0)
    progress = settings.pop("progress", True)
    data, _ = load_denoise_data(args.data, args.patch, args.n_train_images, 0 if args.data == "simulator" else 1,
                                seed, args.test_fraction, args.on_error)
    sigma = None if args.sigma is None else args.sigma / 255.0
    res = train_denoiser(data, args.noise, args.run_dir, steps, batch, lr, args.depth, args.width, seed, sigma,
                         args.temperature, args.resume, args.overwrite, progress=progress, **settings)
    print(f"trained {res.step} steps into {res.run_dir}")
    return 0


def _check_denoisers(models: list[str], domain: str) -> None:
    for m in models:
        meta = check_model_file(m, "--model", families=("denoiser",),
                                fix="pass DnCNN model files or run dirs (from `visionflows denoise train`).")
        try:
            mdom = json.loads(meta.get("config", "{}")).get("domain", "raw")
        except (TypeError, ValueError):
            mdom = "raw"
        if mdom != domain:
            where = "--data simulator" if mdom == "raw" else "--data FOLDER of sRGB pairs"
            raise CheckpointError(f"denoiser {m} is for {mdom} data but the evaluation data are {domain}.",
                                  f"evaluate it on {mdom} data ({where}).")


def _eval(args: argparse.Namespace) -> int:
    from visionflows.denoise.evaluate import evaluate_denoisers
    from visionflows.denoise.train import load_denoise_data

    check_output_dir(args.out, "--out")
    _check_denoisers(args.model, _domain(args.data))
    _, test = load_denoise_data(args.data, args.patch, 0, args.n_test_images, args.seed, args.test_fraction,
                                args.on_error)
    rows = evaluate_denoisers(args.model, test, args.out, crop=args.crop or None)
    print((Path(args.out) / "table.txt").read_text(), end="")
    return 0 if rows else 1


def _experiment(args: argparse.Namespace) -> int:
    from visionflows.experiments.denoising import run_denoising_experiment

    check_output_dir(args.out, "--out")
    if args.noise_flow is not None:
        args.noise_flow = check_model_file(
            args.noise_flow, "--noise-flow", families=("raw-noise",),
            fix="pass a raw Noise Flow model file or its run dir (from `visionflows noise train`), or drop "
                "--noise-flow to fit one here.")["path"]
    rows = run_denoising_experiment(args.out, args.steps, args.flow_steps, args.batch_size, args.n_train_images,
                                    args.n_test_images, seed=args.seed, noise_flow=args.noise_flow)
    print(json.dumps(rows, indent=2))
    return 0
