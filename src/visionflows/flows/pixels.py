"""8-bit pixels ↔ the continuous units every image flow models: ``x = (k + u)/256 − 0.5`` (uniform dequantisation,
Theis et al. 2016), so ``bits/dim = −log p(x)/(N·ln 2) + 8``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dequantize", "to_pixels"]


def dequantize(images: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
    """uint8 (or float in [0, 255]) ``[B, C, H, W]`` → ``x = (k + u)/256 − 0.5`` float32, ``u ~ U(0, 1)``.

    With ``noise=False`` the bin centre ``u = 0.5`` is used. The noise is drawn on the CPU from ``generator`` (so
    results do not depend on the device) and moved to the images' device.
    """
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
