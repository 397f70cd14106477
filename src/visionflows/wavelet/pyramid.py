"""The pixel-space side of Wavelet Flow: image checks, the pyramid's size rules and its bijective part.

:func:`n_levels_for` and :func:`check_images` validate square power-of-two images; :class:`PyramidTransform` maps
normalised images to the flat concatenation of every level's latent (and back), and ``_FlatPrior`` shows a level's
prior on that flat latent. :class:`~visionflows.wavelet.model.WaveletFlow` (in :mod:`visionflows.wavelet.model`,
which re-exports these names) is built from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows import Bijector, HaarStep, zeros_logdet
from visionflows.flows.pixels import _check_layout, check_pixels
from visionflows.wavelet.level import WaveletLevel, level_dims

if TYPE_CHECKING:
    from visionflows.wavelet.model import WaveletFlow

__all__ = ["PyramidTransform", "check_images", "check_pixels", "n_levels_for"]


def n_levels_for(size: int, what: str = "image") -> int:
    """``log2(size)`` for a power-of-two ``size ≥ 2``; :class:`InputError` otherwise."""
    if size < 2 or size & (size - 1):
        raise InputError(
            f"{what} size {size} is not a power of two ≥ 2; Wavelet Flow needs square 2^n × 2^n images.",
            "crop or resize the image to a power-of-two square (e.g. 32, 64, 256).",
        )
    return int(round(math.log2(size)))


def check_images(images: Tensor, channels: int, resolution: int | None = None, name: str = "images") -> None:
    """Validate ``[B, C, H, W]`` uint8 / float-in-[0, 255] images: channels, square power-of-two size, range."""
    _check_layout(images, channels, name)
    b, c, h, w = images.shape
    if h != w:
        raise InputError(f"{name} are {h}×{w}, not square.", "centre-crop them to a square first.")
    n_levels_for(h, name)
    if resolution is not None and h != resolution:
        raise InputError(
            f"{name} are {h}×{w} but the model's resolution is {resolution}×{resolution}.",
            f"resize or crop the images to {resolution}×{resolution}.",
        )
    check_pixels(images, channels, name)


class PyramidTransform(Bijector):
    """The whole pyramid's bijective part: normalised ``x [B, C, 2^n, 2^n]`` → flat latents ``z [B, N]``.

    ``z`` concatenates the flattened latents of levels ``0..n``; the log-det includes every level's flow and the
    Haar mean-compensation (``Σ_L dim_L·(n−L)·ln ½``). The prior of every level is applied outside. With
    ``register=False`` the level transforms stay owned by the caller (the :class:`WaveletFlow`).
    """

    def __init__(self, levels: Sequence[WaveletLevel] | WaveletFlow, channels: int | None = None,
                 register: bool = True) -> None:
        super().__init__()
        from visionflows.wavelet.model import WaveletFlow

        if isinstance(levels, WaveletFlow):  # PyramidTransform(model) of earlier versions
            levels, channels = levels.levels, levels.channels
        self.channels, self.n_levels = int(channels), len(levels) - 1
        self.level_dims = [c * side**2 for c, _, side in (level_dims(lv, self.channels) for lv in range(len(levels)))]
        transforms = [level.transform for level in levels]
        if register:
            self.transforms = nn.ModuleList(transforms)
        else:
            self.__dict__["transforms"] = transforms  # owned (and saved) by the WaveletFlow's levels
        self.haar = HaarStep(compensate=True)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        logdet = zeros_logdet(x)
        zs: list[Tensor] = [x] * (self.n_levels + 1)
        i = x
        for lv in range(self.n_levels, 0, -1):
            low, details, ld_h = self.haar.split(i)
            z, ld = self.transforms[lv](details, low)
            zs[lv] = z.reshape(x.shape[0], -1)
            logdet = logdet + ld + ld_h
            i = low
        z, ld = self.transforms[0](i, None)
        zs[0] = z.reshape(x.shape[0], -1)
        return torch.cat(zs, dim=1), logdet + ld

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        b, c, dims = z.shape[0], self.channels, self.level_dims
        offsets = [0]
        for d in dims:
            offsets.append(offsets[-1] + d)
        i, logdet = self.transforms[0].inverse(z[:, : dims[0]].reshape(b, c, 1, 1), None)
        for lv in range(1, self.n_levels + 1):
            side = 2 ** (lv - 1)
            zl = z[:, offsets[lv] : offsets[lv + 1]].reshape(b, 3 * c, side, side)
            details, ld = self.transforms[lv].inverse(zl, i)
            i, ld_h = self.haar.merge(i, details)
            logdet = logdet + ld + ld_h
        return i, logdet


class _FlatPrior(nn.Module):
    """A level's prior seen on its flattened latent (for the full model's :class:`FactoredPrior`)."""

    def __init__(self, level: WaveletLevel) -> None:
        super().__init__()
        self.__dict__["level"] = level  # owned by the model's levels
        c, _, side = level_dims(level.level, level.channels)
        self.shape = (c, side, side)

    def log_prob(self, z: Tensor) -> Tensor:
        return self.level.prior.log_prob(z.reshape(z.shape[0], *self.shape))

    def sample(self, shape: Sequence[int], temperature: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        b = int(shape[0])
        return self.level.prior.sample((b, *self.shape), temperature, generator, device, dtype).reshape(b, -1)
