"""Denoising with DnCNN trained on noise synthesised by noise models (the Noise Flow paper's experiment).

Public API: :class:`DnCNN` (``kind="dncnn"``); training (:func:`train_denoiser`, :class:`DenoiseTask`, noise
sources :func:`make_noise_source`, data :class:`SimulatorPatches` / :class:`SRGBPatches`); evaluation
(:func:`evaluate_denoisers`, :func:`psnr`, :func:`ssim`); the experiments :func:`run_denoising_experiment`
(raw, camera simulator) and :func:`run_srgb_experiment` (real sRGB pairs).

The experiments live in :mod:`visionflows.experiments` (re-exported here lazily).
"""

from __future__ import annotations

from visionflows.denoise.dncnn import DOMAINS, DnCNN
from visionflows.denoise.evaluate import evaluate_denoisers, psnr, ssim
from visionflows.denoise.train import (
    DenoiseTask,
    GaussianSource,
    ModelSource,
    NLFSource,
    RealSource,
    SimulatorPatches,
    SRGBPatches,
    load_noise_model,
    make_noise_source,
    train_denoiser,
)

__all__ = [
    "DOMAINS",
    "DenoiseTask",
    "DnCNN",
    "GaussianSource",
    "ModelSource",
    "NLFSource",
    "RealSource",
    "SRGBPatches",
    "SimulatorPatches",
    "evaluate_denoisers",
    "load_noise_model",
    "make_noise_source",
    "psnr",
    "run_denoising_experiment",
    "run_srgb_experiment",
    "ssim",
    "train_denoiser",
]


def __getattr__(name: str):  # the experiments import this package; re-export them lazily (no import cycle)
    if name in ("run_denoising_experiment", "run_srgb_experiment"):
        from visionflows.experiments import denoising

        return getattr(denoising, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
