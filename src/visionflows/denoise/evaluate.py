"""Denoiser evaluation: PSNR/SSIM tables and before/after images.

Metrics (per image, then averaged over images):

* PSNR ``= 10·log10(R² / MSE)``.
* SSIM: ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``, the
  official Noise Flow test settings, with an explicit ``data_range`` R and channels as ``channel_axis``.

Raw (normalised packed raw in [0, 1]): R = 1 on float values (the official code passes no ``data_range``, which
for float input defaults to 2 and inflates SSIM; ``docs/noiseflow.md`` §10). sRGB: the denoised output is clipped
and rounded to 8 bits and compared with the 8-bit clean image at R = 255.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionflows.errors import CheckpointError, InputError
from visionflows.io import atomic_write_bytes, atomic_write_text, load_model

__all__ = ["psnr", "ssim", "test_images", "evaluate_denoisers", "write_table", "visualize", "model_name"]


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """PSNR in dB of ``x`` against ``ref`` (same shape)."""
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(ref, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """SSIM of ``[C, H, W]`` images (official settings, see the module docstring)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(x, np.float64), np.asarray(ref, np.float64), channel_axis=0,
                                       data_range=data_range, gaussian_weights=True, use_sample_covariance=False))


def test_images(test: Any, crop: int | None = 256) -> tuple[list[tuple[np.ndarray, np.ndarray]], str, list[str]]:
    """``([(noisy, clean)] float [C, H, W] in [0, 1], domain, names)`` of a simulated raw set or sRGB pairs
    (sRGB: central crops of at most ``crop`` pixels to bound CPU time; None = full images)."""
    if hasattr(test, "noise") and hasattr(test, "clean"):  # SimulatedSidd
        clean = test.clean.numpy()
        noisy = np.clip(clean + test.noise.numpy(), 0.0, 1.0)
        return [(noisy[i], clean[i]) for i in range(len(clean))], "raw", [f"sim{i}" for i in range(len(clean))]
    if hasattr(test, "noisy") and hasattr(test, "names"):  # SRGBPairs
        out = []
        for n, c in zip(test.noisy, test.clean):
            h, w = n.shape[:2]
            if crop is not None:
                t, l = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
                n, c = n[t : t + crop, l : l + crop], c[t : t + crop, l : l + crop]
            out.append((n.transpose(2, 0, 1) / 255.0, c.transpose(2, 0, 1) / 255.0))
        return out, "srgb", list(test.names)
    raise InputError(f"cannot evaluate on {type(test).__name__}.", "pass a simulated raw set or sRGB pairs.")


def model_name(path: str | os.PathLike) -> str:
    """A short name for a model file (its run dir's name for ``model.safetensors`` / run dirs)."""
    p = Path(path)
    if p.is_dir():
        return p.name
    if p.name == "model.safetensors":
        parts = [q.name for q in p.parents]
        return parts[2] if len(parts) > 2 and parts[1] == "checkpoints" else p.parent.name
    return p.stem


def _resolve(models: Any, domain: str) -> dict[str, nn.Module]:
    items = models.items() if isinstance(models, dict) else [(model_name(m), m) for m in models]
    out: dict[str, nn.Module] = {}
    for name, m in items:
        src = m
        if isinstance(m, (str, os.PathLike)):
            m = load_model(m)
        if getattr(m, "kind", None) != "dncnn":
            raise CheckpointError(f"{src} holds a {getattr(m, 'kind', type(m).__name__)!r} model, not a denoiser.",
                                  "pass DnCNN model files (from visionflows denoise train).")
        if m.domain != domain:
            raise CheckpointError(f"denoiser {src} is for {m.domain} data but the evaluation data are {domain}.",
                                  f"evaluate it on {m.domain} data.")
        out[name] = m.eval()
    return out


