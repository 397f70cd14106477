"""Experiments of "Noise Flow for any camera" on the darktable camera zoo (results in ``docs/cameras.md``).

* :func:`effects_experiment`: per sensor-physics effect, NLL and marginal KL of the Gaussian, camera-NLF,
  heteroscedastic, official-architecture Noise Flow and parameter-conditioned Noise Flow on held-out patches.
* :func:`zero_shot_experiment`: the parameter-conditioned flow trained on many zoo cameras, scored on held-out
  cameras (a maker, or a sensor format) against the camera NLF, a heteroscedastic Gaussian fitted on those
  cameras, and flows trained on those very cameras.

Protocol (reference ``noiseflow.md`` §8): NLL in nats/dim on the test patches; KL on every 5th patch of each
batch of 138, one T = 1 sample per model, averaged per batch then over batches. Trainings are short and of equal
wall-clock budget (Adam, batch 64, gradient clipping); the numbers are what such budgets give, not converged
optima.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from visionflows.cameras.darktable import CameraZoo
from visionflows.cameras.formats import sensor_format
from visionflows.cameras.physics import SensorPhysics
from visionflows.data.simulated import SimulatedSidd, make_zoo_dataset
from visionflows.noise.baselines import CameraNLF, GaussianNoise, HeteroscedasticNoise
from visionflows.noise.context import NoiseContext
from visionflows.noise.metrics import kl_patch_indices, marginal_kl
from visionflows.noise.model import NoiseFlow, create_model
from visionflows.noise.simulator_density import sensor_log_prob
from visionflows.noise.train import moment_init_signal_layer

__all__ = [
    "zoo_context",
    "train_flow",
    "fit_baselines",
    "evaluate",
    "nll_floor",
    "effects_experiment",
    "zero_shot_experiment",
    "holdout_cameras",
]


def zoo_context(data: SimulatedSidd, idx: torch.Tensor | slice) -> NoiseContext:
    """The context of patches ``idx`` of a zoo set: clean, ISO, camera (its index in the set) and measured nlf."""
    return NoiseContext.create(data.clean[idx], data.iso[idx], data.camera[idx], allowed_isos=None,
                               num_cameras=None).with_nlf(data.nlf[idx])


def train_flow(model: NoiseFlow, data: SimulatedSidd, seconds: float = 60.0, max_steps: int = 5000,
               batch_size: int = 64, lr: float = 2e-3, seed: int = 0, grad_clip: float = 50.0) -> dict[str, float]:
    """Train ``model`` on ``data`` for ``seconds`` of wall clock (or ``max_steps``); returns steps and last loss.

    A flow with the official signal-dependent layer is first moment-initialised on the data (as ``noise train``
    does by default)."""
    gen = torch.Generator().manual_seed(seed)
    n = data.clean.shape[0]
    moment_init_signal_layer(model, data.noise[:4096], data.clean[:4096], data.iso[:4096])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, step, losses = time.perf_counter(), 0, []
    while step < max_steps and time.perf_counter() - start < seconds:
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = -model.log_prob(data.noise[idx], zoo_context(data, idx)).mean() / data.noise[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - start,
            "train_loss": float(np.mean(losses[-50:])) if losses else math.nan}


def fit_baselines(data: SimulatedSidd) -> dict[str, Any]:
    """Gaussian (pooled variance) and a per-channel heteroscedastic Gaussian per (camera, ISO) of ``data``."""
    isos = tuple(sorted({int(i) for i in data.iso}))
    hetero = HeteroscedasticNoise(num_cameras=len(data.camera_names), isos=isos, per_channel=True)
    hetero.fit(data.noise, data.clean, data.iso, data.camera)
    return {"Gaussian": GaussianNoise().fit(data.noise), "Heteroscedastic": hetero.eval()}


@torch.no_grad()
def evaluate(models: dict[str, Any], test: SimulatedSidd, batch_size: int = 138, seed: int = 0,
             contexts: dict[str, SimulatedSidd] | None = None) -> dict[str, dict[str, float]]:
    """``{name: {nll, kl}}`` on ``test`` (module docstring). ``contexts`` may give a model the same patches with
    other camera indices (a model trained on a set whose camera list differs)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, float]] = {}
    n = test.clean.shape[0]
    for name, model in models.items():
        model.eval()
        src = (contexts or {}).get(name, test)
        nll_sum, kl_batches = 0.0, []
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            ctx = zoo_context(src, sl)
            noise = test.noise[sl]
            nll_sum += float((-model.log_prob(noise, ctx) / noise[0].numel()).double().sum())
            idx = torch.tensor(kl_patch_indices(noise.shape[0]))
            sample = model.sample(ctx[idx], generator=gen)
            kl_batches.append(np.mean([marginal_kl(r, q) for r, q in zip(noise[idx], sample)]))
        out[name] = {"nll": nll_sum / n, "kl": float(np.mean(kl_batches))}
    return out


