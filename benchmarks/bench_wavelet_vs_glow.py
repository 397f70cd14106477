"""Wavelet Flow vs a multi-scale Glow of similar parameter count at equal wall-clock on the CPU.

All three runs use the real training path (:func:`visionflows.training.train` through
:func:`~visionflows.wavelet.train.train_level` / :func:`~visionflows.wavelet.train.train_all_levels` /
:class:`~visionflows.glow.GlowImageTask`) on random crops of the built-in photos, Glow's Adamax, lr 1e-3,
100 warm-up steps, the same batch size, and get ``--minutes`` of training wall time each, cut into ``--points``
rounds (every run resumes from its checkpoint). After every round the held-out bits/dim is measured (not
counted in the wall time) on ``open_images(--test-data or --data, R, 3, "test").eval_images`` (default the
built-in held-out photos; a folder: its centre squares) with dequantisation seed 1234; ``--data`` is the training
source (``builtin``, or a folder: random multiscale crops):

* ``wf_sequential``: the levels of ``--preset`` one after the other in this process, each ``1/(n+1)`` of the
  round (``--threads`` torch threads);
* ``wf_parallel``: :func:`~visionflows.wavelet.train.train_all_levels` with ``--parallel`` workers (this process
  and long-lived worker processes, ``cores/parallel`` threads each), the round being its ``max_minutes``: levels
  longest first, time split by cost, all workers ending together (a worker's start-up, paid once per round, is
  inside the measured time);
* ``glow``: :class:`~visionflows.glow.Glow` with ``--glow-levels/--glow-steps/--glow-width`` chosen so
  its parameter count is close to the Wavelet Flow's (default L=3, K=8, W=104: 1.24 M vs cpu_32's 1.25 M).

Reported: the curves, bits/dim at equal wall-clock, and the speed-up factor of every Wavelet Flow run: Glow's
wall time divided by the time the Wavelet Flow first reaches Glow's final bits/dim (the paper's claim, measured).
Writes ``benchmarks/results/<name>.json`` and ``<name>.png`` (bits/dim vs wall seconds).

usage: python benchmarks/bench_wavelet_vs_glow.py [--minutes 4] [--points 5] [--preset cpu_32] [--threads N]
       [--parallel 2] [--batch 32] [--only wf_sequential,wf_parallel,glow] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, write_result  # noqa: E402
from visionflows.data.images import open_images  # noqa: E402
from visionflows.glow import Glow, GlowImageTask  # noqa: E402
from visionflows.io import atomic_write_bytes, load_model  # noqa: E402
from visionflows.training import TrainConfig, train  # noqa: E402
from visionflows.wavelet.presets import get_preset  # noqa: E402
from visionflows.wavelet.train import assemble, level_run_dir, train_all_levels, train_level  # noqa: E402

BIG = 10**8  # "no step limit": the wall-time limit stops every run


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@torch.no_grad()
def eval_wavelet(root: Path, test: torch.Tensor) -> float:
    model = assemble(root)
    gen = torch.Generator().manual_seed(1234)
    return float(torch.cat([model.bits_per_dim(c, gen)["total"] for c in test.split(64)]).mean())


@torch.no_grad()
def eval_glow(run_dir: Path, test: torch.Tensor) -> float:
    model = load_model(run_dir).eval()
    gen = torch.Generator().manual_seed(1234)
    return float(torch.cat([model.bits_per_dim(c, gen) for c in test.split(64)]).mean())


def _steps(run_dir: Path) -> int:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    return int(ckpts[-1].name.split("-")[1]) if ckpts else 0


class _Budget:
    """Per-call ``max_minutes`` so that a round of ``calls`` serial training calls takes ``round_s`` seconds.

    Every call has fixed costs outside the trainer's clock (process start, data, model build, checkpoint load and
    save, the trainer's final evaluation); the overhead observed in a round is taken off the next round's calls.
    """

    def __init__(self, round_s: float, calls: int, overhead_s: float) -> None:
        self.round_s, self.calls, self.overhead = round_s, calls, overhead_s

    def minutes(self) -> float:
        return max(1.0, self.round_s / self.calls - self.overhead) / 60.0

    def update(self, elapsed_s: float, used_minutes: float) -> None:
        self.overhead = max(0.0, elapsed_s / self.calls - used_minutes * 60.0)


def run_wf_sequential(args, root: Path, test: torch.Tensor) -> dict:
    p = get_preset(args.preset)
    n_lv = len(p.steps)
    budget = _Budget(args.minutes * 60.0 / args.points, n_lv, 1.0)
    curve, wall = [], 0.0
    for rnd in range(args.points):
        t0 = time.perf_counter()
        per_level = budget.minutes()
        for lv in range(n_lv):
            train_level(p.name, lv, level_run_dir(root, lv), data=args.data, steps=BIG, batch_size=args.batch,
                        warmup_steps=args.warmup, resume=True, num_threads=args.threads, progress=False,
                        checkpoint_every=BIG, tensorboard=False, max_minutes=per_level)
        budget.update(time.perf_counter() - t0, per_level)
        wall += time.perf_counter() - t0
        bpd = eval_wavelet(root, test)
        steps = [_steps(level_run_dir(root, lv)) for lv in range(n_lv)]
        curve.append({"wall_s": wall, "bpd": bpd, "level_steps": steps, "loadavg": _loadavg()})
        print(f"wf_sequential round {rnd + 1}/{args.points}: {wall:7.1f} s  {bpd:.4f} bits/dim  steps {steps}",
              flush=True)
    return {"curve": curve, "parameters": p.param_count(), "threads": args.threads}


def run_wf_parallel(args, root: Path, test: torch.Tensor) -> dict:
    p = get_preset(args.preset)
    n_lv = len(p.steps)
    threads = max(1, len(os.sched_getaffinity(0)) // args.parallel)
    curve, wall = [], 0.0
    for rnd in range(args.points):
        t0 = time.perf_counter()
        train_all_levels(p.name, root, parallel=args.parallel, data=args.data, steps=BIG, resume=rnd > 0,
                         max_minutes=args.minutes / args.points, checkpoint_every=BIG, batch_size=args.batch,
                         warmup_steps=args.warmup, threads=threads, tensorboard=False)
        wall += time.perf_counter() - t0
        bpd = eval_wavelet(root, test)
        steps = [_steps(level_run_dir(root, lv)) for lv in range(n_lv)]
        curve.append({"wall_s": wall, "bpd": bpd, "level_steps": steps, "loadavg": _loadavg()})
        print(f"wf_parallel   round {rnd + 1}/{args.points}: {wall:7.1f} s  {bpd:.4f} bits/dim  steps {steps}",
              flush=True)
    return {"curve": curve, "parameters": p.param_count(), "processes": args.parallel, "threads_each": threads}


def run_glow(args, run_dir: Path, test: torch.Tensor) -> dict:
    p = get_preset(args.preset)
    pool = open_images(args.data, p.resolution, p.channels, "train")
    task = GlowImageTask(pool, p.resolution, args.glow_levels, args.glow_steps, args.glow_width,
                         batch_size=args.batch, flip=p.flip)
    config = TrainConfig(steps=BIG, batch_size=args.batch, lr=1e-3, optimizer="adamax_glow",
                         warmup_steps=args.warmup, checkpoint_every=BIG, progress=False, tensorboard=False,
                         num_threads=args.threads, device="cpu")
    budget = _Budget(args.minutes * 60.0 / args.points, 1, 1.0)
    curve, wall = [], 0.0
    for rnd in range(args.points):
        t0 = time.perf_counter()
        config.max_minutes = budget.minutes()
        train(task, config, run_dir, resume=rnd > 0)
        budget.update(time.perf_counter() - t0, config.max_minutes)
        wall += time.perf_counter() - t0
        bpd = eval_glow(run_dir, test)
        curve.append({"wall_s": wall, "bpd": bpd, "steps": _steps(run_dir), "loadavg": _loadavg()})
        print(f"glow          round {rnd + 1}/{args.points}: {wall:7.1f} s  {bpd:.4f} bits/dim  "
              f"steps {_steps(run_dir)}", flush=True)
    params = sum(q.numel() for q in Glow(p.channels, p.resolution, args.glow_levels, args.glow_steps,
                                         args.glow_width).parameters())
    return {"curve": curve, "parameters": params, "threads": args.threads,
            "config": {"levels": args.glow_levels, "steps": args.glow_steps, "width": args.glow_width}}


def at_equal_time(results: dict, total_s: float, points: int) -> list[dict]:
    """Bits/dim of every run at ``k·total/points`` seconds (linear in wall time between measured points; a run
    whose first point is more than 5 % later than ``t`` gives None there, and past its last point its last value)."""
    rows = []
    for k in range(1, points + 1):
        t = total_s * k / points
        row: dict = {"wall_s": t}
        for key, run in results["runs"].items():
            xs = [c["wall_s"] for c in run["curve"]]
            ys = [c["bpd"] for c in run["curve"]]
            if not xs or t < xs[0] / 1.05:
                row[key] = None
            elif t <= xs[0]:
                row[key] = ys[0]
            elif t >= xs[-1]:
                row[key] = ys[-1]
            else:
                i = next(j for j in range(1, len(xs)) if xs[j] >= t)
                w = (t - xs[i - 1]) / (xs[i] - xs[i - 1])
                row[key] = ys[i - 1] + w * (ys[i] - ys[i - 1])
        rows.append(row)
    return rows


def speedup_vs_glow(results: dict) -> dict:
    """For every Wavelet Flow run: the wall time at which its curve first reaches Glow's final bits/dim (linear
    between measured points; ``None`` if never) and ``speedup = Glow's wall time / that time``."""
    glow = results["runs"].get("glow")
    if not glow or not glow["curve"]:
        return {}
    target, glow_s = glow["curve"][-1]["bpd"], glow["curve"][-1]["wall_s"]
    out = {}
    for key, run in results["runs"].items():
        if key == "glow":
            continue
        reached, prev = None, None
        for c in run["curve"]:
            if c["bpd"] <= target:
                if prev is None or prev["bpd"] == c["bpd"]:
                    reached = c["wall_s"]
                else:  # interpolate between the last point above and the first at/below the target
                    w = (prev["bpd"] - target) / (prev["bpd"] - c["bpd"])
                    reached = prev["wall_s"] + w * (c["wall_s"] - prev["wall_s"])
                break
            prev = c
        out[key] = {"glow_final_bpd": target, "glow_s": glow_s, "reached_s": reached,
                    "speedup": None if reached is None else glow_s / reached}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    labels = {"wf_sequential": "Wavelet Flow, levels sequential", "wf_parallel": "Wavelet Flow, levels parallel",
              "glow": "Glow (multi-scale)"}
    for key, label in labels.items():
        if key in results["runs"]:
            run = results["runs"][key]
            xs = [c["wall_s"] for c in run["curve"]]
            ys = [c["bpd"] for c in run["curve"]]
            ax.plot(xs, ys, marker="o", label=f"{label} ({run['parameters'] / 1e6:.2f} M params)")
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("held-out bits/dim")
    ax.set_title(f"{results['config']['preset']} vs Glow, {results['config']['minutes']} min each (CPU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    finite = [c["bpd"] for r in results["runs"].values() for c in r["curve"] if math.isfinite(c["bpd"])]
    if finite:
        ax.set_ylim(min(finite) - 0.2, max(finite) + 1.0)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall time per method")
    ap.add_argument("--points", type=int, default=5, help="evaluations (rounds) per method")
    ap.add_argument("--preset", default="cpu_32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the single-process runs")
    ap.add_argument("--parallel", type=int, default=2, help="level workers of wf_parallel")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--glow-levels", type=int, default=3)
    ap.add_argument("--glow-steps", type=int, default=8)
    ap.add_argument("--glow-width", type=int, default=104)
    ap.add_argument("--max-test", type=int, default=256, help="held-out images evaluated")
    ap.add_argument("--only", default="wf_sequential,wf_parallel,glow")
    ap.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--name", default="wavelet_vs_glow", help="result file stem")
    ap.add_argument("--data", default="builtin", help="training images: 'builtin' or a folder (multiscale crops)")
    ap.add_argument("--test-data", default=None, help="held-out images (default: --data's held-out split)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    test = open_images(args.test_data or args.data, p.resolution, p.channels, "test").eval_images[: args.max_test]
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wf_vs_glow_")
        work = Path(tmp.name)
    else:
        work = Path(args.work_dir)
    results: dict = {"config": {**vars(args), "cpu_count": os.cpu_count(), "test_images": len(test)},
                     "loadavg_start": _loadavg(), "runs": {}}
    try:
        for key in args.only.split(","):
            if key == "wf_sequential":
                results["runs"][key] = run_wf_sequential(args, work / key, test)
            elif key == "wf_parallel":
                results["runs"][key] = run_wf_parallel(args, work / key, test)
            elif key == "glow":
                results["runs"][key] = run_glow(args, work / key, test)
            else:
                raise SystemExit(f"unknown run {key!r}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    results["loadavg_end"] = _loadavg()
    results["at_equal_time"] = at_equal_time(results, args.minutes * 60.0, args.points)
    final = {k: r["curve"][-1]["bpd"] for k, r in results["runs"].items() if r["curve"]}
    results["final_bpd"] = final
    results["speedup_vs_glow"] = speedup_vs_glow(results)
    for key, sp in results["speedup_vs_glow"].items():
        if sp["reached_s"] is None:
            print(f"{key}: never reached Glow's final {sp['glow_final_bpd']:.4f} bits/dim within its budget")
        else:
            print(f"{key}: reached Glow's final {sp['glow_final_bpd']:.4f} bits/dim after {sp['reached_s']:.0f} s "
                  f"(Glow: {sp['glow_s']:.0f} s) — {sp['speedup']:.2f}x sooner")
    print("final held-out bits/dim:", {k: round(v, 4) for k, v in final.items()})
    print("wrote", write_result(args.name, results))
    plot(results, RESULTS / f"{args.name}.png")
    print("wrote", RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