@torch.no_grad()
def _denoise(model: nn.Module, x: np.ndarray, domain: str) -> np.ndarray:
    y = model.denoise(torch.from_numpy(np.ascontiguousarray(x)).float()).double().numpy()
    return np.round(y * 255.0) / 255.0 if domain == "srgb" else y


def visualize(img: np.ndarray, domain: str, scale: float | None = None) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] → ``uint8`` display image: sRGB as is; packed raw as the grey mean of the 4
    channels, normalised by ``scale`` (default: its 99th percentile) and gamma 1/2.2."""
    if domain == "srgb":
        return np.clip(np.round(img.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    g = img.mean(0)
    s = scale if scale is not None else max(float(np.percentile(g, 99)), 1e-3)
    return (np.clip(g / s, 0.0, 1.0) ** (1 / 2.2) * 255.0).round().astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_table(rows: list[dict[str, Any]], out_dir: str | os.PathLike, stem: str = "table",
                title: str = "") -> None:
    """Write ``rows`` (dicts with the same keys) as ``{stem}.txt`` (aligned text), ``.csv`` and ``.json``."""
    out = Path(out_dir)
    keys = list(rows[0]) if rows else []

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = [max(len(k), *(len(fmt(r[k])) for r in rows)) for k in keys]
    lines = ([title] if title else []) + ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(fmt(r[k]).ljust(w) for k, w in zip(keys, widths)) for r in rows]
    atomic_write_text(out / f"{stem}.txt", "\n".join(lines) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.json", json.dumps(rows, indent=2) + "\n")


def evaluate_denoisers(models: Any, test: Any, out_dir: str | os.PathLike | None = None, n_show: int = 4,
                       crop: int | None = 256, show_size: int = 128) -> list[dict[str, Any]]:
    """PSNR/SSIM of denoisers (``{name: model or file}`` or a list of files) on ``test`` (simulated raw set or
    sRGB pairs), plus the noisy input as a reference row. With ``out_dir``: ``table.{txt,csv,json}`` and
    ``images/<name>.png`` (rows of noisy | denoised | clean crops for the first ``n_show`` images)."""
    pairs, domain, names = test_images(test, crop)
    if not pairs:
        raise InputError("the evaluation set is empty.", "use a test set with at least one image.")
    resolved = _resolve(models, domain)
    rng = 255.0 if domain == "srgb" else 1.0
    rows = []

    def score(name: str, outs: list[np.ndarray]) -> dict[str, Any]:
        ps = [psnr(o * rng, c * rng, rng) for o, (_, c) in zip(outs, pairs)]
        ss = [ssim(o * rng, c * rng, rng) for o, (_, c) in zip(outs, pairs)]
        return {"model": name, "psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(pairs)}

    rows.append(score("noisy input", [n for n, _ in pairs]))
    outputs = {}
    for name, model in resolved.items():
        outputs[name] = [_denoise(model, n, domain) for n, _ in pairs]
        rows.append(score(name, outputs[name]))
    if out_dir is not None:
        write_table(rows, out_dir, title=f"Denoising on {len(pairs)} {domain} test images "
                    f"(PSNR dB / SSIM, data_range {rng:g})")
        for name, outs in outputs.items():
            tiles = []
            for (n, c), o in list(zip(pairs, outs))[:n_show]:
                s = min(show_size, c.shape[1], c.shape[2])
                sl = (slice(None), slice(0, s), slice(0, s))
                scale = None if domain == "srgb" else max(float(np.percentile(c.mean(0), 99)), 1e-3)
                tiles.append(np.concatenate([visualize(a[sl], domain, scale) for a in (n, o, c)], axis=1))
            width = max(t.shape[1] for t in tiles)
            tiles = [np.pad(t, [(0, 0), (0, width - t.shape[1])] + [(0, 0)] * (t.ndim - 2)) for t in tiles]
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            atomic_write_bytes(Path(out_dir) / "images" / f"{safe}.png", _png(np.concatenate(tiles, axis=0)))
    return rows
