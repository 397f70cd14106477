"""Wavelet Flow: all levels trained on parallel workers vs one after another, at the same wall-clock budget.

For every preset in ``--presets``, both schedules run :func:`~visionflows.wavelet.train.train_all_levels` from
scratch on random crops of the built-in photos with the same total budget ``--minutes`` (``max_minutes``: the
whole call, levels costliest first, time split by cost) and no step limit:

* ``sequential``: ``parallel=1``, the levels one after another in this process (all CPU threads, the default);
* ``sequential_1t``: the same with one torch thread (on a CPU shared with other processes, two threads per
  process can be many times slower than one: the threads wait for each other);
* ``parallel``: ``parallel=--parallel`` workers (this process plus long-lived worker processes), CPUs / workers
  threads each.

Then the assembled model's bits/dim is measured on the held-out built-in photos
(``open_images("builtin", R, 3, "test").eval_images``, dequantisation seed 1234; not counted in the wall time).
The schedules run in turn, in reverse order on every second repeat, so that a change of machine load hits
all of them. Reported per run: wall seconds, bits/dim, steps per level, level-steps per second, and
the 1-minute load average before and after (other processes on the machine slow both schedules).

Writes ``benchmarks/results/wavelet_parallel.json``.

usage: python benchmarks/bench_wavelet_parallel.py [--presets tiny_8,cpu_32] [--minutes 1.5] [--parallel 2]
       [--repeats 1] [--max-test 256] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import write_result  # noqa: E402
from visionflows.data.images import open_images  # noqa: E402
from visionflows.wavelet.train import assemble, train_all_levels  # noqa: E402

BIG = 10**8  # no step limit: the time budget stops every level
#: schedule → (workers, threads per worker or None for the default) given --parallel
SCHEDULES = {"sequential": lambda p: (1, None), "sequential_1t": lambda p: (1, 1), "parallel": lambda p: (p, None)}


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@torch.no_grad()
def held_out_bpd(root: Path, resolution: int, max_test: int) -> tuple[float, int]:
    test = open_images("builtin", resolution, 3, "test").eval_images[:max_test]
    model = assemble(root)
    gen = torch.Generator().manual_seed(1234)
    bpd = torch.cat([model.bits_per_dim(c, gen)["total"] for c in test.split(64)])
    return float(bpd.mean()), int(test.shape[0])


def run_once(preset: str, workers: int, minutes: float, root: Path, max_test: int, threads: int | None) -> dict:
    from visionflows.wavelet.presets import get_preset

    load0 = _loadavg()
    t0 = time.perf_counter()
    out = train_all_levels(preset, root, parallel=workers, data="builtin", steps=BIG, max_minutes=minutes,
                           checkpoint_every=BIG, tensorboard=False, threads=threads)
    wall = time.perf_counter() - t0
    load1 = _loadavg()
    bpd, n_test = held_out_bpd(root, get_preset(preset).resolution, max_test)
    steps = {lv: o.step for lv, o in out.items()}
    return {
        "workers": workers, "wall_s": wall, "bpd": bpd, "n_test": n_test, "level_steps": steps,
        "level_budget_s": {lv: o.budget_minutes * 60.0 for lv, o in out.items()},
        "level_worker": {lv: o.worker for lv, o in out.items()}, "threads": next(iter(out.values())).threads,
        "level_steps_per_s": sum(steps.values()) / wall, "loadavg_before": load0, "loadavg_after": load1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="tiny_8,cpu_32")
    ap.add_argument("--minutes", default="1.5", help="wall-clock budget per run; one value, or one per preset")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--schedules", default="sequential,sequential_1t,parallel")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every schedule per preset")
    ap.add_argument("--max-test", type=int, default=256, help="held-out crops evaluated")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default="wavelet_parallel", help="name of the JSON result in benchmarks/results/")
    args = ap.parse_args()
    presets = [p for p in args.presets.split(",") if p]
    minutes = [float(m) for m in str(args.minutes).split(",")]
    if len(minutes) == 1:
        minutes = minutes * len(presets)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_wf_parallel_"))
    config = {"presets": presets, "minutes": dict(zip(presets, minutes)), "parallel": args.parallel,
              "repeats": args.repeats, "cpus": len(os.sched_getaffinity(0))}
    results: dict = {"config": config, "runs": {}}
    print(f"{'preset':<8} {'schedule':<13} {'wall s':>7} {'bits/dim':>9} {'level-steps/s':>13} {'load':>9}  steps")
    for preset, mins in zip(presets, minutes):
        order = []
        for r in range(args.repeats):
            one = [(name, *SCHEDULES[name](args.parallel)) for name in args.schedules.split(",")]
            order += one if r % 2 == 0 else one[::-1]
        runs = results["runs"].setdefault(preset, {name: [] for name, _, _ in order})
        for k, (name, workers, threads) in enumerate(order):
            res = run_once(preset, workers, mins, work / f"{preset}-{name}-{k}", args.max_test, threads)
            runs[name].append(res)
            load = f"{res['loadavg_before'] or 0:.1f}→{res['loadavg_after'] or 0:.1f}"
            print(f"{preset:<8} {name:<13} {res['wall_s']:>7.1f} {res['bpd']:>9.4f} {res['level_steps_per_s']:>13.1f} "
                  f"{load:>9}  {list(res['level_steps'].values())}", flush=True)
            write_result(args.out, results)
    path = write_result(args.out, results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
