"""Gaussian baselines of the sRGB noise models: fixed-form flows ``z = n/σ`` over a standard normal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from visionflows.errors import InputError
from visionflows.flows import ContextScale, StandardNormal
from visionflows.noise.srgb.base import SRGBNoiseModel
from visionflows.noise.srgb.context import SRGBContext, as_clean
from visionflows.registry import register_model

__all__ = ["SRGBGaussianNoise", "SRGBHeteroscedasticNoise"]


def _float(v: Any, name: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {v!r}.", "pass finite numbers.") from None


def _positive(v: Any, name: str) -> None:
    f = _float(v, name)
    if isinstance(v, bool) or not math.isfinite(f) or f <= 0:
        raise InputError(f"{name} must be a finite number > 0 (a variance in DN²), got {v!r}.",
                         "fit the baseline on training noise (the class's fit method) or pass a positive value.")


def _check_fit_noise(noise: Any) -> None:
    if not isinstance(noise, Tensor) or noise.numel() < 2:
        raise InputError("fit needs a tensor with at least 2 noise values.", "pass the training noise (8-bit levels).")
    if not bool(torch.isfinite(noise).all()):
        raise InputError("training noise contains NaN/Inf.", "clean the data first.")


class SRGBGaussianNoise(SRGBNoiseModel):
    """Baseline: i.i.d. zero-mean Gaussian noise with one variance (DN²), fitted as the unbiased sample variance
    of all training noise values (dequantised)."""

    kind = "srgb_gaussian"

    def __init__(self, variance: float = 1.0) -> None:
        _positive(variance, "variance")
        super().__init__(ContextScale(self._scale), StandardNormal())
        self.register_buffer("variance", torch.tensor(float(variance)))

    @classmethod
    def fit(cls, noise: Tensor) -> SRGBGaussianNoise:
        _check_fit_noise(noise)
        return cls(float(noise.detach().double().var()))

    def model_config(self) -> dict[str, Any]:
        return {"variance": float(self.variance)}

    def _var(self, ctx: SRGBContext) -> Tensor:
        return self.variance.to(ctx.clean.dtype).expand_as(ctx.clean)

    def _scale(self, ctx: SRGBContext, x: Tensor) -> Tensor:
        return torch.sqrt(self._var(ctx))


class SRGBHeteroscedasticNoise(SRGBGaussianNoise):
    """Baseline: heteroscedastic Gaussian per channel, ``var_c = a_c·clean_c + b_c`` (DN², clean in [0, 1]),
    fitted by least squares of the squared training noise on the clean value, floored at ``min_variance``."""

    kind = "srgb_heteroscedastic"

    def __init__(self, a: Sequence[float] = (0.0, 0.0, 0.0), b: Sequence[float] = (1.0, 1.0, 1.0),
                 min_variance: float = 1.0 / 12.0) -> None:
        for name, v in (("a", a), ("b", b)):
            if len(v) != 3 or not all(math.isfinite(_float(e, name)) for e in v):
                raise InputError(f"{name} must be 3 finite numbers (one per channel), got {list(v)!r}.",
                                 "fit the baseline with SRGBHeteroscedasticNoise.fit(noise, clean).")
        _positive(min_variance, "min_variance")
        SRGBNoiseModel.__init__(self, ContextScale(self._scale), StandardNormal())
        self.register_buffer("a", torch.tensor([float(v) for v in a]))
        self.register_buffer("b", torch.tensor([float(v) for v in b]))
        self.min_variance = float(min_variance)

    @classmethod
    def fit(cls, noise: Tensor, clean: Tensor | None = None) -> SRGBHeteroscedasticNoise:  # type: ignore[override]
        if clean is None:
            raise InputError("the heteroscedastic baseline needs the clean images to fit.", "pass clean.")
        _check_fit_noise(noise)
        clean = as_clean(clean).double()
        if tuple(noise.shape) != tuple(clean.shape):
            raise InputError(f"noise {tuple(noise.shape)} and clean {tuple(clean.shape)} differ in shape.",
                             "pass the noise and clean images of the same pairs, [B, 3, H, W] each.")
        n2 = noise.double() ** 2
        a, b = [], []
        for c in range(3):
            y, v = clean[:, c].reshape(-1), n2[:, c].reshape(-1)
            ym, vm = y.mean(), v.mean()
            cov = ((y - ym) * (v - vm)).mean()
            slope = float(cov / ((y - ym) ** 2).mean().clamp_min(1e-12))
            a.append(slope)
            b.append(float(vm - slope * ym))
        return cls(a, b)

    def model_config(self) -> dict[str, Any]:
        return {"a": self.a.tolist(), "b": self.b.tolist(), "min_variance": self.min_variance}

    def _var(self, ctx: SRGBContext) -> Tensor:
        y = ctx.clean
        var = self.a.to(y.dtype)[None, :, None, None] * y + self.b.to(y.dtype)[None, :, None, None]
        return var.clamp_min(self.min_variance)


@register_model("srgb_gaussian", family="srgb_noise")
def srgb_gaussian(**overrides: Any) -> SRGBGaussianNoise:
    """sRGB Gaussian baseline: one variance (DN^2)."""
    return SRGBGaussianNoise(**overrides)


@register_model("srgb_heteroscedastic", family="srgb_noise")
def srgb_heteroscedastic(**overrides: Any) -> SRGBHeteroscedasticNoise:
    """sRGB heteroscedastic baseline: var_c = a_c * clean_c + b_c per channel."""
    return SRGBHeteroscedasticNoise(**overrides)
