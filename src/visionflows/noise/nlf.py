"""Moved to :mod:`visionflows.cameras` (the SIDD camera tables); kept so earlier imports keep working."""

from visionflows.cameras.sidd import *  # noqa: F403
from visionflows.cameras.sidd import __all__  # noqa: F401
