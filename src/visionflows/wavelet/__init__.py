"""Wavelet Flow (Yu, Derpanis & Brubaker, NeurIPS 2020): independent per-level flows over a Haar pyramid."""

from visionflows.wavelet.anneal import AnnealConfig, AnnealStats
from visionflows.wavelet.level import WaveletLevel, block_mean, dequantize, level_param_count, to_pixels
from visionflows.wavelet.model import PyramidTransform, WaveletFlow, check_images, n_levels_for
from visionflows.wavelet.presets import PRESETS, WaveletPreset, create_model, get_preset, list_models, register_all

register_all()

__all__ = [
    "AnnealConfig",
    "AnnealStats",
    "PRESETS",
    "PyramidTransform",
    "WaveletFlow",
    "WaveletLevel",
    "WaveletPreset",
    "block_mean",
    "check_images",
    "create_model",
    "dequantize",
    "get_preset",
    "level_param_count",
    "list_models",
    "n_levels_for",
    "to_pixels",
]
