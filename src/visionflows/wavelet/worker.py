"""Long-lived Wavelet Flow level workers: the job messages, both ends of the worker protocol, one job's run.

The child side is ``python -m visionflows.wavelet.worker`` (started by
:func:`visionflows.wavelet.parallel.train_all_levels` through :class:`WorkerProcess`; not a user command).
Protocol, one JSON object per line: the worker writes ``{"ready": pid}`` once torch and the training code are
imported; then for every ``{"job": LevelJob}`` read from stdin it trains that level (:func:`run_job`, the image
pool kept between jobs) with its stdout and stderr (file descriptors 1 and 2, so C-level output too) sent to the
job's log, and answers ``{"outcome": LevelOutcome}``. Closing stdin while idle ends the worker. Closing it while a
job runs, or the parent process dying (its parent id changes), kills the worker's process group at once: no
orphan keeps training after its parent is gone.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from visionflows.wavelet.presets import get_preset

__all__ = ["LevelJob", "LevelOutcome", "WorkerProcess", "current_step", "main", "run_job", "warm_up",
           "worker_command"]

POLL_S = 0.5
#: environment variable with the image source ``[data, resolution, channels, on_error]`` a worker opens at start-up
PRELOAD_ENV = "VISIONFLOWS_WORKER_IMAGES"


# ------------------------------------------------------------------------------------------------ messages
@dataclass
class LevelJob:
    """Everything one level's training needs, as JSON-able values (the message a worker receives)."""

    level: int
    run_dir: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    on_error: str = "skip"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    amp: str | None = None
    compile: bool = False
    checkpoint_every: int | None = None
    device: str = "auto"
    num_threads: int | None = None
    max_minutes: float | None = None
    tensorboard: bool = True
    log: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def describe_budget(self) -> str:
        return f", {self.max_minutes * 60:.1f} s" if self.max_minutes is not None else f", {self.steps} steps"


@dataclass
class LevelOutcome:
    """What became of one level: where and how long it trained, from which step to which, its held-out metrics."""

    level: int
    ok: bool
    worker: int = -1
    pid: int = 0
    device: str = ""
    threads: int = 0
    start_step: int = 0
    step: int = 0
    budget_minutes: float | None = None
    started_s: float = 0.0
    wall_s: float = 0.0
    eval: dict[str, float] = field(default_factory=dict)
    error_type: str | None = None
    error: str | None = None
    fix: str | None = None

    @property
    def steps_done(self) -> int:
        return max(0, self.step - self.start_step)

    def summary(self) -> str:
        if not self.ok:
            return f"level {self.level}: FAILED ({self.error_type}: {self.error})"
        bpd = f", held-out {self.eval['bpd']:.4f} bits/dim" if "bpd" in self.eval else ""
        return f"level {self.level}: done (step {self.start_step} → {self.step} in {self.wall_s:.1f} s{bpd})"


def worker_command() -> list[str]:
    """The command line of a worker process (a library entry point that reads JSON jobs; no CLI flags)."""
    return [sys.executable, "-m", "visionflows.wavelet.worker"]


def current_step(run_dir: Path) -> int:
    from visionflows.training import find_checkpoints

    ckpts = find_checkpoints(run_dir)
    return int(ckpts[-1].name.split("-")[-1]) if ckpts else 0


def warm_up() -> None:
    """Pay a process's one-time costs before the first job's clock starts: torch, the trainer and the model code,
    and what torch imports lazily when the first optimiser is built (``torch._dynamo``: seconds on a busy CPU)."""
    import torch

    import visionflows.training.trainer  # noqa: F401
    import visionflows.wavelet.train  # noqa: F401
    from visionflows.training.optim import build_optimizer

    build_optimizer("adamax_glow", [torch.zeros(1, requires_grad=True)], 1e-3, None, 0.0)


def run_job(job: LevelJob, pools: dict | None = None, worker: int = 0) -> LevelOutcome:
    """Train one level as ``job`` says (used by both the calling process and the worker processes).

    ``pools`` caches the opened image pool between jobs. Errors do not propagate: the outcome says what failed
    (the traceback goes to the job's log).
    """
    import torch

    from visionflows.data.images import open_images
    from visionflows.wavelet.train import train_level

    t0 = time.monotonic()
    out = LevelOutcome(job.level, False, worker, os.getpid(), job.device, job.num_threads or torch.get_num_threads(),
                       budget_minutes=job.max_minutes)
    try:
        preset = get_preset(job.preset, **job.overrides)
        key = (job.data, preset.resolution, preset.channels, job.on_error)
        pools = {} if pools is None else pools
        if key not in pools:
            pools[key] = open_images(job.data, preset.resolution, preset.channels, "train", on_error=job.on_error)
        out.start_step = current_step(Path(job.run_dir)) if job.resume else 0
        res = train_level(
            job.preset, job.level, job.run_dir, data=pools[key], steps=job.steps, batch_size=job.batch_size,
            lr=job.lr, warmup_steps=job.warmup_steps, seed=job.seed, resume=job.resume, overwrite=job.overwrite,
            amp=job.amp, compile=job.compile, num_threads=job.num_threads, progress=False,
            checkpoint_every=job.checkpoint_every, device=job.device, tensorboard=job.tensorboard,
            max_minutes=job.max_minutes, train_overrides=job.train_overrides, **job.overrides,
        )
        out.ok, out.step, out.eval = True, int(res.step), {k: float(v) for k, v in res.eval_metrics.items()}
    except Exception as err:  # reported to the parent; the traceback goes to the log
        out.error_type, out.error = type(err).__name__, getattr(err, "problem", None) or str(err) or repr(err)
        out.fix = getattr(err, "fix", None)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    out.wall_s = time.monotonic() - t0
    return out


