"""Moved to :mod:`visionflows.experiments.denoising` (kept so earlier imports keep working)."""

from visionflows.experiments.denoising import run_denoising_experiment, run_srgb_experiment  # noqa: F401
