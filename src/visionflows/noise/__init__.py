"""Noise Flow (Abdelhamed, Brubaker & Brown, ICCV 2019): conditional normalizing flows for raw camera noise.

Public API: :class:`NoiseFlow` and its presets (:func:`create_model`, :func:`list_models`), the typed
:class:`NoiseContext`, :func:`load_official` for the released checkpoint, baselines with the same API
(:class:`GaussianNoise`, :class:`CameraNLF`, :class:`HeteroscedasticNoise`) and the evaluation metrics.
"""

from __future__ import annotations

from visionflows.cameras import CAMERAS, ISOS
from visionflows.noise.baselines import CameraNLF, GaussianNoise, HeteroscedasticNoise
from visionflows.noise.context import NoiseContext
from visionflows.noise.evaluate import write_noise_report
from visionflows.noise.layers import GainLayer, NoiseFlowCouplingNet, SignalDependentLayer, unconditional_step
from visionflows.noise.metrics import KL_EDGES, NoiseEvalResults, evaluate_noise_models, marginal_kl
from visionflows.noise.model import PRESETS, NoiseFlow, count_parameters, create_model, list_models
from visionflows.noise.official import load_official

__all__ = [
    "CAMERAS",
    "KL_EDGES",
    "NoiseEvalResults",
    "evaluate_noise_models",
    "marginal_kl",
    "write_noise_report",
    "ISOS",
    "PRESETS",
    "CameraNLF",
    "GaussianNoise",
    "HeteroscedasticNoise",
    "GainLayer",
    "NoiseContext",
    "NoiseFlow",
    "NoiseFlowCouplingNet",
    "SignalDependentLayer",
    "count_parameters",
    "create_model",
    "list_models",
    "load_official",
    "unconditional_step",
]
