"""How :func:`~visionflows.wavelet.parallel.train_all_levels` shares the levels over its workers: each level's
cost (remaining steps × seconds per step, measured in ``logs/schedule.json`` or estimated by
:func:`estimate_step_seconds`), the longest-first placement :func:`plan_levels`, the thread-safe job queue with
its time budgets (``_Schedule``) and the ``logs/schedule.json`` record of a run. The policy is described in
:mod:`visionflows.wavelet.parallel`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visionflows.wavelet.level import level_dims
from visionflows.wavelet.presets import WaveletPreset, get_preset
from visionflows.wavelet.pyramid import n_levels_for
from visionflows.wavelet.worker import LevelJob, LevelOutcome

__all__ = [
    "DEFAULT_JOB_OVERHEAD_S",
    "DEFAULT_WORKER_STARTUP_S",
    "MIN_JOB_MINUTES",
    "estimate_step_seconds",
    "plan_levels",
]

#: smallest time budget handed to a job (it still trains at least one step and writes a checkpoint)
MIN_JOB_MINUTES = 1e-3
#: per-job overhead (model build, DDI, checkpoint, evaluation) assumed until one is measured
DEFAULT_JOB_OVERHEAD_S = 0.3
#: start-up of a worker process (interpreter, torch, data) assumed until one is measured
DEFAULT_WORKER_STARTUP_S = 4.0


# ---------------------------------------------------------------------------------------------------- cost


def estimate_step_seconds(
    preset: str | WaveletPreset, level: int, batch_size: int | None = None, device: str = "cpu", threads: int = 1
) -> float:
    """Estimated seconds per training step of ``level`` (only ratios between levels matter).

    Multiply-adds of forward + backward (≈ 3 × forward) of the level's coupling nets on its (cropped) coefficient
    grid — ``batch · pixels · steps · (10·res_blocks·width² + …)`` — at a nominal rate, plus a fixed cost per
    layer and per step (kernel launches, Python), calibrated on a 2-core x86 CPU (one thread: within 25% of the
    measured time of every ``cpu_32`` level) and scaled for CUDA.
    """
    p = get_preset(preset)
    n = n_levels_for(p.resolution, "preset resolution")
    c, q, _ = level_dims(level, p.channels)
    batch = int(batch_size or p.batch_size)
    side = 1 if level == 0 else max(1, (p.resolution // p.crops[level]) >> (n - level + 1))
    w, k, rb = p.widths[level], p.steps[level], p.res_blocks
    if c < 2:
        macs, layers = 0.0, 1
    else:
        c1, c2 = c // 2, c - c // 2
        per_pixel = (c1 + q) * w + rb * 10 * w * w + 9 * w * 2 * c2 + c * c
        macs = 3.0 * batch * k * side * side * per_pixel
        layers = k * (rb + 1)
    if str(device).startswith("cuda"):
        return 5e-4 + 6e-5 * layers + macs / 2e13
    return 1e-3 + 7.5e-4 * layers + macs / (4.5e10 * max(1, int(threads)))


def plan_levels(costs: dict[int, float], workers: int, startup: Sequence[float] = ()) -> list[list[int]]:
    """Longest-processing-time-first placement: each level (costliest first) goes to the least loaded worker.

    ``startup[k]``: worker ``k``'s initial load, in the same units as ``costs``. Returns each worker's levels in
    the order it trains them (costliest first). Ties go to the higher level (the larger data).
    """
    loads = [float(startup[k]) if k < len(startup) else 0.0 for k in range(max(1, workers))]
    plan: list[list[int]] = [[] for _ in loads]
    for lv in sorted(costs, key=lambda v: (-costs[v], -v)):
        k = min(range(len(loads)), key=lambda i: (loads[i], i))
        plan[k].append(lv)
        loads[k] += costs[lv]
    return plan


# ------------------------------------------------------------------------------------------------- schedule


class _Schedule:
    """The queue the workers pull from (thread-safe): shared longest-first, or per worker with a deadline."""

    def __init__(self, jobs: dict[int, LevelJob], costs: dict[int, float], workers: int,
                 deadline: float | None, startup_s: float, t0: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.jobs, self.costs, self.deadline, self.t0, self.clock = jobs, costs, deadline, t0, clock
        self.lock = threading.Lock()
        self.cancelled = False
        self.outcomes: dict[int, LevelOutcome] = {}
        self.overheads: list[float] = []  # seconds outside the training loop of jobs after a worker's first
        self.reported: set[int] = set()  # workers that have finished a job
        self.spare: list[int] = []  # levels of a worker that died before it took them
        if deadline is None:
            self.shared: list[int] | None = sorted(jobs, key=lambda v: (-costs[v], -v))
            self.queues: list[list[int]] = [[] for _ in range(workers)]
        else:
            self.shared = None
            total = sum(costs.values()) or 1.0
            unit = total / max(1e-9, workers * (deadline - t0))  # cost units per second of one worker
            start = [0.0] + [startup_s * unit] * (workers - 1)
            self.queues = plan_levels(costs, workers, start)

    def overhead(self) -> float:
        """Expected seconds a job spends outside its training loop (model build, DDI, checkpoint, evaluation):
        the least measured, leaving out a worker process's first job (it also opens the images)."""
        return min(self.overheads) if self.overheads else DEFAULT_JOB_OVERHEAD_S

    def next(self, worker: int) -> LevelJob | None:
        with self.lock:
            if self.cancelled:
                return None
            if self.shared is not None:
                return self.jobs[self.shared.pop(0)] if self.shared else None
            queue = self.queues[worker]
            if not queue and self.spare:
                queue.append(self.spare.pop(0))
            if not queue:
                return None
            lv = queue.pop(0)
            rest = [lv, *queue]
            left = self.deadline - self.clock() - self.overhead() * len(rest)
            total = sum(self.costs[v] for v in rest)
            share = self.costs[lv] / total if total > 0 else 1.0 / len(rest)
            minutes = max(MIN_JOB_MINUTES, left * share / 60.0)
            return dataclasses.replace(self.jobs[lv], max_minutes=minutes)

    def report(self, outcome: LevelOutcome) -> None:
        with self.lock:
            self.outcomes[outcome.level] = outcome
            if outcome.ok and outcome.budget_minutes is not None and outcome.steps_done:
                if outcome.worker == 0 or outcome.worker in self.reported:  # not a worker process's first
                    self.overheads.append(max(0.0, outcome.wall_s - outcome.budget_minutes * 60.0))
                self.reported.add(outcome.worker)

    def worker_lost(self, worker: int) -> None:
        """A worker died: the levels it had not started go to whichever worker runs out of work first."""
        with self.lock:
            if self.shared is None:
                self.spare.extend(self.queues[worker])
                self.queues[worker] = []


