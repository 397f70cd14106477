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


def _run(args: argparse.Namespace) -> int:
    from visionflows.experiments.demo import run_demo

    run_demo(args.run_dir, quick=args.quick, official_ckpt=args.official_ckpt, progress=not args.no_progress)
    return 0
