"""Atomic writes: every file or directory is built under a temporary name next to its destination and renamed
into place on success, so a crash or a full disk never leaves a half-written output.

Permissions follow the process umask like any ``open()``: files get ``0666 & ~umask``, folders
``0777 & ~umask`` (the temporary names would otherwise force 0600 / 0700). A destination that is an existing
folder, a name too long for the file system, a full disk or a read-only location is an
:class:`~visionflows.errors.OutputError` with the fix, and the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visionflows.errors import OutputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_dir", "current_umask", "output_error"]

#: errors of the write itself (as opposed to errors of the code producing the data)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EISDIR,
                 errno.ENOTDIR, errno.EFBIG, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, so no other thread ever sees it changed)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_error(path: str | os.PathLike, err: OSError, what: str = "write") -> OutputError:
    """An :class:`OutputError` for ``err`` raised while writing ``path``, with a fix that fits the cause."""
    p = Path(path)
    code = err.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return OutputError(f"cannot {what} {p}: no space left on the device (disk or quota full).",
                           "free disk space or write the output to another disk, then rerun.")
    if code == errno.ENAMETOOLONG:
        longest = max(p.parts, key=lambda s: len(os.fsencode(s))) if p.parts else str(p)
        return OutputError(f"cannot {what} {p}: a name in it is too long ({len(os.fsencode(longest))} bytes; "
                           "file systems allow 255).", "choose a shorter file or folder name.")
    if code == errno.EISDIR:
        return OutputError(f"cannot {what} {p}: it is an existing folder.", "give a file name, not a folder.")
    if code in (errno.ENOTDIR, errno.EEXIST):
        return OutputError(f"cannot {what} {p}: a part of the path is an existing file, not a folder.",
                           "choose an output location whose parent folders are folders.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot {what} {p}: {err.strerror or err} (the location is not writable).",
                           "choose a writable output location.")
    return OutputError(f"cannot {what} {p}: {err.strerror or err}.", "choose a writable output location.")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is an existing folder.", "give a file name, not a folder.")
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=parent)
    except OSError as err:
        raise output_error(path, err) from err
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666 & ~current_umask())
        try:
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in _WRITE_ERRNOS:
                raise output_error(path, err) from err
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``path`` when the block succeeds."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot create folder {path}: a file of that name exists.", "choose another location.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise output_error(path, err, "create folder") from err
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        try:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in _WRITE_ERRNOS:
                raise output_error(path, err, "create folder") from err
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
