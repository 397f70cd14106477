"""8-bit pixels ↔ the continuous units every image flow models: ``x = (k + u)/256 − 0.5`` (uniform dequantisation,
Theis et al. 2016), so ``bits/dim = −log p(x)/(N·ln 2) + 8``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from visionflows.errors import InputError

__all__ = ["check_pixels", "dequantize", "to_pixels"]


def _check_layout(images: Any, channels: int, name: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InputError(f"{name} must be a [B, C, H, W] tensor, got {shape}.", "add a batch dimension (x[None]).")
    if images.shape[1] != channels:
        raise InputError(
            f"{name} have {images.shape[1]} channel(s) but the model was built for {channels} "
            f"(shape {tuple(images.shape)}).",
            "convert the images (RGB ↔ greyscale) or use a model with the matching channel count.",
        )


def check_pixels(images: Any, channels: int, name: str = "images", integers: bool = False) -> None:
    """Validate ``[B, C, H, W]`` uint8 / float-in-[0, 255] pixels of any size: a tensor, ``channels``, a non-empty
    batch, the dtype and (float only) finite values in range. Cheap for uint8 (no pass over the values).
    ``integers``: accept other integer dtypes too, with values in [0, 255]."""
    _check_layout(images, channels, name)
    b, c, h, w = images.shape
    if b == 0 or h == 0 or w == 0:
        raise InputError(f"{name} hold no pixels (shape {tuple(images.shape)}).", "pass at least one image.")
    if images.is_floating_point():
        if not torch.isfinite(images).all():
            raise InputError(f"{name} contain NaN/Inf values.", "clean the data first.")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 255.0:
            raise InputError(
                f"float {name} must be in [0, 255], got values in [{lo:.4g}, {hi:.4g}].",
                "pass uint8 images or floats scaled to [0, 255] (not [0, 1] or [-0.5, 0.5]).",
            )
    elif integers and images.dtype != torch.uint8 and images.dtype != torch.bool and not images.is_complex():
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise InputError(f"{name} must hold 8-bit values 0..255, got values in [{lo}, {hi}].",
                             "pass uint8 images (or integers / floats in [0, 255]).")
    elif images.dtype != torch.uint8:
        raise InputError(f"{name} have dtype {images.dtype}; expected uint8 or a float type in [0, 255].",
                         "convert them with images.to(torch.uint8) (values 0..255).")


def dequantize(images: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
    """uint8 (or float in [0, 255]) ``[B, C, H, W]`` → ``x = (k + u)/256 − 0.5`` float32, ``u ~ U(0, 1)``.

    With ``noise=False`` the bin centre ``u = 0.5`` is used. The noise is drawn on the CPU from ``generator`` (so
    results do not depend on the device) and moved to the images' device.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.",
                         "pass generator=torch.Generator().manual_seed(seed).")
    k = images.float() if not images.is_floating_point() else images
    if noise:
        u = torch.rand(tuple(k.shape), generator=generator, dtype=torch.float32).to(k.device, k.dtype)
    else:
        u = torch.full_like(k, 0.5)
    return (k + u) / 256.0 - 0.5


def to_pixels(x: Tensor) -> Tensor:
    """Normalised ``x`` → float pixels in ``[0, 255]``: ``clamp((x + 0.5)·256 − 0.5, 0, 255)``.

    The inverse of :func:`dequantize` at the bin centre; ``round()`` gives the 8-bit value.
    """
    return ((x + 0.5) * 256.0 - 0.5).clamp(0.0, 255.0)
