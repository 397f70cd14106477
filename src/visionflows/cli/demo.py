"""``visionflows demo``: both systems end to end on built-in real data (see :mod:`visionflows.experiments.demo`)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run Noise Flow, denoising and Wavelet Flow end to end; write report.html")
    p.add_argument("--quick", action="store_true", help="a tiny budget (well under a minute; for CI)")
    p.add_argument("--run-dir", default=None, help="output folder (default runs/demo-<time>; must be new or empty)")
    p.add_argument("--official-ckpt", default=None, help="folder of the official Noise Flow TF checkpoint to score")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> None:
    """Every input before the minutes of work: the run dir (new or empty folder) and the official checkpoint."""
    from pathlib import Path

    from visionflows.errors import ConfigError
    from visionflows.validation import check_finite_weights, check_output_dir

    if args.run_dir is not None:
        root = check_output_dir(args.run_dir, "--run-dir")
        if root.is_dir() and any(root.iterdir()):
            raise ConfigError(f"demo run directory {root} is not empty.", "choose a new --run-dir or delete it.")
    if args.official_ckpt is not None:
        from visionflows.noise.official import load_official

        ckpt = Path(args.official_ckpt)
        if not ckpt.exists() and not Path(str(ckpt) + ".index").is_file():
            raise ConfigError(f"--official-ckpt {ckpt} does not exist.",
                              "give the folder holding model.ckpt.best.index / .data-00000-of-00001 (or the prefix).")
        check_finite_weights(load_official(ckpt), f"--official-ckpt {ckpt}")


def _run(args: argparse.Namespace) -> int:
    from visionflows.experiments.demo import run_demo

    _check(args)

    run_demo(args.run_dir, quick=args.quick, official_ckpt=args.official_ckpt, progress=not args.no_progress)
    return 0
