"""``visionflows demo``: both systems end to end on built-in real data, with a report a person wants to read.

1. **Noise Flow** on the built-in camera simulator (real photos, unprocessed to raw, physical sensor noise):
   fit the Gaussian, Camera NLF (SIDD table) and heteroscedastic baselines, train Noise Flow on the shared trainer,
   score all of them (NLL nats/dim, marginal KL) on held-out photos next to the simulator's own density (the
   floor); optionally import and score the authors' released weights.
2. **Denoising**: DnCNNs trained on Gaussian, Camera NLF, Noise Flow and "real" (simulator) noise, PSNR/SSIM on
   held-out simulator pairs (the paper's experiment in miniature).
3. **Wavelet Flow** on real photos bundled with scikit-image: every level trained independently, in parallel
   processes, then assembled; bits/dim per level on held-out photos (vs the untrained model), samples at every
   resolution, super-resolution of a held-out photo.
4. ``report.html`` in the run directory (figures next to it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from visionflows.errors import ConfigError
from visionflows.io import atomic_write_text, save_model
from visionflows.report import Report

__all__ = ["DemoBudget", "QUICK", "FULL", "run_demo"]


@dataclass(frozen=True)
class DemoBudget:
    """How much work each part of the demo does."""

    noise_train_images: int
    noise_test_images: int
    noise_steps: int
    noise_lr: float
    noise_batch: int
    denoise_steps: int
    denoise_train_images: int
    denoise_test_images: int
    wavelet_preset: str
    wavelet_steps: int
    wavelet_minutes_per_level: float | None
    wavelet_parallel: int
    wavelet_eval_images: int
    n_samples: int
    anneal_iterations: int = 40
    superres_images: int = 16


QUICK = DemoBudget(
    noise_train_images=12, noise_test_images=4, noise_steps=30, noise_lr=5e-3, noise_batch=64,
    denoise_steps=20, denoise_train_images=6, denoise_test_images=2,
    wavelet_preset="cpu_32", wavelet_steps=6, wavelet_minutes_per_level=None, wavelet_parallel=2,
    wavelet_eval_images=16, n_samples=8, anneal_iterations=4, superres_images=4,
)
FULL = DemoBudget(
    noise_train_images=160, noise_test_images=24, noise_steps=800, noise_lr=5e-3, noise_batch=138,
    denoise_steps=500, denoise_train_images=24, denoise_test_images=6,
    wavelet_preset="cpu_32", wavelet_steps=100_000, wavelet_minutes_per_level=0.65, wavelet_parallel=2,
    wavelet_eval_images=128, n_samples=16,
)


def _default_run_dir() -> Path:
    return Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")


def run_demo(
    run_dir: str | os.PathLike | None = None,
    quick: bool = False,
    official_ckpt: str | os.PathLike | None = None,
    budget: DemoBudget | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole demo into ``run_dir`` (a new ``runs/demo-<time>`` by default); returns the results."""
    budget = budget or (QUICK if quick else FULL)
    root = Path(run_dir) if run_dir is not None else _default_run_dir()
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"demo run directory {root} is not empty.", "choose a new --run-dir or delete it.")
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    report = Report("visionflows demo: Noise Flow and Wavelet Flow on built-in real data", root)
    report.intro.append(
        f"Mode: {'quick' if quick else 'full'}. Everything here was computed on this machine from data bundled "
        "with the dependencies (no download)."
    )
    results: dict[str, Any] = {"mode": "quick" if quick else "full", "budget": asdict(budget)}

    t = time.monotonic()
    results["noise"] = _noise_part(root / "noise", budget, official_ckpt, report, log, progress)
    timings["noise_s"] = time.monotonic() - t
    t = time.monotonic()
    results["denoise"] = _denoise_part(root / "denoise", budget, results["noise"]["noiseflow_file"], report, log,
                                       progress)
    timings["denoise_s"] = time.monotonic() - t
    t = time.monotonic()
    results["wavelet"] = _wavelet_part(root / "wavelet", budget, report, log)
    timings["wavelet_s"] = time.monotonic() - t
    timings["total_s"] = time.monotonic() - t0
    results["timings"] = timings
    report.section("Run").table([{"part": k, "seconds": round(v, 1)} for k, v in timings.items()]).note(
        f"torch {torch.__version__}, {os.cpu_count()} CPU(s), {torch.get_num_threads()} torch thread(s)."
    )
    atomic_write_text(root / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    path = report.write()
    results["report"] = str(path)
    log(f"\nreport: {path}  (total {timings['total_s']:.0f} s)")
    return results


# ------------------------------------------------------------------------------------------------------ noise
def _noise_part(out: Path, b: DemoBudget, official_ckpt, report: Report, log, progress: bool) -> dict[str, Any]:
    from visionflows.noise.baselines import CameraNLF, GaussianNoise, HeteroscedasticNoise
    from visionflows.noise.evaluate import format_table, write_noise_report
    from visionflows.noise.metrics import evaluate_noise_models
    from visionflows.noise.simulator import make_simulated_dataset, simulator_nll_floor
    from visionflows.noise.train import NoiseFlowTask
    from visionflows.training import TrainConfig, train

    log("== Noise Flow on the built-in camera simulator ==")
    sim = make_simulated_dataset(b.noise_train_images, b.noise_test_images, seed=0)
    tr, te = sim["train"].tensors(), sim["test"].tensors()
    log(f"simulated {tr['noise'].shape[0]} training / {te['noise'].shape[0]} held-out patches (32x32x4)")
    gauss = GaussianNoise().fit(tr["noise"])
    hetero = HeteroscedasticNoise().fit(tr["noise"], tr["clean"], tr["iso"], tr["camera"],
                                       generator=torch.Generator().manual_seed(0))
    task = NoiseFlowTask(sim["train"], sim["test"], preset="noiseflow", batch_size=b.noise_batch, eval_batches=None,
                         data_description="built-in simulator")
    cfg = TrainConfig(steps=b.noise_steps, batch_size=b.noise_batch, lr=b.noise_lr, optimizer="adam",
                      warmup_steps=min(50, b.noise_steps // 10), checkpoint_every=max(1, b.noise_steps),
                      progress=progress, log_every=10, device="cpu")
    result = train(task, cfg, out / "noiseflow_run")
    flow = result.model.eval()
    flow_file = save_model(flow, out / "noiseflow.safetensors")
    models: dict[str, Any] = {"Gaussian": gauss, "Camera NLF": CameraNLF(), "Heteroscedastic": hetero,
                              "Noise Flow": flow}
    if official_ckpt:
        from visionflows.noise.official import load_official

        models["Noise Flow (official SIDD weights)"] = load_official(official_ckpt)
    res = evaluate_noise_models(models, sim["test"], batch_size=138, generator=torch.Generator().manual_seed(1))
    write_noise_report(res, out / "eval")
    summary = res.summary()
    floor = simulator_nll_floor(te["noise"], te["clean"], te["camera"], te["iso"])
    text = format_table(summary, "Held-out simulator noise")
    log(text + f"simulator's own density (NLL floor, marginal): {floor:.4f} nats/dim")
    rows = [{"model": m, "NLL (nats/dim)": r["nll"], "marginal KL": r["kl"], "patches": r["n_patches"]}
            for m, r in summary["overall"].items()]
    rows.append({"model": "simulator density (floor)", "NLL (nats/dim)": floor, "marginal KL": float("nan"),
                 "patches": int(te["noise"].shape[0])})
    sec = report.section("Noise models on held-out simulated raw noise")
    sec.text("Lower NLL and KL are better. The floor is the simulator's own per-pixel density (row noise ignored).")
    sec.table(rows)
    per_iso = [{"ISO": iso, **{f"{m} NLL": v[m]["nll"] for m in v}} for iso, v in summary["per_iso"].items()]
    sec.table(per_iso, caption="NLL (nats/dim) per ISO")
    sec.figure(report.rel(out / "eval" / "histograms.png"), "Noise histograms: real vs each model, per ISO")
    sec.figure(report.rel(out / "eval" / "samples.png"), "Clean, real noise and each model's sample (amplified)")
    rendered = _rendered_noise(out / "eval" / "rendered.png", sim["test"], {"Noise Flow": flow, "Camera NLF":
                                                                           CameraNLF()})
    sec.figure(report.rel(rendered), "Rendered to sRGB (demosaic, white balance, colour matrix, tone curve; one "
                                     "gain for all): clean, real (simulated) noise and synthetic noise")
    return {"table": rows, "floor": floor, "noiseflow_file": str(flow_file), "train_steps": result.step}


def _rendered_noise(path: Path, test: Any, models: dict[str, Any], side: int = 4) -> Path:
    """The first held-out simulated image (``side²`` patches) rendered clean, real noisy and noisy with each
    model's sample (:mod:`visionflows.data.render`)."""
    from visionflows.cameras import CAMERAS
    from visionflows.cameras.specs import CAMERA_SPECS
    from visionflows.data.render import comparison_figure, tile_patches

    n = side * side
    clean, noise = test.clean[:n], test.noise[:n]
    cam, iso = int(test.camera[0]), int(test.iso[0])
    images = {"clean": tile_patches(clean.numpy(), side),
              "real noise": tile_patches((clean + noise).clamp(0, 1).numpy(), side)}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, model in models.items():
            s = model.eval().sample(clean, iso, cam, generator=gen)
            images[name] = tile_patches((clean + s).clamp(0, 1).numpy(), side)
    spec = CAMERA_SPECS[CAMERAS[cam]]
    comparison_figure(images, spec.packed_colors, spec.as_shot_neutral, spec.color_matrix, str(path),
                      title=f"{CAMERAS[cam]}, ISO {iso}")
    return path


# ---------------------------------------------------------------------------------------------------- denoise
def _denoise_part(out: Path, b: DemoBudget, flow_file: str, report: Report, log, progress: bool) -> dict[str, Any]:
    from visionflows.experiments.denoising import run_denoising_experiment

    log("\n== DnCNN denoisers trained on each model's noise ==")
    rows = run_denoising_experiment(out, steps=b.denoise_steps, n_train_images=b.denoise_train_images,
                                    n_test_images=b.denoise_test_images, noise_flow=flow_file, progress=progress)
    text = (out / "table.txt").read_text() if (out / "table.txt").is_file() else json.dumps(rows, indent=1)
    log(text)
    sec = report.section("Denoising: DnCNN trained on synthetic noise, tested on held-out simulator pairs")
    sec.text("Same step budget for every noise source; PSNR in dB, SSIM with data_range 1 (normalised raw).")
    sec.table(rows)
    for img in sorted((out / "images").glob("*.png"))[:4]:
        sec.figure(report.rel(img), img.stem.replace("_", " "))
    return {"table": rows}


# ---------------------------------------------------------------------------------------------------- wavelet
def _wavelet_part(out: Path, b: DemoBudget, report: Report, log) -> dict[str, Any]:
    from visionflows.data.images import open_images
    from visionflows.wavelet import create_model
    from visionflows.wavelet.anneal import AnnealConfig
    from visionflows.wavelet.codecs import codec_bits_per_dim
    from visionflows.wavelet.presets import get_preset
    from visionflows.wavelet.sample import evaluate_model, save_sample_grids
    from visionflows.wavelet.superres import superres_benchmark
    from visionflows.wavelet.train import assemble, train_all_levels

    preset = get_preset(b.wavelet_preset)
    log(f"\n== Wavelet Flow ({preset.name}, {preset.resolution}x{preset.resolution}) on bundled photos ==")
    per_level = b.wavelet_minutes_per_level
    total = per_level * len(preset.steps) / b.wavelet_parallel if per_level else None  # whole run, split by cost
    t = time.monotonic()
    train_all_levels(preset.name, out / "levels", parallel=b.wavelet_parallel, steps=b.wavelet_steps,
                     max_minutes=total, log=lambda s: log("  " + s))
    train_s = time.monotonic() - t
    model = assemble(out / "levels")
    test = open_images("builtin", preset.resolution, preset.channels, "test")
    images = test.eval_images[: b.wavelet_eval_images]
    trained = evaluate_model(model, images)
    untrained = evaluate_model(create_model(preset.name).eval(), images)
    rows = []
    for lv, (a, u) in enumerate(zip(trained["levels"], untrained["levels"])):
        src = model.level_sources.get(lv, {})
        rows.append({"level": lv, "trained (bits/dim contribution)": a, "untrained": u,
                     "step": src.get("step", "") if isinstance(src, dict) else str(src)})
    rows.append({"level": "total", "trained (bits/dim contribution)": trained["total"],
                 "untrained": untrained["total"], "step": ""})
    log(f"bits/dim on {images.shape[0]} held-out crops: trained {trained['total']:.4f}, "
        f"untrained {untrained['total']:.4f} (levels trained in {train_s:.0f} s wall, {b.wavelet_parallel} at a time)")
    codecs = codec_bits_per_dim(images)
    log("lossless codecs on the same pixels: " + ", ".join(f"{k} {v:.4f}" for k, v in codecs.items())
        + " bits/dim")
    grids = save_sample_grids(model, out / "samples", n=b.n_samples, temperature=0.8, seed=0)
    anneal = AnnealConfig(num_results=b.anneal_iterations, num_adaptation=b.anneal_iterations // 4,
                          progress=False)
    annealed = save_sample_grids(model, out / "samples_annealed", n=b.n_samples, temperature=0.8, seed=0,
                                 anneal=anneal)
    ast = model.last_anneal_stats
    log(f"annealed samples (HMC, {b.anneal_iterations} iterations per level): acceptance {ast.accept_rate:.2f}, "
        f"{ast.seconds_per_image:.2f} s per image")
    sr_images = images[: b.superres_images]
    sr = superres_benchmark(model, sr_images, out / "superres", factors=(2, 4), temperature=0.8, mean_of=4,
                            anneal=anneal, anneal_images=min(4, sr_images.shape[0]), seed=0, figure_images=3)
    x4 = sr["factors"]["4"]
    log(f"super-resolution x4 on {sr_images.shape[0]} held-out crops: T=0 {x4['T=0 (mode)']['psnr']:.2f} dB, "
        f"mean of 4 {x4['mean of 4 (T=1)']['psnr']:.2f} dB vs bicubic {x4['bicubic']['psnr']:.2f} dB, "
        f"box {x4['box']['psnr']:.2f} dB")
    sec = report.section("Wavelet Flow: bits/dim per level on held-out photos")
    sec.text(f"Every level trained as its own job ({b.wavelet_parallel} worker processes) in {train_s:.0f} s wall; "
             "contributions sum to the total (8-bit, dequantised). Lossless codecs on the same pixels (Pillow): "
             + ", ".join(f"{k} {v:.3f}" for k, v in codecs.items()) + " bits/dim.")
    sec.table(rows)
    sec2 = report.section("Wavelet Flow: direct and annealed samples at every resolution (T = 0.8)")
    sec2.text(f"Top: direct sampling (the latent scaled by T). Bottom: annealed HMC on p^(1/T²), "
              f"{b.anneal_iterations} iterations per level, acceptance {ast.accept_rate:.2f}, "
              f"{ast.seconds_per_image:.2f} s per image.")
    for g in grids:
        sec2.figure(report.rel(g), "direct " + g.stem.replace("_", " "), width=256)
    for g in annealed:
        sec2.figure(report.rel(g), "annealed " + g.stem.replace("_", " "), width=256)
    sec3 = report.section("Wavelet Flow: super-resolution of held-out photos")
    sec3.text(f"The same block-mean inputs for every method, {sr_images.shape[0]} held-out crops (annealed: the "
              "first 4); PSNR in dB, SSIM, data range 255.")
    table = []
    for f, methods in sr["factors"].items():
        for name, m in methods.items():
            table.append({"factor": f"x{f}", "method": name, "PSNR": m["psnr"], "SSIM": m["ssim"], "images": m["n"]})
    sec3.table(table)
    for f in ("2", "4"):
        sec3.figure(report.rel(out / "superres" / f"superres_x{f}.png"), f"x{f} super-resolution", width=800)
    return {"table": rows, "train_wall_s": train_s, "superres": sr, "bits_per_dim": trained["total"],
            "untrained_bits_per_dim": untrained["total"], "codecs": codecs, "anneal": ast.to_dict()}
