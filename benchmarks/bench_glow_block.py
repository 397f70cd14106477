"""Forward+backward time of a Glow-style block stack (ActNorm → LU 1x1 → affine coupling) ×K, eager vs compiled.

usage: python benchmarks/bench_glow_block.py [--device cpu] [--batch 16] [--channels 12] [--size 16]
       [--steps 8] [--width 128] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import time_call, write_result  # noqa: E402
from visionflows.flows import Compose  # noqa: E402
from visionflows.glow import glow_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=12)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    flow = Compose(*[glow_step(args.channels, args.width) for _ in range(args.steps)]).to(dev)
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=dev)
    flow.train()
    flow(x)  # ActNorm init
    params = sum(p.numel() for p in flow.parameters())

    def step(f):
        def run():
            z, ld = f(x)
            loss = 0.5 * (z * z).sum() - ld.sum()
            loss.backward()
        return run

    results = {"config": vars(args), "parameters": params}
    eager = time_call(step(flow), reps=args.reps, device=args.device)
    results["eager"] = {**eager, "images_per_s": args.batch / eager["median_s"]}
    print(f"eager:    {eager['median_s'] * 1e3:8.1f} ms/iter  {args.batch / eager['median_s']:8.1f} images/s")
    if not args.no_compile:
        compiled = torch.compile(flow)
        comp = time_call(step(compiled), warmup=3, reps=args.reps, device=args.device)
        results["compiled"] = {**comp, "images_per_s": args.batch / comp["median_s"]}
        print(f"compiled: {comp['median_s'] * 1e3:8.1f} ms/iter  {args.batch / comp['median_s']:8.1f} images/s")
    suffix = "" if dev.type == "cpu" else f"_{dev.type}"
    print("wrote", write_result(f"glow_block{suffix}", results))


if __name__ == "__main__":
    main()
