"""Denoisers for a camera nobody saw: DnCNNs trained on sRGB Noise Flow noise vs Gaussian noise vs real pairs,
scored on the real photos of a held-out camera (leave one camera out; ``docs/denoising.md``).

For each held-out camera:

1. the sRGB Noise Flow (``srgb_noiseflow_spatial``, unknown-camera dropout) is trained on the *other* cameras'
   pairs (or a given flow file is used; it must not have seen the camera);
2. three DnCNNs (``dncnn_srgb``, depth 9, width 32) are trained with the same steps, batch, patch, learning rate,
   seed and clean training patches of the other cameras, differing only in the noise: Gaussian with
   σ ~ U(0.24186, 11.507)/255 drawn per patch (the Noise Flow paper's range), the flow's samples conditioned on
   each patch's camera and ISO (T = 1), and the real noisy partners (the upper reference);
3. the noisy input and the three denoisers are scored (PSNR/SSIM, 8-bit, whole images: nothing is cropped or
   picked) on every pair of the held-out camera, which neither the flow nor any denoiser saw.

Each model stops at ``steps`` or after ``max_minutes`` of wall time, whichever comes first (the steps reached
are recorded). Outputs: ``denoise.{txt,csv,json}`` (one row per camera and model), per camera ``<camera>/table.*``
and ``<camera>/images/``, ``denoise_examples.png`` (central crops: noisy | Gaussian | Noise Flow | real | clean)
and ``experiment.json`` (settings, steps, seconds, threads, machine).
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionflows.denoise.evaluate import evaluate_denoisers, psnr, write_table
from visionflows.denoise.train import GAUSSIAN_SIGMA_RANGE, GaussianSource, ModelSource, SRGBPatches, train_denoiser
from visionflows.errors import ConfigError
from visionflows.io import atomic_write_bytes, atomic_write_text, load_model

__all__ = ["DENOISERS", "run_srgb_denoise_study", "plot_denoise_examples"]

#: the denoisers of the study, in table order
DENOISERS = ("gaussian", "srgb_noiseflow", "real")


def _sources(flow: Any, sigma_range: tuple[float, float]) -> dict[str, Any]:
    return {"gaussian": GaussianSource(None, sigma_range, domain="srgb", per_patch=True),
            "srgb_noiseflow": ModelSource(flow, "srgb", 1.0, "srgb_noiseflow"), "real": "real"}


def _flow_for(camera: str, rest: Any, out: Path, noise_flow: Any, flow_steps: int, max_minutes: float | None,
              batch_size: int, patch: int, seed: int, threads: int | None, progress: bool,
              preset: str = "srgb_noiseflow_spatial") -> tuple[Any, dict]:
    from visionflows.noise.srgb import fit_srgb_noise_flow
    from visionflows.registry import create_model

    if noise_flow is not None:
        flow = load_model(noise_flow) if isinstance(noise_flow, (str, os.PathLike)) else noise_flow
        if camera in getattr(flow, "cameras", []):
            raise ConfigError(f"the noise flow {noise_flow} was trained on camera {camera!r}, the held-out camera.",
                              f"train it with `visionflows srgb-noise train --holdout-camera {camera}`, or drop "
                              "--noise-flow to train one here.")
        return flow.eval(), {"source": str(noise_flow)}
    proto = create_model(preset)
    t = time.monotonic()
    flow = fit_srgb_noise_flow(rest, out / "runs" / "srgb_noiseflow", flow_steps, batch_size, patch, 3e-3, seed=seed,
                               width=proto.width, norm=proto.norm, arch=proto.arch, unknown_prob=0.2,
                               progress=progress, overwrite=True, max_minutes=max_minutes, num_threads=threads)
    return flow, {"preset": preset, "unknown_prob": 0.2, "lr": 3e-3,
                  "steps": _steps_done(out / "runs" / "srgb_noiseflow"), "seconds": time.monotonic() - t}


def _steps_done(run_dir: Path) -> int | None:
    from visionflows.training import find_checkpoints

    ckpts = find_checkpoints(run_dir)
    if not ckpts:
        return None
    digits = "".join(ch for ch in Path(ckpts[-1]).stem if ch.isdigit())
    return int(digits) if digits else None


def plot_denoise_examples(held: Any, models: dict[str, Any], path: str | os.PathLike, crop: int = 128,
                          n_show: int = 3, title: str = "") -> None:
    """``path`` (PNG): for the first ``n_show`` pairs of ``held``, the central ``crop``² of the noisy image, of each
    denoiser's output and of the clean image, each titled with its PSNR on that crop (dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n_show, len(held))
    cols = ["noisy", *models, "clean"]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.2 * len(cols), 2.35 * n + 0.3), squeeze=False)
    for i in range(n):
        h, w = held.noisy[i].shape[:2]
        s = min(crop, h, w)
        t, left = (h - s) // 2, (w - s) // 2
        noisy = held.noisy[i].transpose(2, 0, 1) / 255.0
        clean = held.clean[i][t : t + s, left : left + s]
        for j, name in enumerate(cols):
            if name == "noisy":
                img = held.noisy[i][t : t + s, left : left + s]
            elif name == "clean":
                img = clean
            else:  # denoise the whole image, then crop (the output the table scores)
                out = models[name].denoise(torch.from_numpy(np.ascontiguousarray(noisy)).float()).numpy()
                img = np.round(out.transpose(1, 2, 0) * 255.0).astype(np.uint8)[t : t + s, left : left + s]
            ax = axes[i][j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if name != "clean":
                ax.set_xlabel(f"{psnr(img, clean, 255.0):.2f} dB", fontsize=8)
        axes[i][0].set_ylabel(held.names[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def run_srgb_denoise_study(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    cameras: list[str] | None = None,
    steps: int = 3000,
    max_minutes: float | None = 10.0,
    flow_steps: int = 600,
    noise_flow: Any = None,
    batch_size: int = 32,
    patch: int = 32,
    lr: float = 1e-3,
    sigma_range: tuple[float, float] = GAUSSIAN_SIGMA_RANGE,
    seed: int = 0,
    threads: int | None = None,
    layout: str = "auto",
    depth: int = 9,
    width: int = 32,
    ema_decay: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    preset: str = "srgb_noiseflow_spatial",
) -> dict[str, Any]:
    """The leave-one-camera-out denoising study (module docstring) for each of ``cameras`` (default: every known
    camera of ``data``). ``max_minutes`` caps each trained model (the flow and every denoiser) separately;
    ``noise_flow`` (file or model, one camera only) skips the flow training (else a ``preset`` flow is trained on
    the other cameras); with ``ema_decay`` (None or 0 = off)
    every denoiser is scored with the moving average of its weights (``ema.safetensors`` in its run).
    Returns ``{"rows", "cameras", "timing", ...}`` (also written to ``experiment.json``)."""
    from visionflows.data.srgb_pairs import load_pairs

    say = log or (lambda _msg: None)
    out = Path(out_dir)
    t0 = time.monotonic()
    if threads:
        torch.set_num_threads(int(threads))
    pairs = load_pairs(data, layout=layout)
    cameras = [c.lower() for c in cameras] if cameras else pairs.require_cameras()
    if noise_flow is not None and len(cameras) != 1:
        raise ConfigError("a given noise flow is for one held-out camera, but the study holds out "
                          f"{len(cameras)} ({', '.join(cameras)}).", "pass one camera with it.")
    splits = {cam: pairs.camera_split(cam) for cam in cameras}  # every camera checked before any training
    for rest, _ in splits.values():
        rest.check_patch(patch)
    settings = {"steps": steps, "max_minutes": max_minutes, "flow_steps": flow_steps, "batch_size": batch_size,
                "patch": patch, "lr": lr, "depth": depth, "width": width, "ema_decay": ema_decay or None,
                "gaussian_sigma_range_dn": [v * 255.0 for v in sigma_range], "seed": seed, "preset": preset}
    rows: list[dict[str, Any]] = []
    timing: dict[str, Any] = {}
    for ci, cam in enumerate(cameras, 1):
        rest, held = splits[cam]
        say(f"[{cam}] ({ci}/{len(cameras)}) held out: {len(held)} pairs; training on {len(rest)} pairs of "
            f"{', '.join(sorted({c or '?' for c in rest.cameras}))}")
        cam_rows, timing[cam] = _one_camera(cam, rest, held, out / cam, noise_flow, settings, threads, progress, say)
        rows += cam_rows
    write_table(rows, out, "denoise", "DnCNN denoisers on the real photos of a held-out camera (PSNR dB / SSIM on "
                "whole 8-bit images); trained on the other cameras only")
    if len(cameras) == 1:
        atomic_write_bytes(out / "denoise_examples.png", (out / cameras[0] / "denoise_examples.png").read_bytes())
    else:
        _stack_examples([out / c / "denoise_examples.png" for c in cameras], out / "denoise_examples.png")
    result = {"data": str(data), "cameras": cameras, **settings, "rows": rows, "timing": timing,
              "seconds": time.monotonic() - t0, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {platform.processor()}".strip(), "cpus": os.cpu_count(),
              "torch": torch.__version__}
    atomic_write_text(out / "experiment.json", json.dumps(result, indent=2, default=str) + "\n")
    return result


def _one_camera(cam: str, rest: Any, held: Any, out: Path, noise_flow: Any, st: dict[str, Any],
                threads: int | None, progress: bool, say: Callable[[str], None]) -> tuple[list[dict], dict]:
    """Flow, the three denoisers and their scores for one held-out camera → ``(rows, timing)``."""
    cap = st["max_minutes"]
    say(f"[{cam}] sRGB Noise Flow: " + ("given file" if noise_flow is not None else
                                         f"{st['flow_steps']} steps (at most {cap} min)"))
    flow, flow_info = _flow_for(cam, rest, out, noise_flow, st["flow_steps"], cap, st["batch_size"], st["patch"],
                                st["seed"], threads, progress, st.get("preset", "srgb_noiseflow_spatial"))
    timing: dict[str, Any] = {"flow": flow_info}
    models = {}
    patches = SRGBPatches(rest, st["patch"])
    for name, src in _sources(flow, tuple(v / 255.0 for v in st["gaussian_sigma_range_dn"])).items():
        say(f"[{cam}] DnCNN on {name} noise: {st['steps']} steps (at most {cap} min)")
        t = time.monotonic()
        res = train_denoiser(patches, src, out / "runs" / f"dncnn_{name}", st["steps"], st["batch_size"], st["lr"],
                             depth=st["depth"], width=st["width"], seed=st["seed"], overwrite=True, progress=progress,
                             max_minutes=cap, num_threads=threads, ema_decay=st["ema_decay"])
        models[name] = (res.ema_model if res.ema_model is not None else res.model).eval()
        timing[name] = {"steps": res.step, "seconds": time.monotonic() - t}
        if res.step < st["steps"]:
            say(f"[{cam}] warning: {name} stopped at the {cap}-minute cap after {res.step} of {st['steps']} steps")
    say(f"[{cam}] scoring on the {len(held)} held-out images")
    table = evaluate_denoisers(models, held, out, crop=None)
    rows = [{"camera": cam, **r, "steps": timing.get(r["model"], {}).get("steps", 0)} for r in table]
    plot_denoise_examples(held, models, out / "denoise_examples.png",
                          title=f"held-out camera {cam} (central 128x128 crops)")
    say(f"[{cam}] " + " | ".join(f"{r['model']} {r['psnr_db']:.2f} dB / {r['ssim']:.3f}" for r in table))
    return rows, timing


def _stack_examples(paths: list[Path], dest: Path) -> None:
    """The per-camera figures one above the other (padded to one width) as one PNG."""
    from PIL import Image

    imgs = [Image.open(p).convert("RGB") for p in paths]
    width = max(i.width for i in imgs)
    canvas = Image.new("RGB", (width, sum(i.height for i in imgs)), "white")
    y = 0
    for i in imgs:
        canvas.paste(i, (0, y))
        y += i.height
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(dest, buf.getvalue())