# --------------------------------------------------------------------------------------------- parent side
class WorkerProcess:
    """Parent side: one worker process and the thread that feeds it jobs.

    ``schedule`` gives jobs (``next(index)`` → :class:`LevelJob` or ``None``), takes outcomes (``report``), and
    hands the jobs of a worker that died to the others (``worker_lost(index)``); ``schedule.t0`` is the start.
    """

    def __init__(self, index: int, schedule: Any, root: Path, env: dict[str, str], device: str, log) -> None:
        self.index, self.schedule, self.root, self.env, self.log = index, schedule, root, env, log
        self.device = device
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"wavelet-worker-{index}", daemon=True)

    def _run(self) -> None:
        job = None
        try:
            t0 = time.monotonic()
            with open(self.root / "logs" / f"worker_{self.index}.log", "w") as err_log:
                self.proc = subprocess.Popen(
                    worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_log,
                    env=dict(self.env, VISIONFLOWS_WORKER_INDEX=str(self.index)),
                    text=True, bufsize=1, start_new_session=True,
                )
            ready = self.proc.stdout.readline()
            if not ready:
                raise RuntimeError(f"worker {self.index} exited during start-up (exit {self.proc.wait()})")
            self.startup_s = time.monotonic() - t0
            while (job := self.schedule.next(self.index)) is not None:
                job = replace(job, device=self.device)
                self._say(f"level {job.level}: started on worker {self.index} (pid {self.proc.pid}, "
                          f"{job.device}, {job.num_threads} thread(s){job.describe_budget()})")
                self.proc.stdin.write(json.dumps({"job": asdict(job)}) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"worker {self.index} (pid {self.proc.pid}) died (exit {self.proc.wait()})")
                out = LevelOutcome(**json.loads(line)["outcome"])
                out.started_s = max(0.0, time.monotonic() - self.schedule.t0 - out.wall_s)
                self.schedule.report(out)
                self._say(out.summary())
                job = None
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception as err:  # the worker is gone: report its level and hand its queue to the others
            if job is not None:
                self.schedule.report(LevelOutcome(job.level, False, self.index, getattr(self.proc, "pid", 0),
                                                  job.device, error_type="WorkerDied", error=str(err)))
                self._say(f"level {job.level}: FAILED ({err})")
            self.schedule.worker_lost(self.index)
            self.kill()

    def _say(self, msg: str) -> None:
        if self.log:
            self.log(msg)

    def kill(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------- child side
class _Guard:
    """Watches stdin and the parent process; ``busy`` is set while a job runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = False
        self.eof = False
        self.messages: queue.Queue = queue.Queue()
        self.parent = os.getppid()

    def die(self) -> None:
        if os.getpgrp() == os.getpid():  # our own group (the parent started us with start_new_session)
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(3)

    def read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip():
                self.messages.put(line)
        with self.lock:
            self.eof = True
            if self.busy:
                self.die()
        self.messages.put(None)

    def watch_parent(self) -> None:
        while True:
            time.sleep(POLL_S)
            if os.getppid() != self.parent:
                self.die()

    def start_job(self) -> bool:
        with self.lock:
            if self.eof:
                return False
            self.busy = True
            return True

    def end_job(self) -> None:
        with self.lock:
            self.busy = False


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints go to the worker's log, never into the protocol
    guard = _Guard()
    threading.Thread(target=guard.read_stdin, daemon=True).start()
    threading.Thread(target=guard.watch_parent, daemon=True).start()

    warm_up()

    pools: dict = {}
    if os.environ.get(PRELOAD_ENV):  # open the images now, not inside the first job's time budget
        from visionflows.data.images import open_images

        key = tuple(json.loads(os.environ[PRELOAD_ENV]))
        try:
            pools[key] = open_images(key[0], key[1], key[2], "train", on_error=key[3])
        except Exception:  # the first job opens them again and reports the error
            traceback.print_exc()
    proto.write(json.dumps({"ready": os.getpid()}) + "\n")
    saved = (os.dup(1), os.dup(2))
    index = int(os.environ.get("VISIONFLOWS_WORKER_INDEX", "1"))
    while (line := guard.messages.get()) is not None:
        job = LevelJob(**json.loads(line)["job"])
        if not guard.start_job():
            break
        try:
            if job.log:
                with open(job.log, "a") as fh:
                    fh.write(f"level {job.level} trained by worker {index} (pid {os.getpid()})\n")
                    fh.flush()
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.dup2(fh.fileno(), 1)
                    os.dup2(fh.fileno(), 2)
            out = run_job(job, pools, worker=index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            guard.end_job()
        proto.write(json.dumps({"outcome": asdict(out)}) + "\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every job is reported and its checkpoints are on disk: skip the interpreter's slow teardown
