"""The life cycle of a run directory: one writer at a time, resume semantics that never guess, no leftovers.

* **Lock.** :func:`open_run_dir` takes an exclusive ``flock`` on ``RUN_DIR/.lock`` for the whole training and
  writes the holder's pid, host and start time into it; a second process gets a :class:`RunDirBusyError`
  naming the holder. The operating system drops the lock when its process dies (even by ``kill -9``), so a
  stale ``.lock`` file never blocks a later start. The file is removed when the run ends.
* **What a run is.** A run directory is a run once it holds a complete checkpoint
  (``checkpoints/step-N/state.pt``). A folder holding only what a failed start leaves (``config.json``,
  ``metrics.jsonl``, ``tb/``, an empty ``checkpoints/``) is not a run: a plain rerun reuses it.
* **Resume never guesses.** ``resume=True`` needs a run: a missing folder or one without a checkpoint is an
  error, not a silent fresh start; ``resume`` with ``overwrite`` is refused as contradictory; a plain start in
  a folder that holds a run is refused unless ``overwrite``.
* **Stale temporaries** (``checkpoints/.step-*.tmp`` and ``.*.tmp`` files left by a process killed while
  writing) are deleted at the next start, under the lock.
* **Failed starts leave nothing.** :meth:`RunDir.discard_if_not_a_run` (called by the trainer when training
  fails before its first checkpoint) deletes what the run wrote, and the folder itself if this start created it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from visionflows.errors import ConfigError, OutputError

__all__ = ["RunDir", "RunDirBusyError", "check_resume_flags", "check_run_dir", "open_run_dir", "RUN_FILES",
           "LOCK_NAME"]

LOCK_NAME = ".lock"
#: what the trainer writes into a run directory
RUN_FILES = ("config.json", "metrics.jsonl", "tb", "checkpoints")


class RunDirBusyError(ConfigError):
    """Another process holds the run directory's lock."""


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "state.pt").is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process"
    since = info.get("started", "")
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}" + (f" (since {since})" if since else "")


@dataclass
class RunDir:
    """An opened (locked) run directory; see the module docstring."""

    path: Path
    created: bool
    resume: bool
    _fd: int | None = field(default=None, repr=False)
    _created_root: Path | None = field(default=None, repr=False)

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def checkpoints(self) -> list[Path]:
        return _complete_checkpoints(self.path)

    def release(self) -> None:
        """Drop the lock and delete the lock file (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def discard_if_not_a_run(self) -> bool:
        """After a failure: if the folder holds no complete checkpoint, delete what the trainer wrote (the whole
        folder if this start created it) and release the lock. Returns True if something was discarded."""
        if self.checkpoints():
            self.release()
            return False
        for name in RUN_FILES:
            _remove(self.path / name)
        self.release()
        if self.created and self._created_root is not None:
            # remove the folders this start created (deepest first), if nothing else appeared in them
            p = self.path
            while True:
                with contextlib.suppress(OSError):
                    p.rmdir()
                if p == self._created_root or p == p.parent:
                    break
                p = p.parent
        return True


def _lock(run: RunDir) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: an exclusive create stands in for the lock
        fcntl = None
    path = run.lock_path
    for _ in range(20):
        if fcntl is None:  # pragma: no cover
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise _busy(run.path, path) from None
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(run.path, path) from None
            # the previous holder may have unlinked the file between our open and flock: lock the live one
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        run._fd = fd
        return
    raise _busy(run.path, path)  # pragma: no cover - the lock file kept being replaced


def _busy(run_dir: Path, lock_path: Path) -> RunDirBusyError:
    who = _holder(lock_path)
    return RunDirBusyError(
        f"run directory {run_dir} is in use by another training: {who}.",
        "wait for that process to finish (or stop it), or choose another --run-dir; two trainings must not "
        "write to one run directory.",
    )


def _clean_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete ``.*.tmp`` files/folders left by an atomic write that was killed (we hold the lock)."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                _remove(p)
                removed.append(p)
    return removed


def _is_failed_start(run_dir: Path, entries: list[Path]) -> bool:
    """Only trainer files and no complete checkpoint: what a start that failed (or was killed) early leaves."""
    if not entries or _complete_checkpoints(run_dir):
        return False
    if any(p.name not in RUN_FILES for p in entries):
        return False
    cfg = run_dir / "config.json"
    if cfg.exists():
        try:
            if "task_name" not in json.loads(cfg.read_text()):
                return False
        except (OSError, json.JSONDecodeError, TypeError):
            return False
    return True


def check_resume_flags(resume: bool, overwrite: bool) -> None:
    """``resume`` and ``overwrite`` together are contradictory: :class:`ConfigError`."""
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite contradict each other (continue the run, or delete it and start again?).",
            "pass --resume to continue the run, or --overwrite to delete it and start again, not both.",
        )


def _decide(path: Path, entries: list[Path], resume: bool, overwrite: bool) -> bool:
    """Raise if the folder's content contradicts the request; True if the entries must be deleted first."""
    checkpoints = _complete_checkpoints(path)
    if resume:
        if not checkpoints:
            what = ("it is empty" if not entries else "it holds no checkpoint (its training ended before the first "
                    "one)" if _is_failed_start(path, entries) else "it holds no visionflows checkpoint")
            raise ConfigError(f"cannot resume {path}: {what}.",
                              "drop --resume to start a new run there, or give the --run-dir of the run to continue.")
        return False
    if not entries:
        return False
    if overwrite or _is_failed_start(path, entries):
        return True
    if checkpoints:
        raise ConfigError(f"run directory {path} is not empty: it holds a run (last checkpoint "
                          f"{checkpoints[-1].name}).",
                          "pass --resume to continue it, --overwrite to delete it and start again, or choose another "
                          "--run-dir.")
    shown = ", ".join(p.name for p in entries[:4]) + (" …" if len(entries) > 4 else "")
    raise ConfigError(f"run directory {path} is not empty and holds no run ({shown}).",
                      "choose another (new or empty) --run-dir, or pass --overwrite to delete its contents.")


