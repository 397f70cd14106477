"""``visionflows denoise train|eval|experiment``: DnCNN denoisers trained on synthetic or real noise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="simulator",
                   help="'simulator' (built-in camera simulator, raw) or a folder of *_noisy.png/*_clean.png pairs")
    p.add_argument("--patch", type=int, default=32, help="training patch size")
    p.add_argument("--n-train-images", type=int, default=24, help="simulated training images (simulator)")
    p.add_argument("--n-test-images", type=int, default=6, help="simulated test images (simulator)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="held-out fraction of sRGB images")
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("denoise", help="train and evaluate DnCNN denoisers")
    sub = p.add_subparsers(dest="denoise_command", metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="train a DnCNN with noise from a noise model (or real pairs)")
    t.add_argument("--noise", required=True,
                   help="gaussian | nlf | real | path of a noise-model file (Noise Flow, sRGB Noise Flow, baseline)")
    t.add_argument("--run-dir", required=True, help="output run directory (checkpoints, metrics)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--depth", type=int, default=9)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--sigma", type=float, default=None,
                   help="fixed Gaussian σ in 8-bit levels (default: σ ~ U(0.24, 11.5)/255 per batch)")
    t.add_argument("--temperature", type=float, default=1.0, help="noise-model sampling temperature")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    _add_data(t)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="PSNR/SSIM of denoisers on real or simulated noisy/clean pairs")
    e.add_argument("--model", action="append", required=True, help="DnCNN model file or run dir (repeatable)")
    e.add_argument("--out", required=True, help="output folder (table.txt/csv/json, images/)")
    e.add_argument("--crop", type=int, default=256, help="central crop of sRGB test images (0 = full)")
    _add_data(e)
    e.set_defaults(func=_eval)

    x = sub.add_parser("experiment", help="the paper's table on the camera simulator (Gaussian/NLF/Noise Flow/real)")
    x.add_argument("--out", required=True)
    x.add_argument("--steps", type=int, default=100)
    x.add_argument("--flow-steps", type=int, default=150)
    x.add_argument("--batch-size", type=int, default=16)
    x.add_argument("--n-train-images", type=int, default=8)
    x.add_argument("--n-test-images", type=int, default=6)
    x.add_argument("--noise-flow", default=None, help="a trained raw Noise Flow file (default: fit one here)")
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(func=_experiment)


def _train(args: argparse.Namespace) -> int:
    from visionflows.denoise.train import load_denoise_data, train_denoiser

    data, _ = load_denoise_data(args.data, args.patch, args.n_train_images, 0 if args.data == "simulator" else 1,
                                args.seed, args.test_fraction)
    sigma = None if args.sigma is None else args.sigma / 255.0
    res = train_denoiser(data, args.noise, args.run_dir, args.steps, args.batch_size, args.lr, args.depth,
                         args.width, args.seed, sigma, args.temperature, args.resume, args.overwrite,
                         progress=not args.no_progress)
    print(f"trained {res.step} steps into {res.run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.denoise.evaluate import evaluate_denoisers
    from visionflows.denoise.train import load_denoise_data

    _, test = load_denoise_data(args.data, args.patch, 0, args.n_test_images, args.seed, args.test_fraction)
    rows = evaluate_denoisers(args.model, test, args.out, crop=args.crop or None)
    print((Path(args.out) / "table.txt").read_text(), end="")
    return 0 if rows else 1


def _experiment(args: argparse.Namespace) -> int:
    from visionflows.denoise.experiments import run_denoising_experiment

    rows = run_denoising_experiment(args.out, args.steps, args.flow_steps, args.batch_size, args.n_train_images,
                                    args.n_test_images, seed=args.seed, noise_flow=args.noise_flow)
    print(json.dumps(rows, indent=2))
    return 0
