"""Moved to :mod:`visionflows.experiments.demo` (kept so earlier imports keep working)."""

from visionflows.experiments.demo import *  # noqa: F403
from visionflows.experiments.demo import run_demo  # noqa: F401
