"""User-facing errors.

Every problem a user can fix (bad input, bad configuration, unreadable file) raises a subclass of
:class:`VisionflowsError`. The message says what is wrong *and* how to fix it. The CLI prints it on one
line (no traceback) and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "VisionflowsError",
    "InputError",
    "ConfigError",
    "CheckpointError",
    "DataError",
    "OutputError",
]


class VisionflowsError(Exception):
    """Base class of every error a user can act on."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} Fix: {fix}")


class InputError(VisionflowsError, ValueError):
    """A tensor or value passed in is malformed: wrong shape, NaN/Inf, out of range, unknown camera/ISO."""


class ConfigError(VisionflowsError, ValueError):
    """A configuration is invalid: unknown key or preset, impossible combination."""


class CheckpointError(VisionflowsError):
    """A checkpoint is missing, unreadable, corrupt or of an unknown format version."""


class DataError(VisionflowsError):
    """A dataset file or folder is missing, malformed or corrupt."""


class OutputError(VisionflowsError):
    """An output path cannot be written."""
