"""Denoiser training throughput (patches/s): noise synthesised on the fly by Noise Flow vs pre-generated noise.

For the raw Noise Flow (``noiseflow`` preset, 4×32×32 packed patches) and the sRGB Noise Flow (3×32×32), it times
(1) noise synthesis alone, (2) DnCNN training steps (depth 9, width 32, Adam) on pre-generated noisy batches and
(3) the same steps with the synthesis inside each step (what ``visionflows denoise train --noise FILE`` does),
(2) and (3) interleaved step by step.
Prints the numbers and writes ``benchmarks/results/denoise.json`` atomically.

    OMP_NUM_THREADS=1 python benchmarks/bench_denoise.py --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from visionflows.cameras import TRAIN_PAIRS, camera_index
from visionflows.denoise import DenoiseTask, DnCNN, ModelSource
from visionflows.io import atomic_write_text
from visionflows.noise import create_model
from visionflows.noise.srgb import SRGBNoiseFlow


class _RandomPatches:
    """Random smooth-ish clean patches with SIDD-like conditioning (timing only)."""

    def __init__(self, domain: str, patch: int) -> None:
        self.domain, self.patch = domain, patch
        self.channels = 4 if domain == "raw" else 3

    def sample(self, n: int, generator: torch.Generator) -> dict:
        clean = torch.rand(n, self.channels, self.patch, self.patch, generator=generator) * 0.5 + 0.1
        rows = torch.randint(len(TRAIN_PAIRS), (n,), generator=generator).tolist()
        if self.domain == "raw":
            iso = torch.tensor([TRAIN_PAIRS[r][1] for r in rows])
            cam = torch.tensor([camera_index(TRAIN_PAIRS[r][0]) for r in rows])
        else:
            iso, cam = torch.full((n,), 3200), ["d800"] * n
        clean_u8 = torch.round(clean * 255).to(torch.uint8)
        return {"clean": clean_u8.float() / 255, "clean_u8": clean_u8, "noisy": clean, "iso": iso, "camera": cam}


def _bench(domain: str, steps: int, batch: int, patch: int, warmup: int = 2) -> dict:
    noise_model = create_model("noiseflow") if domain == "raw" else SRGBNoiseFlow(cameras=["d800"], isos=[3200],
                                                                                   noise_std=5.0)
    data = _RandomPatches(domain, patch)
    source = ModelSource(noise_model, domain, 1.0, "noiseflow")
    task = DenoiseTask(data, source, batch_size=batch)
    torch.manual_seed(0)
    model: DnCNN = task.build_model()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step(b: dict) -> None:
        loss, _ = task.loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    gens = [torch.Generator().manual_seed(i) for i in range(steps + warmup)]
    # (1) synthesis alone
    for g in gens[:warmup]:
        task.batch(0, g)
    t = time.perf_counter()
    pregen = [task.batch(i, g) for i, g in enumerate(gens[warmup:])]
    synth_s = time.perf_counter() - t
    for b in pregen[:warmup]:
        step(b)
    # (2) training on pre-generated batches and (3) with on-the-fly synthesis, interleaved step by step so that
    # drift of the machine hits both alike
    pre_s = fly_s = 0.0
    for i, g in enumerate(gens[warmup:]):
        t = time.perf_counter()
        step(pregen[i])
        pre_s += time.perf_counter() - t
        t = time.perf_counter()
        step(task.batch(i, g))
        fly_s += time.perf_counter() - t
    n = steps * batch
    return {
        "domain": domain,
        "patch_shape": [data.channels, patch, patch],
        "batch_size": batch,
        "steps": steps,
        "synthesis_patches_per_s": n / synth_s,
        "train_pregenerated_patches_per_s": n / pre_s,
        "train_on_the_fly_patches_per_s": n / fly_s,
        "on_the_fly_slowdown": fly_s / pre_s,
        "synthesis_share_of_step": synth_s / (synth_s + pre_s),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "denoise.json"))
    args = ap.parse_args(argv)
    results = {
        "benchmark": "denoise",
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "runs": [_bench(d, args.steps, args.batch_size, args.patch) for d in ("raw", "srgb")],
    }
    for r in results["runs"]:
        print(f"{r['domain']:5s} synthesis {r['synthesis_patches_per_s']:8.1f} patches/s | DnCNN training: "
              f"pre-generated {r['train_pregenerated_patches_per_s']:7.1f} patches/s, on the fly "
              f"{r['train_on_the_fly_patches_per_s']:7.1f} patches/s (x{r['on_the_fly_slowdown']:.2f} time, "
              f"synthesis {100 * r['synthesis_share_of_step']:.0f}% of a step)")
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
