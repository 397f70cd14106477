"""Noise Flow layers conditioned on *measured* noise parameters instead of a camera one-hot.

The context's ``nlf`` holds each sample's measured per-channel noise-level function ``(K_c, σ²_c)``
(``[B, C, 2]``, or ``[B, 2]`` for one pair for all channels): a darktable profile mapped into packed-Bayer units
(:mod:`visionflows.cameras.darktable`), a DNG NoiseProfile, or parameters estimated from a few frames. Nothing in
these layers is indexed by camera, so a model built from them applies to a camera it never saw.

* :class:`ParamSignalLayer` (``sdnp``): ``z = n / s``, ``s² = e^{u1}·K_c·y + e^{u2}·σ²_c``, with
  ``u = W·f + w0`` a learned linear function of the features ``f = (log K_c, log σ²_c)`` (zero-initialised, so
  the layer starts as the measured NLF: the camera-NLF baseline is this layer with ``W = w0 = 0``).
* :class:`ParamGainLayer` (``gainp``): ``z = x / g`` with ``log g = v·f̄ + v0``, ``f̄`` the channel mean of
  ``f`` (zero-initialised: ``g = 1``), the measured-parameter analogue of the official ``gain4``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows import Bijector, logdet_dtype, sum_except_batch
from visionflows.noise.context import NoiseContext

__all__ = ["ParamSignalLayer", "ParamGainLayer", "param_features"]

#: offsets of the features: log K ≈ log 1e-4, log σ² ≈ log 1e-6 are typical of raw cameras (keeps f near 0)
_LOG_K0, _LOG_V0 = -9.2, -13.8


def param_features(context: Any, channels: int) -> Tensor:
    """``[B, C, 2]`` float64: ``(log K_c − log 1e-4, log σ²_c − log 1e-6)`` of the context's measured NLF.

    InputError when the context carries no ``nlf`` (see :meth:`NoiseContext.with_nlf`)."""
    if not isinstance(context, NoiseContext):
        raise InputError(f"this layer needs a NoiseContext, got {type(context).__name__}.",
                         "build one with NoiseContext.create(clean, iso, camera).with_nlf(params).")
    nlf = context.nlf
    if nlf is None:
        raise InputError("a parameter-conditioned Noise Flow needs each sample's measured noise parameters.",
                         "pass nlf=[B, 4, 2] (K, read variance per channel: a darktable profile, a DNG "
                         "NoiseProfile, or `noise adapt`'s estimate).")
    if nlf.dim() == 2:
        nlf = nlf[:, None, :].expand(-1, channels, -1)
    if nlf.shape[1] != channels:
        raise InputError(f"measured noise parameters have {nlf.shape[1]} channels, the data {channels}.",
                         "give one (K, read variance) pair per packed channel.")
    logs = torch.log(nlf.clamp_min(1e-30))
    return torch.stack([logs[..., 0] - _LOG_K0, logs[..., 1] - _LOG_V0], dim=-1)


class ParamSignalLayer(Bijector):
    """Signal-dependent layer from measured parameters (``sdnp``; see the module docstring).

    Parameters: ``weight [2, 2]`` (rows: ``u1``, ``u2``; columns: the two features) and ``bias [2]``, all zero at
    initialisation. ``forward`` (noise → latent): ``z = n/s``, ``log|det| = −Σ log s``; ``inverse``: ``n = z·s``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 2))
        self.bias = nn.Parameter(torch.zeros(2))

    def coefficients(self, context: NoiseContext) -> tuple[Tensor, Tensor]:
        """``(a, b)`` ``[B, C]`` in the clean patch's dtype: ``s² = a·y + b`` per sample and channel."""
        y = context.clean
        f = param_features(context, y.shape[1])
        u = f.to(self.weight.dtype) @ self.weight.T + self.bias  # [B, C, 2]
        nlf = torch.exp(f[..., 0] + _LOG_K0), torch.exp(f[..., 1] + _LOG_V0)
        a = (torch.exp(u[..., 0]).double() * nlf[0]).to(y.dtype)
        b = (torch.exp(u[..., 1]).double() * nlf[1]).to(y.dtype)
        return a, b

    def scale(self, context: NoiseContext) -> Tensor:
        """``s`` ``[B, C, H, W]``: the per-pixel std this layer divides by."""
        a, b = self.coefficients(context)
        return torch.sqrt(a[:, :, None, None] * context.clean + b[:, :, None, None])

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.scale(context).to(x.dtype)
        _check(x, s)
        return x / s, -sum_except_batch(torch.log(s))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.scale(context).to(z.dtype)
        _check(z, s)
        return z * s, sum_except_batch(torch.log(s))


class ParamGainLayer(Bijector):
    """Gain from measured parameters (``gainp``): ``z = x/g`` per sample, ``log g = v·f̄ + v0`` (zero init)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.bias = nn.Parameter(torch.zeros(()))

    def log_gain(self, context: NoiseContext, channels: int) -> Tensor:
        f = param_features(context, channels).mean(dim=1)  # [B, 2]
        return f.to(self.weight.dtype) @ self.weight + self.bias  # [B]

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        lg = self.log_gain(context, x.shape[1])
        n = x[0].numel()
        return x * torch.exp(-lg).to(x.dtype)[:, None, None, None], (-n * lg).to(logdet_dtype(x))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        lg = self.log_gain(context, z.shape[1])
        n = z[0].numel()
        return z * torch.exp(lg).to(z.dtype)[:, None, None, None], (n * lg).to(logdet_dtype(z))


def _check(x: Tensor, s: Tensor) -> None:
    if x.shape != s.shape:
        raise InputError(f"noise shape {tuple(x.shape)} does not match clean shape {tuple(s.shape)}.",
                         "pass noise and clean patches of the same [B, 4, H, W] shape.")