# ------------------------------------------------------------------------------------------- measured times


def _measured(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "logs" / "schedule.json").read_text())
    except (OSError, ValueError):
        return {}


def _measured_step_seconds(prev: dict, level: int, threads: int, device: str, batch: int) -> float | None:
    row = prev.get("levels", {}).get(str(level))
    if not row or not row.get("s_per_step"):
        return None
    same = row.get("threads") == threads and str(row.get("device", "")).split(":")[0] == device.split(":")[0]
    return float(row["s_per_step"]) if same and row.get("batch_size") == batch else None


def _write_schedule(root, outcomes, remotes, workers, threads, devices, max_minutes, wall_s, batch) -> None:
    from visionflows.io import atomic_write_text

    rows = {}
    for lv, o in outcomes.items():
        row = asdict(o)
        if o.ok and o.steps_done:
            train_s = min(o.wall_s, o.budget_minutes * 60.0) if o.budget_minutes is not None else o.wall_s
            row["s_per_step"] = train_s / o.steps_done
        row["batch_size"] = batch
        rows[str(lv)] = row
    startups = [r.startup_s for r in remotes if r.startup_s is not None]
    doc = {"workers": workers, "threads": threads, "devices": devices, "max_minutes": max_minutes,
           "wall_s": wall_s, "worker_startup_s": max(startups) if startups else None, "levels": rows}
    atomic_write_text(root / "logs" / "schedule.json", json.dumps(doc, indent=2) + "\n")
