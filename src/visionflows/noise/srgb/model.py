"""The sRGB Noise Flow model (Kousha, Maleky, Brubaker & Brown, CVPR 2022) and its presets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visionflows.errors import ConfigError
from visionflows.flows import Bijector, StandardNormal
from visionflows.noise.srgb.base import SRGBNoiseModel
from visionflows.noise.srgb.fused import SRGBFlowTransform
from visionflows.noise.srgb.layers import (
    CheckerboardCoupling,
    ConditionalLinear,
    FixedScale,
    SignalDependentScale,
    cac_step,
)
from visionflows.registry import register_model

__all__ = ["DEFAULT_ARCH", "SPATIAL_ARCH", "SDL_ARCH", "SRGBNoiseFlow"]

DEFAULT_ARCH = "CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC"
#: the released model with a spatial (checkerboard) coupling pair before every CAC pair (``srgb_noiseflow_spatial``)
SPATIAL_ARCH = "CL2|SPC|CAC|CAC|CL2|SPC|CAC|CAC|CL2|SPC|CAC|CAC|CL2|SPC|CAC|CAC"
#: the spatial model with a signal-dependent scale first (``srgb_noiseflow_sdl``): a camera's noise level vs
#: intensity is one adaptable layer
SDL_ARCH = "SDL|" + SPATIAL_ARCH


class SRGBNoiseFlow(SRGBNoiseModel):
    """sRGB Noise Flow ``log p(n | clean, ISO, camera)`` over ``3·H·W`` noise values (in 8-bit levels).

    Args:
        arch: ``|``-separated tokens, noise → latent order (default: the released model): ``CL2``
            (:class:`ConditionalLinear`), ``CAC`` (LU 1×1 conv + :class:`ConditionalAffineCoupling`), ``SPC`` (two
            :class:`CheckerboardCoupling` of opposite parity: spatial coupling, not in the paper), ``SDL``
            (:class:`SignalDependentScale`: a per-camera heteroscedastic scale, not in the paper).
        width: hidden channels of the coupling nets (4 in the paper).
        cameras, isos: fit-time vocabularies (lower-case camera names, ISO values); index 0 = unknown.
        noise_std: fixed initial scale (DN) applied first (``FixedScale``); the fit sets it to the training std.
        seed: seed of the random 1×1-conv initialisation.
        norm: normalisation in the coupling networks: ``"batch"`` (the paper's BatchNorm), ``"act"``
            (:class:`~visionflows.noise.srgb.layers.ActNorm2d`) or ``"none"``.
    """

    kind = "srgb_noiseflow"

    def __init__(self, arch: str = DEFAULT_ARCH, width: int = 4, cameras: Sequence[str] = (),
                 isos: Sequence[int] = (), noise_std: float = 1.0, seed: int | None = 0, norm: str = "batch") -> None:
        tokens = [t.strip().upper() for t in arch.split("|") if t.strip()]
        bad = [t for t in tokens if t not in ("CL2", "CAC", "SPC", "SDL")]
        if not tokens or bad:
            raise ConfigError(f"invalid sRGB Noise Flow arch {arch!r} (unknown layers {bad}).",
                              "use '|'-separated CL2, CAC, SPC and SDL layers.")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        n_iso, n_cam = len(isos) + 1, len(cameras) + 1
        layers: list[Bijector] = [FixedScale(float(noise_std))]
        for t in tokens:
            if t == "CL2":
                layers.append(ConditionalLinear(n_iso, n_cam))
            elif t == "SDL":
                layers.append(SignalDependentScale(n_iso, n_cam))
            elif t == "SPC":
                layers.extend(CheckerboardCoupling(n_iso, n_cam, width=int(width), parity=p, norm=norm)
                              for p in (0, 1))
            else:
                layers.extend(cac_step(n_iso, n_cam, int(width), gen, norm).layers)
        super().__init__(SRGBFlowTransform(*layers), StandardNormal(), cameras, isos)
        self.arch, self.width, self.noise_std, self.seed = "|".join(tokens), int(width), float(noise_std), seed
        self.norm = norm

    def model_config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "cameras": self.cameras, "isos": self.isos,
                "noise_std": self.noise_std, "seed": self.seed, "norm": self.norm}


@register_model("srgb_noiseflow", family="srgb_noise")
def srgb_noiseflow(**overrides: Any) -> SRGBNoiseFlow:
    """The released sRGB Noise Flow (CL2|CAC|CAC x4); vocabularies (cameras, isos) come from the training data."""
    return SRGBNoiseFlow(**overrides)


@register_model("srgb_noiseflow_spatial", family="srgb_noise")
def srgb_noiseflow_spatial(**overrides: Any) -> SRGBNoiseFlow:
    """sRGB Noise Flow with spatial couplings (SPC before every CAC pair) and ActNorm in the coupling nets: models
    noise correlated between neighbouring pixels and samples the density it scores (not in the paper)."""
    return SRGBNoiseFlow(**{"arch": SPATIAL_ARCH, "norm": "act", **overrides})


@register_model("srgb_noiseflow_sdl", family="srgb_noise")
def srgb_noiseflow_sdl(**overrides: Any) -> SRGBNoiseFlow:
    """``srgb_noiseflow_spatial`` with a signal-dependent scale first (``SDL``): each (ISO, camera) has its own
    noise variance ``a·y + b`` per channel, the part that adaptation to a new camera fits (not in the paper)."""
    return SRGBNoiseFlow(**{"arch": SDL_ARCH, "norm": "act", **overrides})
