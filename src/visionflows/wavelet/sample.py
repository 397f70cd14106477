"""Sampling grids, super-resolution with metrics, and evaluation helpers for Wavelet Flow.

Every output file is written atomically (:func:`visionflows.io.atomic_write`).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import InputError
from visionflows.io import atomic_write_bytes
from visionflows.wavelet.model import WaveletFlow, n_levels_for

__all__ = [
    "evaluate_model",
    "image_grid",
    "prepare_ground_truth",
    "save_png",
    "save_sample_grids",
]


def _to_uint8(x: Tensor) -> Tensor:
    return x.detach().float().round().clamp(0, 255).to(torch.uint8).cpu()


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 2, tile: int | None = None) -> np.ndarray:
    """``[N, C, h, w]`` pixels in [0, 255] → one uint8 ``[H, W, C]`` grid (tiles nearest-upscaled to ``tile``)."""
    imgs = _to_uint8(images)
    n, c, h, w = imgs.shape
    if tile is not None and tile > h:
        f = tile // h
        imgs = imgs.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
        h, w = imgs.shape[-2:]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = imgs[k].permute(1, 2, 0).numpy()
    return grid


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 ``[H, W, C]`` (C = 1 or 3) array as PNG atomically."""
    from PIL import Image

    arr = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_sample_grids(
    model: WaveletFlow,
    out_dir: str | os.PathLike,
    n: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    resolution: int | None = None,
    anneal: Any = None,
) -> list[Path]:
    """Sample ``n`` images and write ``out_dir/samples_{res}.png`` for every resolution 1, 2, …, 2^l.

    Tiles are nearest-upscaled to the final resolution so every grid has the same size. ``anneal``: annealed
    MCMC sampling (see :meth:`WaveletFlow.sample`); its statistics are in ``model.last_anneal_stats``.
    """
    samples = model.sample_pyramid(n, resolution, temperature, torch.Generator().manual_seed(seed), anneal=anneal)
    top = samples[-1].shape[-1]
    out = Path(out_dir)
    return [save_png(out / f"samples_{s.shape[-1]:04d}.png", image_grid(s, tile=top)) for s in samples]


def prepare_ground_truth(image: Tensor, resolution: int, center_crop: bool = False) -> Tensor:
    """A uint8 ``[C, H, W]`` image → the ``[C, r, r]`` ground truth at the model's resolution.

    The image must be square with a power-of-two side ≥ ``resolution`` (larger ones are block-averaged down
    exactly); with ``center_crop`` any image is centre-cropped to a square and resized (antialiased bicubic).
    """
    from visionflows.data.images import center_square

    if center_crop:
        return center_square(image, resolution)
    _, h, w = image.shape
    if h != w:
        raise InputError(
            f"the image is {h}×{w}, not square.", "crop it to a square power-of-two size or pass --center-crop."
        )
    n_levels_for(h, "image")
    if h < resolution:
        raise InputError(
            f"the image is {h}×{h}, smaller than the model's {resolution}×{resolution}.",
            "use a larger image or pass --center-crop to resize it.",
        )
    if h == resolution:
        return image
    f = h // resolution
    return torch.nn.functional.avg_pool2d(image[None].float(), f)[0].round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def evaluate_model(model: WaveletFlow, images: Tensor, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Bits/dim of uint8 ``images`` (full, uncropped) with fixed dequantisation noise.

    Returns ``{"total": mean bpd, "levels": [mean contribution per level], "level_bpd": [per-level bpd],
    "n_images": N}``. ``levels`` sums to ``total``; ``level_bpd`` carries each level's ``(n − L) + 8`` offset.
    """
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    totals, levels = [], []
    for chunk in images.split(batch_size):
        out = model.bits_per_dim(chunk, gen)
        totals.append(out["total"].cpu())
        levels.append(out["levels"].cpu())
    total = torch.cat(totals).double()
    contrib = torch.cat(levels).double().mean(0)
    dims = torch.tensor(model.level_dims(), dtype=torch.float64)
    return {
        "total": float(total.mean()),
        "levels": contrib.tolist(),
        "level_bpd": (contrib * model.num_dims / dims).tolist(),
        "n_images": int(images.shape[0]),
    }


def __getattr__(name: str) -> Any:  # moved names, importable from here as before
    if name in ("super_resolution_report", "superres_benchmark", "format_superres_table", "block_mean_low_res"):
        from visionflows.wavelet import superres

        return getattr(superres, name)
    if name in ("CODECS", "codec_bits_per_dim"):
        from visionflows.wavelet import codecs

        return getattr(codecs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
