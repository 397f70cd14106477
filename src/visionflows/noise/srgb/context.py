"""The conditioning of the sRGB noise models and the 8-bit data helpers (dequantisation, quantisation)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import InputError

__all__ = ["SRGBContext", "dequantize_noise", "quantize_noisy", "integer_noise", "as_clean", "as_iso", "as_list"]


@dataclass(frozen=True)
class SRGBContext:
    """Conditioning: ``clean [B, 3, H, W]`` in [0, 1]; ``iso_idx``/``cam_idx`` LongTensor ``[B]`` (0 = unknown)
    into vocabularies of ``n_iso``/``n_cam`` entries (unknown included)."""

    clean: Tensor
    iso_idx: Tensor
    cam_idx: Tensor
    n_iso: int
    n_cam: int

    @property
    def batch_size(self) -> int:
        return int(self.clean.shape[0])

    @property
    def combo(self) -> Tensor:
        """Index of the (ISO, camera) pair, ``iso_idx·n_cam + cam_idx``."""
        return self.iso_idx * self.n_cam + self.cam_idx

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SRGBContext:
        clean = self.clean.to(device=device, dtype=dtype) if dtype is not None else self.clean.to(device=device)
        return SRGBContext(clean, self.iso_idx.to(device=device), self.cam_idx.to(device=device), self.n_iso,
                           self.n_cam)


def _ctx(context: Any, name: str) -> SRGBContext:
    if not isinstance(context, SRGBContext):
        raise InputError(f"{name} needs an SRGBContext, got {type(context).__name__}.",
                         "build one with SRGBNoiseFlow.context(clean, iso, camera).")
    return context


def as_clean(clean: Tensor | np.ndarray) -> Tensor:
    if isinstance(clean, np.ndarray):
        clean = torch.from_numpy(clean)
    if not isinstance(clean, Tensor):
        raise InputError(f"clean must be a tensor, got {type(clean).__name__}.", "use torch.as_tensor.")
    if clean.dtype == torch.uint8:
        clean = clean.float() / 255.0
    if clean.dim() == 3:
        clean = clean[None]
    if clean.dim() != 4 or clean.shape[1] != 3:
        raise InputError(f"clean must be [B, 3, H, W] sRGB, got shape {tuple(clean.shape)}.",
                         "pass NCHW RGB images (uint8, or float in [0, 1]).")
    if clean.numel() == 0:
        raise InputError(f"clean holds no pixels (shape {tuple(clean.shape)}).",
                         "pass at least one image of at least 1×1.")
    if not clean.is_floating_point() or not torch.isfinite(clean).all():
        raise InputError("clean must be finite floating point in [0, 1] (or uint8).", "divide 8-bit values by 255.")
    lo, hi = float(clean.detach().min()), float(clean.detach().max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"clean values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}].", "divide 8-bit values by 255.")
    return clean


def as_iso(iso: Any) -> int:
    """One ISO value as an int (``0`` = unknown); :class:`InputError` unless it is a whole number ≥ 0."""
    try:
        v = float(iso)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(iso, bool) or not math.isfinite(v) or v != int(v) or v < 0:
        raise InputError(f"ISO {iso!r} is not a whole number ≥ 0.", "pass ISO values such as 100 or 1600 "
                         "(0 or None: unknown).")
    return int(v)


def as_list(v: Any, b: int, name: str) -> list:
    if v is None or isinstance(v, (str, int, float, np.integer, np.floating)):
        return [v] * b
    if isinstance(v, Tensor):
        v = v.reshape(-1).tolist() if v.dim() else [v.item()] * b
    v = list(v)
    if len(v) != b:
        raise InputError(f"{name} has {len(v)} entries for a batch of {b}.", f"pass one {name} or one per sample.")
    return v


def _tensors(fn: Any, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, Tensor):
            raise InputError(f"{fn.__name__}: {name} must be a torch.Tensor, got {type(v).__name__}.",
                             "convert it with torch.as_tensor (8-bit images as uint8 [B, 3, H, W]).")


def dequantize_noise(noisy: Tensor, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dequantised noise in 8-bit levels, ``n = x − y + u − ½``, ``u ~ U[0, 1)`` (uint8 inputs ``[B, 3, H, W]``)."""
    _tensors(dequantize_noise, noisy=noisy, clean=clean)
    if noisy.shape != clean.shape:
        raise InputError(f"noisy {tuple(noisy.shape)} and clean {tuple(clean.shape)} differ in shape.",
                         "pass aligned pairs of the same size.")
    u = torch.rand(noisy.shape, generator=generator)
    return noisy.float() - clean.float() + u.to(noisy.device) - 0.5


def quantize_noisy(clean: Tensor, noise: Tensor) -> Tensor:
    """8-bit noisy image ``clip(round(y + n), 0, 255)`` (uint8) for clean ``y`` (uint8, or float in [0, 1])."""
    _tensors(quantize_noisy, clean=clean, noise=noise)
    y = clean.float() if clean.dtype == torch.uint8 else clean * 255.0
    return torch.clamp(torch.round(y + noise), 0, 255).to(torch.uint8)


def integer_noise(noisy: Tensor, clean: Tensor) -> Tensor:
    """Integer noise ``noisy − clean`` (int16) of 8-bit images."""
    return noisy.to(torch.int16) - clean.to(torch.int16)
