"""Lossless-codec reference for bits/dim: what PNG and WebP-lossless (Pillow) need for the same pixels.

A density model that does not beat a lossless codec on the pixels it is scored on has learned little; ``wavelet
eval`` prints these next to the model's bits/dim.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import InputError

__all__ = ["CODECS", "codec_bits_per_dim"]

#: the lossless codecs :func:`codec_bits_per_dim` runs, with their Pillow save options
CODECS: dict[str, tuple[str, dict[str, Any]]] = {
    "png": ("PNG", {"optimize": True}),
    "webp_lossless": ("WEBP", {"lossless": True, "method": 6}),
}


def codec_bits_per_dim(images: Tensor, codecs: Sequence[str] = tuple(CODECS)) -> dict[str, float]:
    """Mean bits/dim of lossless codecs on uint8 ``images`` ``[N, C, H, W]`` (the same pixels a model is scored on).

    Each image is encoded on its own with Pillow (PNG ``optimize=True``; WebP ``lossless=True, method=6``) and its
    file size in bits (headers included) divided by ``C·H·W``; the mean over images is comparable to a model's mean
    bits/dim. Greyscale images are encoded as ``L``.
    """
    from PIL import Image

    if images.dim() != 4 or images.dtype != torch.uint8:
        raise InputError(f"codec_bits_per_dim needs uint8 [N, C, H, W] images, got {images.dtype} "
                         f"{tuple(images.shape)}.")
    out: dict[str, float] = {}
    for name in codecs:
        if name not in CODECS:
            raise InputError(f"unknown codec {name!r}.", f"use one of {', '.join(CODECS)}.")
        fmt, opts = CODECS[name]
        bits = []
        for im in images:
            arr = im.permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format=fmt, **opts)
            bits.append(8.0 * len(buf.getvalue()) / im.numel())
        out[name] = float(np.mean(bits))
    return out
