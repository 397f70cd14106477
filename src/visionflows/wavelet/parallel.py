"""Training every level of a Wavelet Flow: long-lived workers, a longest-first queue, budgets set by cost.

:func:`train_all_levels` trains levels ``0..n`` (each its own run dir ``run_root/level_L``, as
:func:`~visionflows.wavelet.train.train_level` writes it) on ``parallel`` workers:

* **Workers pay start-up once.** Worker 0 is the calling process itself; workers ``1..P−1`` are library
  processes (``python -m visionflows.wavelet.worker``, see :mod:`visionflows.wavelet.worker`) that receive one
  JSON job spec at a time on stdin and train level after level, keeping the image pool loaded. Nothing re-parses
  a command line.
* **Longest first, budgets by cost.** A level's cost is its remaining steps × its seconds per step, measured in
  an earlier run of the same run root (``logs/schedule.json``) or else estimated from the level's shape
  (:func:`estimate_step_seconds`: multiply-adds ∝ batch · pixels · steps · width², plus a per-layer overhead).
  Without a time limit, idle workers take the costliest level left from one shared queue. With
  ``max_minutes`` (the wall-clock budget of the *whole* call), the levels are placed longest-first on the least
  loaded worker, and each job's time budget is the worker's remaining time (to the common deadline, minus the
  measured per-job overhead) shared over the levels it has left in proportion to their cost, so every worker
  ends at the deadline and every level gets time in proportion to its cost.
* **One level per device.** With several CUDA devices (``device`` ``"auto"`` or ``"cuda"``), worker ``k`` uses
  ``cuda:k mod G``; ``parallel=None`` means one worker per device.
* **No orphans.** Workers run in their own process group; on SIGINT / SIGTERM or any exception the parent kills
  those groups, and a worker whose parent dies (even by SIGKILL) sees its stdin close or its parent id change and
  kills its own group within a second. Checkpoints are written atomically, so a killed level resumes cleanly.

The costs, the placement and the job queue are in :mod:`visionflows.wavelet.schedule` (re-exported here); the
worker processes in :mod:`visionflows.wavelet.worker`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from visionflows.errors import ConfigError, VisionflowsError
from visionflows.wavelet.model import n_levels_for
from visionflows.wavelet.presets import WaveletPreset, get_preset
from visionflows.wavelet.schedule import (
    DEFAULT_JOB_OVERHEAD_S,  # noqa: F401  (importable here as before)
    DEFAULT_WORKER_STARTUP_S,
    MIN_JOB_MINUTES,  # noqa: F401  (importable here as before)
    _measured,
    _measured_step_seconds,
    _Schedule,
    _write_schedule,
    estimate_step_seconds,
    plan_levels,
)
from visionflows.wavelet.worker import (
    PRELOAD_ENV,
    LevelJob,
    LevelOutcome,
    WorkerProcess,
    current_step,
    killpg,
    run_job,
    warm_up,
)

__all__ = [
    "LevelJob",
    "LevelOutcome",
    "estimate_step_seconds",
    "plan_levels",
    "train_all_levels",
]


def _local_job(job: LevelJob, pools: dict, log) -> LevelOutcome:
    """Worker 0: the calling process trains the level itself; its log file gets a header and any traceback."""
    import contextlib
    import io

    if log:
        log(f"level {job.level}: started on worker 0 (this process, pid {os.getpid()}, {job.device}, "
            f"{job.num_threads} thread(s){job.describe_budget()})")
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        out = run_job(job, pools, worker=0)
    if job.log:
        with open(job.log, "a") as fh:
            fh.write(f"level {job.level} trained by the calling process (pid {os.getpid()})\n{buf.getvalue()}"
                     f"{out.summary()}\n")
    return out


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_env(threads: int, pool_key: tuple) -> dict[str, str]:
    """The workers' environment: thread counts, this visionflows on the path, the images to open at start-up."""
    import visionflows

    src = str(Path(visionflows.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONPATH=src + (os.pathsep + path if path else ""), **{PRELOAD_ENV: json.dumps(list(pool_key))})


def train_all_levels(
    preset: str | WaveletPreset,
    run_root: str | os.PathLike,
    parallel: int | None = 1,
    levels: Sequence[int] | None = None,
    data: str | os.PathLike | None = None,
    steps: int | None = None,
    max_minutes: float | None = None,
    threads: int | None = None,
    log: Callable[[str], Any] | None = None,
    *,
    batch_size: int | None = None,
    lr: float | None = None,
    warmup_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    amp: str | None = None,
    compile: bool = False,
    checkpoint_every: int | None = None,
    device: str = "auto",
    on_error: str = "skip",
    tensorboard: bool = True,
    train_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[int, LevelOutcome]:
    """Train every level of ``preset`` into ``run_root/level_L`` on ``parallel`` long-lived workers.

    See the module docstring for the workers, the queue and the budgets. ``steps``: each level's step target
    (default: the preset's ``max_steps``). ``max_minutes``: wall-clock budget of the whole call, shared over the
    levels by cost (each level still stops at ``steps``). ``threads``: torch threads per worker (default: the
    usable CPUs divided by the workers). ``resume`` continues every level from its newest checkpoint; the other
    keyword arguments are :func:`~visionflows.wavelet.train.train_level`'s (``train_overrides``: further
    :class:`~visionflows.training.TrainConfig` settings for every level, e.g. ``grad_clip``, ``ema_decay``).
    Per-level logs go to ``run_root/logs/level_L.log``, the schedule and measured step times to
    ``run_root/logs/schedule.json``.

    Returns ``{level: LevelOutcome}``. Raises the level's own error class (e.g. :class:`ConfigError`) when every
    failed level failed with the same user error, else :class:`VisionflowsError` naming the failed levels.
    """
    import torch

    t0 = time.monotonic()  # the budget covers the whole call
    p = get_preset(preset, **overrides)
    n = n_levels_for(p.resolution, "preset resolution")
    todo = list(range(n + 1)) if levels is None else sorted({int(v) for v in levels})
    bad = [lv for lv in todo if not 0 <= lv <= n]
    if bad or not todo:
        raise ConfigError(f"level(s) {bad or '(none)'} outside 0..{n} for preset {p.name}.", f"use levels 0..{n}.")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigError(f"max_minutes must be a positive number, got {max_minutes}.", "pass e.g. --max-minutes 5.")
    for name, val in (("parallel", parallel), ("threads", threads)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
            raise ConfigError(f"{name} must be a whole number >= 1, got {val!r}.", f"pass e.g. --{name} 2.")
    root = Path(run_root)
    from visionflows.training import find_checkpoints
    from visionflows.training.rundir import check_resume_flags, check_run_dir
    from visionflows.validation import check_output_dir
    from visionflows.wavelet.train import level_run_dir

    check_resume_flags(resume, overwrite)
    check_output_dir(root, "--run-dir")
    # resume: every level that has a checkpoint continues from it, the others start; each level dir is checked
    # (content, lock) before any work, so a bad --run-dir / --resume fails at once and for all levels together
    resumes = {lv: bool(resume and find_checkpoints(level_run_dir(root, lv))) for lv in todo}
    if resume and not any(resumes.values()):
        raise ConfigError(f"cannot resume {root}: none of its level dirs (level_0 … level_{n}) holds a checkpoint.",
                          "drop --resume to start a new run there, or give the --run-dir of the run to continue.")
    for lv in todo:
        check_run_dir(level_run_dir(root, lv), resumes[lv], overwrite)
    (root / "logs").mkdir(parents=True, exist_ok=True)

    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    if parallel is None:
        parallel = gpus if gpus > 1 else 1
    workers = max(1, min(int(parallel), len(todo)))
    nthreads = int(threads or max(1, _cpus() // workers))
    devices = [f"cuda:{k % gpus}" if gpus else ("cpu" if device == "auto" else device) for k in range(workers)]

    previous = _measured(root)
    target = int(steps if steps is not None else p.max_steps)
    jobs: dict[int, LevelJob] = {}
    costs: dict[int, float] = {}
    for lv in todo:
        run_dir = level_run_dir(root, lv)
        jobs[lv] = LevelJob(
            lv, str(run_dir), p.name, dict(overrides), None if data is None else str(data), on_error, target,
            batch_size, lr, warmup_steps, seed, resumes[lv], overwrite, amp, compile, checkpoint_every, device,
            nthreads, None, tensorboard, str(root / "logs" / f"level_{lv}.log"), dict(train_overrides or {}),
        )
        done = current_step(run_dir) if resumes[lv] else 0
        per_step = _measured_step_seconds(previous, lv, nthreads, devices[0], batch_size or p.batch_size)
        if per_step is None:
            per_step = estimate_step_seconds(p, lv, batch_size, devices[0], nthreads)
        costs[lv] = max(0, target - done) * per_step
    for lv in todo:
        if not resume:
            Path(jobs[lv].log).write_text("")
    deadline = t0 + 60.0 * max_minutes if max_minutes is not None else None
    startup = float(previous.get("worker_startup_s") or DEFAULT_WORKER_STARTUP_S)
    schedule = _Schedule(jobs, costs, workers, deadline, startup, t0)

    pool_key = (None if data is None else str(data), p.resolution, p.channels, on_error)
    env = _worker_env(nthreads, pool_key)
    remotes = [WorkerProcess(k, schedule, root, env, devices[k], log) for k in range(1, workers)]
    old_threads = torch.get_num_threads()
    old_term = _install_term_handler(remotes)
    try:
        for r in remotes:
            r.thread.start()
        from visionflows.data.images import open_images

        # opened here once (the workers open it during their start-up): bad data fails before any level starts
        pools = {pool_key: open_images(pool_key[0], p.resolution, p.channels, "train", on_error=on_error)}
        warm_up()
        while (job := schedule.next(0)) is not None:
            job = dataclasses.replace(job, device=devices[0])
            out = _local_job(job, pools, log)
            out.started_s = max(0.0, time.monotonic() - t0 - out.wall_s)
            schedule.report(out)
            if log:
                log(out.summary())
        for r in remotes:
            r.thread.join()
        while (job := schedule.next(0)) is not None:  # levels left by a worker that died
            out = _local_job(dataclasses.replace(job, device=devices[0]), pools, log)
            schedule.report(out)
            if log:
                log(out.summary())
    except BaseException:
        schedule.cancelled = True
        for r in remotes:
            r.kill()
        raise
    finally:
        torch.set_num_threads(old_threads)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    outcomes = schedule.outcomes
    _write_schedule(root, outcomes, remotes, workers, nthreads, devices, max_minutes, time.monotonic() - t0,
                    batch_size or p.batch_size)
    _raise_failures(outcomes, todo, root)
    return dict(sorted(outcomes.items()))


def _install_term_handler(remotes: list[WorkerProcess]):
    """On SIGTERM kill the workers' process groups, then die of SIGTERM as before (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        for r in remotes:
            if r.proc is not None:
                killpg(r.proc.pid, signal.SIGKILL)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    return previous if previous is not None else signal.SIG_DFL


def _raise_failures(outcomes: dict[int, LevelOutcome], todo: list[int], root: Path) -> None:
    failed = [lv for lv in todo if lv not in outcomes or not outcomes[lv].ok]
    if not failed:
        return
    errs = [outcomes.get(lv) for lv in failed]
    first = errs[0]
    fix = "fix the problem and rerun with --resume (finished levels are kept)."
    if first is not None and all(e is not None and (e.error_type, e.error) == (first.error_type, first.error)
                                 for e in errs):
        import visionflows.errors as E

        cls = getattr(E, first.error_type or "", None)
        if isinstance(cls, type) and issubclass(cls, VisionflowsError):
            raise cls(f"level(s) {failed} failed: {first.error}", first.fix or fix)
    logs = ", ".join(str(root / "logs" / f"level_{lv}.log") for lv in failed)
    why = "; ".join(f"level {lv}: {e.error_type}: {e.error}" if e else f"level {lv}: not run"
                    for lv, e in zip(failed, errs))
    raise VisionflowsError(f"level(s) {failed} failed ({why}; logs: {logs}).", fix)
