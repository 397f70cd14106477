"""Base distributions (priors) of a flow. Temperature is always an argument, never module state."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionflows.flows.base import sum_except_batch

__all__ = ["StandardNormal", "DiagonalGaussian", "FactoredPrior"]

_LOG_2PI = math.log(2.0 * math.pi)


class StandardNormal(nn.Module):
    """``N(0, I)`` over every non-batch dimension."""

    def log_prob(self, z: Tensor) -> Tensor:
        """``[B, ...] -> [B]`` log-density in nats."""
        return sum_except_batch(-0.5 * (z * z + _LOG_2PI))

    def sample(
        self,
        shape: Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``temperature·ε`` with ``ε ~ N(0, I)`` of the full ``shape`` (batch first)."""
        eps = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return eps * temperature


class DiagonalGaussian(nn.Module):
    """Learned per-channel Gaussian ``N(loc_c, exp(log_scale_c)²)`` over ``[B, C, ...]`` (zero-initialised)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    def _view(self, p: Tensor, ndim: int) -> Tensor:
        return p.view([1, self.channels] + [1] * (ndim - 2))

    def log_prob(self, z: Tensor) -> Tensor:
        loc, ls = self._view(self.loc, z.dim()), self._view(self.log_scale, z.dim())
        u = (z - loc) * torch.exp(-ls)
        return sum_except_batch(-0.5 * (u * u + _LOG_2PI) - ls)

    def sample(
        self,
        shape: Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``loc + exp(log_scale)·temperature·ε`` (temperature scales the spread around the learned mean)."""
        eps = torch.randn(tuple(shape), generator=generator, device=device or self.loc.device, dtype=dtype)
        n = len(shape)
        return self._view(self.loc, n).to(dtype) + self._view(self.log_scale, n).exp().to(dtype) * temperature * eps


class FactoredPrior(nn.Module):
    """A prior over a flat latent ``[B, Σ_i prod(shape_i)]`` that is a product of priors over its reshaped parts.

    Multi-scale models (Glow's factored-out halves, Wavelet Flow's levels) concatenate per-part latents; part
    ``i`` is reshaped to ``[B, *shapes[i]]`` and scored by ``priors[i]``. With ``register=False`` the part priors
    stay owned by the caller (no duplicate state-dict keys); this module then holds plain references.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], priors: Sequence[nn.Module], register: bool = True) -> None:
        super().__init__()
        if len(shapes) != len(priors):
            raise ValueError(f"{len(shapes)} shapes but {len(priors)} priors")
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        if register:
            self.parts = nn.ModuleList(priors)
        else:
            self.__dict__["parts"] = list(priors)  # not submodules: the owner registers them

    def log_prob(self, z: Tensor) -> Tensor:
        """``[B, N] -> [B]`` nats."""
        b = z.shape[0]
        total = None
        for part, shape, prior in zip(torch.split(z, self.sizes, dim=1), self.shapes, self.parts):
            lp = prior.log_prob(part.reshape(b, *shape))
            total = lp if total is None else total + lp
        return total

    def sample(
        self,
        shape: Sequence[int],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Sample every part in order and concatenate: ``shape`` is ``(B, N)`` (or ``(B,)``)."""
        b = int(shape[0])
        parts = [prior.sample((b, *s), temperature, generator, device, dtype)
                 for prior, s in zip(self.parts, self.shapes)]
        return torch.cat([p.reshape(b, -1) for p in parts], dim=1)