def _entries(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir()
                  if p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def _missing(path: Path, resume: bool) -> None:
    check_resume_flags(resume, False)
    if path.exists() and not path.is_dir():
        raise OutputError(f"run directory {path} exists and is not a directory.", "choose another --run-dir.")
    if resume and not path.exists():
        raise ConfigError(f"cannot resume: run directory {path} does not exist.",
                          "drop --resume to start a new run there, or give the --run-dir of the run to continue.")


def check_run_dir(run_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
    """The decisions of :func:`open_run_dir` without its side effects (nothing is created, locked or deleted):
    commands call it before any work starts, so a bad ``--run-dir`` / ``--resume`` fails at once."""
    from visionflows.validation import check_output_dir

    path = Path(run_dir)
    check_resume_flags(resume, overwrite)
    check_output_dir(path, "--run-dir")
    _missing(path, resume)
    if not path.is_dir():
        return
    _decide(path, _entries(path), resume, overwrite)
    lock = path / LOCK_NAME
    if lock.exists():
        try:
            import fcntl

            fd = os.open(lock, os.O_RDONLY)
        except (ImportError, OSError):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(path, lock) from None
        finally:
            os.close(fd)


def open_run_dir(run_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> RunDir:
    """Create (if needed) and lock ``run_dir`` and decide, without guessing, whether this is a fresh start or a
    resume; see the module docstring. Raises :class:`ConfigError` / :class:`OutputError` with the fix."""
    path = Path(run_dir)
    check_resume_flags(resume, overwrite)
    _missing(path, resume)
    created_root = None
    if not path.exists():
        created_root = path.absolute()
        while not created_root.parent.exists() and created_root.parent != created_root:
            created_root = created_root.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create run directory {path}: {err.strerror or err}.",
                          "choose a writable --run-dir.") from err
    run = RunDir(path, created=created_root is not None, resume=resume, _created_root=created_root)
    try:
        _lock(run)
    except RunDirBusyError:
        raise
    except OSError as err:
        run.discard_if_not_a_run()
        raise OutputError(f"cannot write to run directory {path}: {err.strerror or err}.",
                          "choose a writable --run-dir.") from err
    try:
        _clean_stale_temporaries(path)
        entries = _entries(path)
        if _decide(path, entries, resume, overwrite):
            for p in entries:
                _remove(p)
    except BaseException:
        run.release()
        raise
    return run
