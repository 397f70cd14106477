"""Moved to :mod:`visionflows.glow` (kept so earlier imports keep working)."""

from visionflows.glow import Glow, GlowImageTask, GlowTransform, dequantize, glow_step  # noqa: F401

_GlowTransform = GlowTransform
