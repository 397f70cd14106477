"""sRGB Noise Flow (Kousha, Maleky, Brubaker & Brown, "Modeling sRGB Camera Noise with Normalizing Flows",
CVPR 2022), its Gaussian baselines and the 8-bit metrics; ``docs/noiseflow.md`` §12.

Units and dequantisation (every model here):

* ``clean`` is the 8-bit clean image divided by 255, ``[B, 3, H, W]`` in [0, 1] (the conditioning input).
* ``noise`` is in **8-bit levels** (DN): for 8-bit noisy ``x`` and clean ``y``, the dequantised noise is
  ``n = x − y + u − ½`` with ``u ~ U[0, 1)`` (:func:`dequantize_noise`), so ``x = round(y + n)``. This equals the
  paper's ``x̃ = (x + u)/256`` with its log-det ``−ln 256`` per dimension counted: the density of ``n`` in
  DN units is the density of ``x̃`` divided by 256, so ``−log p(n)/D`` upper-bounds the NLL of the discrete 8-bit
  values (positive, ~3 nats/dim, comparable with the paper's table). The clean image is not dequantised.
* Samples are continuous noise in DN; :func:`quantize_noisy` turns them into 8-bit noisy images.

Model (data → latent): a fixed scale (``noise_std``, set from the training noise at fit time; a constant
speeding up short trainings, log-det counted), then the arch string, default
``CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC`` (the released model):

* ``CL2`` (:class:`ConditionalLinear`): per (ISO, camera) and channel ``z = x·exp(s) + b``, zero init.
* ``SDL`` (:class:`SignalDependentScale`, ``srgb_noiseflow_sdl`` only, not in the paper): per (ISO, camera) and
  channel ``z = x / sqrt(a·y + b)``, the camera's heteroscedastic noise level as a layer.
* ``CAC``: :class:`~visionflows.flows.LUInvertibleConv1x1` (3×3) then :class:`ConditionalAffineCoupling`, split
  1 | 2; the net sees ``[x_a, clean]`` (conv3×3-BN-ReLU, conv1×1-BN-ReLU, edge-padded zero conv); ``ℓ = λ·tanh(r)·
  e(ISO, camera)``, ``e`` a residual MLP (:class:`ScaleEmbedding`).

Camera and ISO vocabularies come from the training data (stored in ``model_config``); index 0 of each is a
learned "unknown" entry, used for missing values (e.g. SIDD crops) and for values unseen at fit time.
Deviation from the paper: the embedding MLP has no BatchNorm1d (a batch often holds one (ISO, camera), which
makes batch statistics degenerate) and outputs ``1 + MLP(·)`` with a zero-initialised last layer.
"""

from visionflows.noise.srgb.adapt import adapt_srgb_flow, extend_vocabulary
from visionflows.noise.srgb.base import SRGBNoiseModel
from visionflows.noise.srgb.baselines import SRGBGaussianNoise, SRGBHeteroscedasticNoise
from visionflows.noise.srgb.context import SRGBContext, dequantize_noise, integer_noise, quantize_noisy
from visionflows.noise.srgb.layers import (
    ActNorm2d,
    CheckerboardCoupling,
    ConditionalAffineCoupling,
    ConditionalLinear,
    FixedScale,
    ScaleEmbedding,
    SignalDependentScale,
    SRGBCouplingNet,
    cac_step,
)
from visionflows.noise.srgb.metrics import evaluate_srgb_noise_models, marginal_kl, nll_per_dim
from visionflows.noise.srgb.model import DEFAULT_ARCH, SPATIAL_ARCH, SRGBNoiseFlow
from visionflows.noise.srgb.train import SRGBNoiseTask, fit_srgb_noise_flow

__all__ = [
    "DEFAULT_ARCH",
    "SPATIAL_ARCH",
    "ActNorm2d",
    "CheckerboardCoupling",
    "adapt_srgb_flow",
    "extend_vocabulary",
    "SRGBContext",
    "FixedScale",
    "ConditionalLinear",
    "SignalDependentScale",
    "ScaleEmbedding",
    "SRGBCouplingNet",
    "ConditionalAffineCoupling",
    "SRGBNoiseFlow",
    "SRGBNoiseModel",
    "SRGBGaussianNoise",
    "SRGBHeteroscedasticNoise",
    "SRGBNoiseTask",
    "cac_step",
    "dequantize_noise",
    "quantize_noisy",
    "integer_noise",
    "nll_per_dim",
    "marginal_kl",
    "evaluate_srgb_noise_models",
    "fit_srgb_noise_flow",
]