def nll_floor(zoo: CameraZoo, test: SimulatedSidd, physics: SensorPhysics,
              max_patches: int | None = None) -> float | None:
    """The simulator's marginal NLL (nats/dim) on the (first ``max_patches``) test patches (normal approximation
    above 1000 counts), or ``None`` when the physics has no tractable density."""
    if not physics.tractable or (physics.clip and not physics.quantise):
        return None
    m = test.clean.shape[0] if max_patches is None else min(max_patches, test.clean.shape[0])
    total = 0.0
    for i in range(m):
        cam = zoo.camera(test.camera_names[int(test.camera[i])])
        params = cam.sensor_params(int(test.iso[i]))
        total += float(sensor_log_prob(test.noise[i], test.clean[i], params, physics, normal_above=1000).mean())
    return -total / m


def _flows(data: SimulatedSidd, seconds: float, seed: int, max_steps: int = 5000
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    official = NoiseFlow(num_cameras=len(data.camera_names), seed=seed)
    nlf = create_model("noiseflow_nlf", seed=seed)
    logs = {"Noise Flow (official arch)": train_flow(official, data, seconds, max_steps, seed=seed),
            "Noise Flow (measured params)": train_flow(nlf, data, seconds, max_steps, seed=seed)}
    return {"Noise Flow (official arch)": official, "Noise Flow (measured params)": nlf}, logs


def effects_experiment(zoo: CameraZoo, pairs: Sequence[tuple[str, int]], effects: dict[str, SensorPhysics],
                       n_train: int = 60, n_test: int = 30, seconds: float = 60.0, seed: int = 0,
                       max_steps: int = 5000) -> list[dict]:
    """One row per effect: ``{effect, floor, models: {name: {nll, kl}}, training: {...}}`` (module docstring);
    each flow trains for ``seconds`` of wall clock or ``max_steps`` steps, whichever ends first."""
    rows = []
    for label, physics in effects.items():
        d = make_zoo_dataset(zoo, pairs, n_train, n_test, physics=physics, seed=seed)
        models: dict[str, Any] = fit_baselines(d["train"])
        models = {"Gaussian": models["Gaussian"], "Camera NLF (profile)": CameraNLF(),
                  "Heteroscedastic": models["Heteroscedastic"]}
        flows, logs = _flows(d["train"], seconds, seed, max_steps)
        models.update(flows)
        rows.append({"effect": label, "physics": physics.describe(), "floor": nll_floor(zoo, d["test"], physics),
                     "models": evaluate(models, d["test"], seed=seed), "training": logs,
                     "train_patches": len(d["train"]), "test_patches": len(d["test"])})
    return rows


def holdout_cameras(zoo: CameraZoo, by: str, value: str) -> tuple[list[str], list[str]]:
    """(held-out, training) camera names: ``by="maker"`` holds out a maker, ``by="format"`` a sensor format."""
    def key(c: Any) -> str:
        return c.maker.lower() if by == "maker" else sensor_format(c.maker, c.model)
    held = [c.name for c in zoo if key(c) == value.lower()]
    rest = [c.name for c in zoo if key(c) != value.lower()]
    return held, rest


def _pairs(zoo: CameraZoo, names: Sequence[str], isos: Sequence[int]) -> list[tuple[str, int]]:
    return [(n, i) for n in names for i in isos if i in zoo.camera(n).isos]


def zero_shot_experiment(zoo: CameraZoo, held_out: Sequence[str], train_cameras: Sequence[str],
                         physics: SensorPhysics, isos: Sequence[int] = (400, 1600, 3200), n_train: int = 60,
                         n_test: int = 30, seconds: float = 60.0, seed: int = 0, max_steps: int = 5000
                         ) -> dict[str, Any]:
    """Zero-shot on ``held_out`` cameras (module docstring). Training images of the zoo flow are spread over
    ``train_cameras``; the camera-specific models see ``n_train`` images of the held-out cameras."""
    train_pairs, held_pairs = _pairs(zoo, train_cameras, isos), _pairs(zoo, held_out, isos)
    zoo_data = make_zoo_dataset(zoo, train_pairs, n_train, 0, physics=physics, seed=seed + 1)["train"]
    held = make_zoo_dataset(zoo, held_pairs, n_train, n_test, physics=physics, seed=seed)
    zero = create_model("noiseflow_nlf", seed=seed)
    logs = {"zero-shot": train_flow(zero, zoo_data, seconds, max_steps, seed=seed)}
    specific, spec_logs = _flows(held["train"], seconds, seed, max_steps)
    logs.update(spec_logs)
    base = fit_baselines(held["train"])
    models = {"Camera NLF (profile)": CameraNLF(), "Heteroscedastic (fitted on them)": base["Heteroscedastic"],
              "Noise Flow, official arch (trained on them)": specific["Noise Flow (official arch)"],
              "Noise Flow, measured params (trained on them)": specific["Noise Flow (measured params)"],
              "Noise Flow, measured params (zero-shot)": zero}
    return {"held_out": list(held_out), "n_train_cameras": len({n for n, _ in train_pairs}),
            "held_pairs": len(held_pairs), "test_patches": len(held["test"]), "training": logs,
            "models": evaluate(models, held["test"], seed=seed)}


def _frames(zoo: CameraZoo, camera: str, iso: int, physics: SensorPhysics, k: int, seed: int,
            size: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
    """k dark and k flat (level 0.3) simulated frames of ``camera`` as adaptation pairs."""
    from visionflows.data.adaptation import frames_to_pairs
    from visionflows.data.sensor import SensorSimulator

    sim = SensorSimulator(zoo.camera(camera).sensor_params(iso), physics)
    rng = np.random.default_rng(seed)
    dark = [sim.simulate(np.zeros((4, size, size)), rng, origin=(int(rng.integers(4096)), 0)) for _ in range(k)]
    flat = [sim.simulate(np.full((4, size, size), 0.3), rng, origin=(int(rng.integers(4096)), 0)) for _ in range(k)]
    return frames_to_pairs(dark, flat)


def adaptation_experiment(zoo: CameraZoo, camera: str, iso: int, train_cameras: Sequence[str],
                          physics: SensorPhysics, official: NoiseFlow, ks: Sequence[int] = (1, 4, 16),
                          n_zoo_train: int = 64, n_test: int = 16, seconds: float = 60.0, steps: int = 150,
                          seed: int = 0) -> dict[str, Any]:
    """Held-out NLL of a new ``camera`` before and after few-frame adaptation, for k images (16 patches of 32²
    each) of noisy/clean pairs, or k dark + k flat frames.

    Models: ``official`` (e.g. the released Noise Flow) with a sixth camera column (before: the mean column), and
    the measured-parameter flow trained on ``train_cameras`` (before: the median parameters of its training
    cameras); references: a per-channel heteroscedastic Gaussian fitted on the same k pairs, and the camera NLF
    with the camera's darktable profile.
    """
    from visionflows.data.adaptation import adaptation_patches
    from visionflows.noise.adapt import adapt_camera, add_camera

    data = make_zoo_dataset(zoo, [(camera, iso)], max(ks), n_test, physics=physics, seed=seed)
    train, test = data["train"], data["test"]
    pairs = [(n, iso) for n in train_cameras if iso in zoo.camera(n).isos and n != camera]
    zoo_data = make_zoo_dataset(zoo, pairs, n_zoo_train, 0, physics=physics, seed=seed + 1)["train"]
    flow = create_model("noiseflow_nlf", seed=seed)
    log = train_flow(flow, zoo_data, seconds, seed=seed)

    def test_nll(model: Any, name: str | int, nlf: bool = False) -> float:
        ctx = zoo_context(test, slice(None)) if nlf else model.context(test.clean, iso, name)
        return float((-model.log_prob(test.noise, ctx) / test.noise[0].numel()).mean())

    before_flow = add_camera(flow, camera)
    before_flow.camera_nlf[-1] = zoo_data.nlf.median(dim=0).values
    out: dict[str, Any] = {"camera": camera, "iso": iso, "ks": list(ks), "zoo_training": log,
                           "n_train_cameras": len({n for n, _ in pairs}), "test_patches": len(test),
                           "reference": {"Camera NLF (profile)": test_nll(CameraNLF(), 0, nlf=True)},
                           "before": {"official + new camera (mean column)": test_nll(add_camera(official, camera),
                                                                                      camera),
                                      "measured-params flow (median parameters)": test_nll(before_flow, camera)},
                           "after": {}}
    per_image = train.clean.shape[0] // max(ks)
    for k in ks:
        n = k * per_image
        sets = {"pairs": (train.noise[:n], train.clean[:n])}
        p = adaptation_patches(_frames(zoo, camera, iso, physics, k, seed + 7 + k))
        sets["dark+flat"] = (p["noise"], p["clean"])
        row: dict[str, float] = {}
        for kind, (noise, clean) in sets.items():
            for label, model in (("official + new camera", official), ("measured-params flow", flow)):
                adapted, _ = adapt_camera(model, camera, noise, clean, iso, steps=steps, seed=seed)
                row[f"{label} ({kind})"] = test_nll(adapted, camera)
            hetero = HeteroscedasticNoise(num_cameras=1, isos=(iso,), per_channel=True)
            hetero.fit(noise, clean, iso, torch.zeros(noise.shape[0], dtype=torch.long))
            row[f"heteroscedastic fit ({kind})"] = float(
                (-hetero.eval().log_prob(test.noise, test.clean, iso, 0) / test.noise[0].numel()).mean())
        out["after"][str(k)] = row
    return out


def plot_adaptation(result: dict[str, Any], path: str) -> None:
    """NLL vs k (log axis) of :func:`adaptation_experiment` as a PNG: one line per model and data kind, dashed
    lines for the unadapted starts and the camera NLF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = result["ks"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    names = list(result["after"][str(ks[0])])
    models = list(dict.fromkeys(n.split(" (")[0] for n in names))
    for name in names:
        color = f"C{models.index(name.split(' (')[0])}"
        ax.plot(ks, [result["after"][str(k)][name] for k in ks], marker="o", color=color,
                ls="-" if "(pairs)" in name else "--", label=name)
    for j, (name, v) in enumerate({**result["before"], **result["reference"]}.items()):
        ax.axhline(v, color=f"C{7 + j}", ls=":", lw=1.2, label=f"{name}: {v:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (images of 16 patches, or k dark + k flat frames)")
    ax.set_ylabel("held-out NLL (nats/dim)")
    ax.set_title(f"Adapting to {result['camera']} at ISO {result['iso']}")
    lo = min(min(r.values()) for r in result["after"].values())
    ax.set_ylim(lo - 0.05, lo + 0.6)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
