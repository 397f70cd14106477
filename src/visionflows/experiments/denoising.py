"""End-to-end experiments: the Noise Flow paper's denoising table on the camera simulator (raw), and the sRGB
Noise Flow study on real sRGB pairs. Both are parameterised by step budgets (demo: ~1–2 min; tests: seconds)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from visionflows.denoise.evaluate import evaluate_denoisers, write_table
from visionflows.denoise.train import GaussianSource, ModelSource, load_denoise_data, train_denoiser
from visionflows.io import atomic_write_text, load_model, save_model

__all__ = ["fit_raw_noise_flow", "run_denoising_experiment", "run_srgb_experiment"]


def fit_raw_noise_flow(train: Any, steps: int = 300, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                       preset: str = "noiseflow") -> torch.nn.Module:
    """Fit a raw Noise Flow preset on simulated patches (``SimulatedSidd``) with Adam (plain loop, no run dir);
    returns it in eval mode."""
    from visionflows.noise import create_model

    torch.manual_seed(seed)
    model = create_model(preset)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        nll = model.nll_per_dim(train.noise[idx], train.clean[idx], train.iso[idx], train.camera[idx]).mean()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        opt.step()
    return model.eval()


def _count(m: torch.nn.Module) -> int:
    """Trainable values of a model, or (for the fitted baselines) the number of fitted values."""
    return sum(p.numel() for p in m.parameters()) or sum(b.numel() for b in m.buffers())


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_denoising_experiment(
    out_dir: str | os.PathLike,
    steps: int = 100,
    flow_steps: int = 150,
    batch_size: int = 16,
    n_train_images: int = 8,
    n_test_images: int = 6,
    patch: int = 32,
    depth: int = 9,
    width: int = 32,
    seed: int = 0,
    noise_flow: str | os.PathLike | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The paper's denoising experiment on the built-in camera simulator (raw, packed 4 channels).

    DnCNNs are trained for the same ``steps`` on simulator clean patches with Gaussian, camera-NLF, Noise Flow
    (``noise_flow`` file, or a preset fitted here for ``flow_steps``) and "real" (simulator) noise, then evaluated
    on held-out, scene-disjoint simulator pairs. The defaults are a demo budget (~1–2 min on 2 CPU cores, far
    from convergence: the paper trains for up to 2000 epochs); raise ``steps`` for meaningful numbers.
    Writes ``out_dir/table.{txt,csv,json}``, ``images/``, ``runs/<noise>/`` and ``experiment.json``; returns the
    table rows.
    """
    out = Path(out_dir)
    t0 = time.monotonic()
    data, test = load_denoise_data("simulator", patch, n_train_images, n_test_images, seed)
    if noise_flow is None:
        flow = fit_raw_noise_flow(data.dataset, flow_steps, batch_size, seed=seed)
        save_model(flow, out / "noiseflow.safetensors")
    else:
        flow = load_model(noise_flow)
    sources: dict[str, Any] = {"gaussian": "gaussian", "nlf": "nlf", "noiseflow": ModelSource(flow, "raw", 1.0,
                                                                                               "noiseflow"),
                               "real": "real"}
    models = {}
    for name, src in sources.items():
        res = train_denoiser(data, src, out / "runs" / name, steps, batch_size, depth=depth, width=width, seed=seed,
                             overwrite=True, progress=progress)
        models[name] = res.model
    rows = evaluate_denoisers(models, test, out)
    _write_json(out / "experiment.json", {"kind": "raw-simulator", "steps": steps, "flow_steps": flow_steps,
                                          "batch_size": batch_size, "n_train_patches": len(data),
                                          "n_test_images": len(test), "seconds": time.monotonic() - t0,
                                          "table": rows})
    return rows


