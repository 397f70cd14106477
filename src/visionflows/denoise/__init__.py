"""Denoising with DnCNN trained on noise synthesised by noise models (the Noise Flow paper's experiment).

Public API: :class:`DnCNN` (``kind="dncnn"``); training (:func:`train_denoiser`, :class:`DenoiseTask`, noise
sources :func:`make_noise_source`, data :class:`SimulatorPatches` / :class:`SRGBPatches`); evaluation
(:func:`evaluate_denoisers`, :func:`psnr`, :func:`ssim`); the experiments :func:`run_denoising_experiment`
(raw, camera simulator) and :func:`run_srgb_experiment` (real sRGB pairs).

Importing this package also registers the sRGB noise-model kinds of :mod:`visionflows.noise.srgb`.
"""

from __future__ import annotations

import visionflows.noise.srgb  # noqa: F401  (registers the srgb_* model kinds for visionflows.io)
from visionflows.denoise.dncnn import DOMAINS, DnCNN
from visionflows.denoise.evaluate import evaluate_denoisers, psnr, ssim
from visionflows.denoise.experiments import run_denoising_experiment, run_srgb_experiment
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
