"""Sampling grids, super-resolution with metrics, and evaluation helpers for Wavelet Flow.

Every output file is written atomically (:func:`visionflows.io.atomic_write`).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import InputError
from visionflows.io import atomic_write_bytes, atomic_write_text
from visionflows.wavelet.model import WaveletFlow, check_images, n_levels_for

__all__ = [
    "evaluate_model",
    "image_grid",
    "prepare_ground_truth",
    "save_png",
    "save_sample_grids",
    "super_resolution_report",
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
) -> list[Path]:
    """Sample ``n`` images and write ``out_dir/samples_{res}.png`` for every resolution 1, 2, …, 2^l.

    Tiles are nearest-upscaled to the final resolution so every grid has the same size.
    """
    samples = model.sample_pyramid(n, resolution, temperature, torch.Generator().manual_seed(seed))
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


def _metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    channel_axis = 2 if gt.shape[2] > 1 else None
    p, g = (pred, gt) if channel_axis is not None else (pred[..., 0], gt[..., 0])
    win = min(7, g.shape[0] - (1 - g.shape[0] % 2))
    return {
        "psnr": float(peak_signal_noise_ratio(g, p, data_range=255)),
        "ssim": float(structural_similarity(g, p, data_range=255, channel_axis=channel_axis, win_size=win)),
    }


def _upsample(low: Tensor, factor: int, method: str) -> Tensor:
    """uint8 ``[C, h, w]`` → ``[C, h·f, w·f]``: ``"box"`` (pixel replication) or ``"bicubic"`` (PIL)."""
    if method == "box":
        return low.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    from PIL import Image

    arr = low.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(im.resize((low.shape[2] * factor, low.shape[1] * factor), Image.BICUBIC), dtype=np.uint8)
    t = torch.from_numpy(out.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def super_resolution_report(
    model: WaveletFlow,
    ground_truth: Tensor,
    factor: int,
    out_dir: str | os.PathLike,
    n_samples: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Super-resolve the block-mean low-res version of ``ground_truth`` (uint8 ``[C, r, r]``) by ``factor``.

    Writes ``out_dir/superres.png`` (low-res input box-upscaled | samples | bicubic | ground truth),
    ``low_res.png``, ``sample_K.png`` and ``metrics.json`` with PSNR/SSIM (data_range 255) of every sample and
    of bicubic and box upsampling against the ground truth. Returns the metrics dict.
    """
    check_images(ground_truth[None], model.channels, model.resolution, "ground truth")
    steps = n_levels_for(int(factor), "super-resolution factor")
    r = ground_truth.shape[-1]
    if steps > model.n_levels:
        raise InputError(f"factor {factor} is too large for a {r}×{r} model.", f"use a factor ≤ {r}.")
    low = torch.nn.functional.avg_pool2d(ground_truth[None].float(), factor)[0].round().clamp(0, 255)
    low = low.to(torch.uint8)
    samples = model.super_resolve(low[None], factor, temperature, n_samples, torch.Generator().manual_seed(seed))[0]
    samples = _to_uint8(samples)
    gt_np = ground_truth.permute(1, 2, 0).numpy()
    bicubic, box = _upsample(low, factor, "bicubic"), _upsample(low, factor, "box")
    per_sample = [_metrics(s.permute(1, 2, 0).numpy(), gt_np) for s in samples]
    report: dict[str, Any] = {
        "factor": int(factor),
        "resolution": r,
        "low_res": r // factor,
        "temperature": float(temperature),
        "seed": int(seed),
        "samples": per_sample,
        "sample_mean": {k: float(np.mean([m[k] for m in per_sample])) for k in ("psnr", "ssim")},
        "bicubic": _metrics(bicubic.permute(1, 2, 0).numpy(), gt_np),
        "box": _metrics(box.permute(1, 2, 0).numpy(), gt_np),
        "level_sources": {str(k): v for k, v in model.level_sources.items()},
    }
    out = Path(out_dir)
    row = torch.cat([box[None], samples, bicubic[None], ground_truth[None]])
    save_png(out / "superres.png", image_grid(row, nrow=len(row)))
    save_png(out / "low_res.png", low.permute(1, 2, 0).numpy())
    save_png(out / "ground_truth.png", gt_np)
    for k, s in enumerate(samples):
        save_png(out / f"sample_{k}.png", s.permute(1, 2, 0).numpy())
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


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