def run_srgb_experiment(
    data_dir: str | os.PathLike | Any,
    out_dir: str | os.PathLike,
    flow_steps: int = 1000,
    denoise_steps: int = 300,
    batch_size: int = 32,
    patch: int = 32,
    test_fraction: float = 0.25,
    max_eval_patches: int = 512,
    depth: int = 9,
    width: int = 32,
    include_real: bool = True,
    eval_crop: int | None = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """sRGB Noise Flow vs baselines on real sRGB pairs, and denoisers trained with its noise.

    1. Load the pairs under ``data_dir`` (or take ``data_dir``, already loaded
       :class:`~visionflows.data.srgb_pairs.SRGBPairs`); hold out ``test_fraction`` of the images (stratified by
       camera/ISO).
    2. Fit the Gaussian and heteroscedastic baselines on the training images; train an sRGB Noise Flow for
       ``flow_steps``.
    3. NLL/dim and marginal KL of the three on held-out grid patches (``noise_models.{txt,csv,json}``).
    4. DnCNN (3 channels) trained for ``denoise_steps`` on clean training patches + sRGB Noise Flow noise, vs
       one with Gaussian noise at the fitted σ (and, if ``include_real``, on the real pairs); PSNR/SSIM on the
       held-out real noisy images (central ``eval_crop`` crops) → ``table.{txt,csv,json}``, ``images/``.
    """
    from visionflows.data.srgb_pairs import SRGBPairs, load_pairs
    from visionflows.denoise.train import SRGBPatches
    from visionflows.noise.srgb import (
        SRGBGaussianNoise,
        SRGBHeteroscedasticNoise,
        dequantize_noise,
        evaluate_srgb_noise_models,
        fit_srgb_noise_flow,
    )

    out = Path(out_dir)
    t0 = time.monotonic()
    pairs = data_dir if isinstance(data_dir, SRGBPairs) else load_pairs(data_dir)
    train, test = pairs.split(test_fraction, seed)
    train.check_patch(patch)
    fit_patches = train.grid_patches(patch, 4096, seed)
    fit_noise = dequantize_noise(fit_patches["noisy"], fit_patches["clean"], torch.Generator().manual_seed(seed))
    gauss = SRGBGaussianNoise.fit(fit_noise)
    hetero = SRGBHeteroscedasticNoise.fit(fit_noise, fit_patches["clean"])
    t_flow = time.monotonic()
    flow = fit_srgb_noise_flow(train, out / "runs" / "srgb_noiseflow", flow_steps, batch_size, patch, seed=seed,
                               progress=progress, overwrite=True)
    t_flow = time.monotonic() - t_flow
    for name, m in (("gaussian", gauss), ("heteroscedastic", hetero), ("srgb_noiseflow", flow)):
        save_model(m, out / "noise_models" / f"{name}.safetensors")
    eval_patches = test.grid_patches(patch, max_eval_patches, seed)
    scores = evaluate_srgb_noise_models({"gaussian": gauss, "heteroscedastic": hetero, "srgb_noiseflow": flow},
                                        eval_patches, seed)
    noise_rows = [{"model": k, "nll_per_dim": v["nll_per_dim"], "marginal_kl": v["kl"],
                   "params": _count(m)}
                  for (k, v), m in zip(scores.items(), (gauss, hetero, flow))]
    write_table(noise_rows, out, "noise_models", f"sRGB noise models on {eval_patches['noisy'].shape[0]} held-out "
                f"{patch}x{patch} patches of {len(test)} images (NLL nats/dim of 8-bit values; marginal KL)")

    data = SRGBPatches(train, patch)
    sigma = float(gauss.variance.sqrt()) / 255.0
    sources: dict[str, Any] = {"srgb_noiseflow": ModelSource(flow, "srgb", 1.0, "srgb_noiseflow"),
                               f"gaussian_sigma{sigma * 255:.2f}": GaussianSource(sigma, domain="srgb")}
    if include_real:
        sources["real"] = "real"
    models = {}
    t_den = time.monotonic()
    for name, src in sources.items():
        res = train_denoiser(data, src, out / "runs" / f"dncnn_{name}", denoise_steps, batch_size, depth=depth,
                             width=width, seed=seed, overwrite=True, progress=progress)
        models[name] = res.model
    t_den = time.monotonic() - t_den
    rows = evaluate_denoisers(models, test, out, crop=eval_crop)
    result = {"kind": "srgb", "data": pairs.root or str(data_dir), "train_images": train.names,
              "test_images": test.names,
              "flow_steps": flow_steps, "denoise_steps": denoise_steps, "batch_size": batch_size, "patch": patch,
              "gaussian_sigma_dn": sigma * 255, "hetero_a": hetero.a.tolist(), "hetero_b": hetero.b.tolist(),
              "noise_models": noise_rows, "denoisers": rows, "seconds_total": time.monotonic() - t0,
              "seconds_flow": t_flow, "seconds_denoisers": t_den}
    _write_json(out / "experiment.json", result)
    return result
