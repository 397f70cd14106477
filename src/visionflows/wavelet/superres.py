"""Super-resolution with Wavelet Flow, measured: one image (:func:`super_resolution_report`) or a folder of
held-out images (:func:`superres_benchmark`), against bicubic and box upsampling of the same block-mean input.

PSNR/SSIM come from scikit-image (``data_range=255``). Every output file is written atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import InputError
from visionflows.io import atomic_write_bytes, atomic_write_text
from visionflows.wavelet.model import WaveletFlow, check_images
from visionflows.wavelet.sample import _to_uint8, image_grid, save_png

__all__ = ["block_mean_low_res", "format_superres_table", "super_resolution_report", "superres_benchmark"]


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


def block_mean_low_res(images: Tensor, factor: int) -> Tensor:
    """uint8 ``[..., C, r, r]`` → the ``factor × factor`` block means rounded to uint8 (the SR input)."""
    x = images.reshape(-1, *images.shape[-3:]).float()
    low = torch.nn.functional.avg_pool2d(x, int(factor)).round().clamp(0, 255).to(torch.uint8)
    return low.reshape(*images.shape[:-2], *low.shape[-2:])


def super_resolution_report(
    model: WaveletFlow,
    ground_truth: Tensor,
    factor: int,
    out_dir: str | os.PathLike,
    n_samples: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    anneal: Any = None,
    reduce: str | None = None,
) -> dict[str, Any]:
    """Super-resolve the block-mean low-res version of ``ground_truth`` (uint8 ``[C, r, r]``) by ``factor``.

    Writes ``out_dir/superres.png`` (low-res input box-upscaled | samples | bicubic | ground truth),
    ``low_res.png``, ``sample_K.png`` and ``metrics.json`` with PSNR/SSIM (data_range 255) of every sample and
    of bicubic and box upsampling against the ground truth. Returns the metrics dict. ``temperature=0`` gives
    the mode (one deterministic output), ``reduce="mean"`` the mean of the ``n_samples`` samples, ``anneal``
    annealed MCMC samples (:meth:`WaveletFlow.super_resolve`).
    """
    check_images(ground_truth[None], model.channels, model.resolution, "ground truth")
    r = ground_truth.shape[-1]
    model.check_superres_factor(factor)
    low = block_mean_low_res(ground_truth, factor)
    if float(temperature) == 0.0 and anneal is None:
        n_samples = 1  # the mode is deterministic
    samples = model.super_resolve(low[None], factor, temperature, n_samples, torch.Generator().manual_seed(seed),
                                  anneal=anneal, reduce=reduce)[0]
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
        "mode": "mean" if reduce == "mean" else "mode" if float(temperature) == 0.0 and anneal is None else "samples",
        "anneal": model.last_anneal_stats.to_dict() if anneal is not None and model.last_anneal_stats else None,
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


def _sr_methods(temperature: float, mean_of: int, anneal: Any) -> list[tuple[str, dict[str, Any]]]:
    methods: list[tuple[str, dict[str, Any]]] = [
        ("T=0 (mode)", {"temperature": 0.0, "n": 1}),
        (f"mean of {mean_of} (T=1)", {"temperature": 1.0, "n": int(mean_of), "reduce": "mean"}),
        (f"sample T={temperature:g}", {"temperature": float(temperature), "n": 1}),
    ]
    if anneal is not None:
        methods.append((f"annealed T={temperature:g}", {"temperature": float(temperature), "n": 1,
                                                          "anneal": anneal}))
    return methods


def superres_benchmark(
    model: WaveletFlow,
    images: Tensor,
    out_dir: str | os.PathLike | None = None,
    factors: Sequence[int] = (2, 4),
    temperature: float = 0.8,
    mean_of: int = 8,
    anneal: Any = None,
    anneal_images: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    figure_images: int = 4,
    log=None,
) -> dict[str, Any]:
    """Super-resolution of many held-out images: PSNR/SSIM of Wavelet Flow against bicubic and box upsampling.

    ``images``: uint8 ground truths ``[N, C, r, r]`` at the model's resolution. For each factor ``f`` the input is
    the ``f × f`` block mean (rounded to uint8) and every method upsamples that same input: box (pixel
    replication), bicubic (PIL), and Wavelet Flow at ``T = 0`` (the mode), the mean of ``mean_of`` samples at
    ``T = 1`` (≈ the conditional mean, the minimum-MSE estimate), one sample at ``temperature`` and, with
    ``anneal``, one annealed MCMC sample at ``temperature`` (on the first ``anneal_images`` images; the baselines
    are then also reported on that subset). Metrics are per image (data_range 255), averaged.

    Writes (with ``out_dir``) ``superres_table.json`` and ``superres_x{f}.png`` (the first ``figure_images``
    images: low-res input, each method with its PSNR, ground truth). Returns ``{"factors": {f: {method: {"psnr",
    "ssim", "n"}}}, "images": N, ...}``.
    """
    check_images(images, model.channels, model.resolution, "ground-truth images")
    if images.dtype != torch.uint8:
        images = images.round().clamp(0, 255).to(torch.uint8)
    factors = [int(f) for f in factors]
    for f in factors:
        model.check_superres_factor(f)
    if isinstance(mean_of, bool) or int(mean_of) != mean_of or int(mean_of) < 1:
        raise InputError(f"mean_of must be an integer ≥ 1, got {mean_of!r}.")
    n_img = images.shape[0]
    n_anneal = n_img if anneal_images is None else max(1, min(int(anneal_images), n_img))
    methods = _sr_methods(temperature, mean_of, anneal)
    gts = [im.permute(1, 2, 0).numpy() for im in images]
    result: dict[str, Any] = {"images": n_img, "resolution": model.resolution, "temperature": float(temperature),
                              "mean_of": int(mean_of), "seed": int(seed), "factors": {}, "anneal": None,
                              "anneal_images": n_anneal if anneal is not None else 0}
    figs: dict[int, dict[str, Tensor]] = {}
    for f in factors:
        low = block_mean_low_res(images, f)
        preds: dict[str, Tensor] = {
            "box": torch.stack([_upsample(x, f, "box") for x in low]),
            "bicubic": torch.stack([_upsample(x, f, "bicubic") for x in low]),
        }
        for name, spec in methods:
            gen = torch.Generator().manual_seed(seed)
            count = n_anneal if "anneal" in spec else n_img
            outs = []
            for chunk in low[:count].split(batch_size):
                sr = model.super_resolve(chunk, f, spec["temperature"], spec["n"], gen, anneal=spec.get("anneal"),
                                         reduce=spec.get("reduce"))
                outs.append(_to_uint8(sr[:, 0]))
                if "anneal" in spec and model.last_anneal_stats is not None:
                    st = model.last_anneal_stats.to_dict()
                    agg = result["anneal"] = result["anneal"] or {"seconds": 0.0, "images": 0, "levels": {}}
                    agg["seconds"] += st["seconds"]
                    agg["images"] += st["images"]
                    for lvst in st["levels"]:
                        agg["levels"].setdefault(f"x{f} level {lvst['level']}", []).append(
                            {k: lvst[k] for k in ("accept_rate", "accepted", "step_size", "never_accepted",
                                                  "grad_evals", "seconds", "chains")})
            preds[name] = torch.cat(outs)
            if log:
                log(f"  x{f} {name}: done")
        table: dict[str, Any] = {}
        for name, pred in preds.items():
            ms = [_metrics(p.permute(1, 2, 0).numpy(), g) for p, g in zip(pred, gts)]
            table[name] = {"psnr": float(np.mean([m["psnr"] for m in ms])),
                           "ssim": float(np.mean([m["ssim"] for m in ms])), "n": len(ms),
                           "psnr_per_image": [m["psnr"] for m in ms]}
            if anneal is not None and n_anneal < n_img and name in ("box", "bicubic"):
                sub = ms[:n_anneal]
                table[f"{name} (first {n_anneal})"] = {"psnr": float(np.mean([m["psnr"] for m in sub])),
                                                       "ssim": float(np.mean([m["ssim"] for m in sub])),
                                                       "n": n_anneal}
        result["factors"][str(f)] = table
        figs[f] = {"low": low, **preds}
    if result["anneal"]:
        a = result["anneal"]
        a["seconds_per_image"] = a["seconds"] / max(1, a["images"])
    if out_dir is not None:
        out = Path(out_dir)
        for f, fig in figs.items():
            _superres_figure(out / f"superres_x{f}.png", images, fig, result["factors"][str(f)], f,
                             min(figure_images, n_anneal if anneal is not None else n_img))
        atomic_write_text(out / "superres_table.json", json.dumps(result, indent=2) + "\n")
    return result


def format_superres_table(result: dict[str, Any]) -> str:
    """The :func:`superres_benchmark` result as a plain-text table (PSNR dB / SSIM per factor)."""
    factors = list(result["factors"])
    names: list[str] = []
    for f in factors:
        names += [k for k in result["factors"][f] if k not in names]
    head = f"{'method':<26}" + "".join(f"{'x' + f + ' PSNR':>11}{'SSIM':>8}{'n':>5}" for f in factors)
    lines = [head, "-" * len(head)]
    for name in names:
        row = f"{name:<26}"
        for f in factors:
            m = result["factors"][f].get(name)
            row += f"{m['psnr']:>11.2f}{m['ssim']:>8.4f}{m['n']:>5}" if m else " " * 24
        lines.append(row)
    return "\n".join(lines)


def _superres_figure(path: Path, gt: Tensor, fig: dict[str, Tensor], table: dict[str, Any], factor: int,
                     n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["low"] + [k for k in fig if k not in ("low", "box")] + ["ground truth"]
    n = max(1, min(n, gt.shape[0]))
    f, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 2.0 * n + 0.3), squeeze=False)
    for i in range(n):
        for j, col in enumerate(cols):
            ax = axes[i][j]
            if col == "ground truth":
                img, title = gt[i], "ground truth"
            elif col == "low":
                img, title = fig["low"][i], f"input {fig['low'].shape[-1]}²"
            else:
                if i >= fig[col].shape[0]:
                    ax.axis("off")
                    continue
                img = fig[col][i]
                title = f"{col}\n{table[col]['psnr_per_image'][i]:.2f} dB"
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                      interpolation="nearest", vmin=0, vmax=255)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    f.suptitle(f"x{factor} super-resolution of block-mean inputs (PSNR per image)", fontsize=9)
    f.tight_layout()
    buf = io.BytesIO()
    f.savefig(buf, format="png", dpi=110)
    plt.close(f)
    atomic_write_bytes(path, buf.getvalue())
