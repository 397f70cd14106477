"""Input and output paths checked before any work: an input file or folder that exists and is readable, an output
file or folder whose location exists (or can be created), is writable and has a name the file system takes. Part
of :mod:`visionflows.validation`; each check raises a :class:`~visionflows.errors.VisionflowsError` subclass
naming the problem and the fix, and none creates or changes a file."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from visionflows.errors import DataError, InputError, OutputError, VisionflowsError

__all__ = ["check_input_file", "check_input_dir", "check_output_file", "check_output_dir"]


def _a(what: str) -> str:
    return f"an {what}" if what[:1].lower() in "aeio" else f"a {what}"


def check_input_file(path: str | os.PathLike, flag: str, what: str = "file", fix: str | None = None,
                     error: type[VisionflowsError] = InputError) -> Path:
    """``path`` if it is an existing file (a folder or a missing path is an ``error`` saying which)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {p} is a folder, not {_a(what)}.", fix or f"give the path of {_a(what)}.")
    if not p.exists():
        raise error(f"{flag} {p} does not exist.", fix or f"check the path of the {what}.")
    if not os.access(p, os.R_OK):
        raise error(f"{flag} {p} is not readable (permission denied).", "fix its permissions or copy it.")
    return p


def check_input_dir(path: str | os.PathLike, flag: str, what: str = "folder", fix: str | None = None,
                    error: type[VisionflowsError] = DataError) -> Path:
    """``path`` if it is an existing folder (a file or a missing path is an ``error`` saying which)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise error(f"{flag} {p} is a file, not {_a(what)}.", fix or f"give the path of {_a(what)}.")
    if not p.exists():
        raise error(f"{flag} {p} does not exist.", fix or f"check the path of the {what}.")
    return p


def _name_max(existing: Path) -> int:
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _exists(q: Path) -> bool:
    try:
        os.stat(q)
    except (OSError, ValueError):
        return False
    return True


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not _exists(q) and q != q.parent:
        q = q.parent
    return q


def _check_names(p: Path, flag: str) -> None:
    """Every name along ``p`` fits the file system (checked first: stat() of a too-long name fails)."""
    limit = _name_max(_nearest_existing(p))
    for part in p.parts:
        n = len(os.fsencode(part))
        if n > limit:
            short = part if len(part) <= 40 else part[:20] + "…" + part[-12:]
            raise OutputError(f"cannot write {flag}: the name {short!r} is {n} bytes long; this file system allows "
                              f"{limit}.", "choose a shorter file or folder name.")


def _check_location(p: Path, flag: str, is_dir: bool) -> None:
    """The nearest existing folder (``p`` itself for a folder, else its parent, or their nearest existing
    ancestor) is a writable folder."""
    anchor = _nearest_existing(p if is_dir else p.parent)
    if not anchor.is_dir():
        raise OutputError(f"cannot write {flag} {p}: {anchor} is a file, not a folder.",
                          "choose an output location whose parent folders are folders.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {flag} {p}: the folder {anchor} is not writable.",
                          "choose a writable output location.")


def check_output_file(path: str | os.PathLike, flag: str, suffixes: Collection[str] | None = None,
                      inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """``path`` if a file can be written there: not an existing folder, names short enough, parent writable,
    and not the same file as one of ``inputs`` (``{flag: path}`` of the command's input files: writing the
    output would destroy that input).

    Creates nothing (nothing is left behind when a later check fails)."""
    p = Path(path)
    _check_names(p, flag)
    if p.is_dir():
        raise OutputError(f"{flag} {p} is an existing folder; a file name is needed.",
                          f"give a file path, e.g. {p / ('output' + (next(iter(suffixes)) if suffixes else ''))}.")
    if suffixes and p.suffix.lower() not in {s.lower() for s in suffixes}:
        shown = " or ".join(sorted(suffixes))
        raise OutputError(f"{flag} {p} must end in {shown}.", f"use e.g. {p.with_suffix(next(iter(suffixes)))}.")
    for in_flag, in_path in (inputs or {}).items():
        if in_path is not None and _same_file(p, Path(in_path)):
            raise OutputError(f"{flag} {p} is the same file as {in_flag} {in_path}: writing it would overwrite "
                              "the input.", f"give {flag} a new file name, e.g. {p.with_stem(p.stem + '_out')}.")
    _check_location(p, flag, is_dir=False)
    return p


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links, ``..`` or another spelling of the path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the resolved names
        return a.resolve() == b.resolve()


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` if a folder can be created or written there: not an existing file, names short, writable."""
    p = Path(path)
    _check_names(p, flag)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} is an existing file, not a folder.", "choose a folder path (new or existing).")
    _check_location(p, flag, is_dir=True)
    return p
