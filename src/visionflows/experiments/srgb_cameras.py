"""sRGB noise on cameras a model never saw: leave-one-camera-out evaluation and few-pair adaptation.

For a held-out camera, every model is trained on the *other* cameras' pairs. The camera's own pairs are split
into adaptation pools and evaluation pairs by :func:`adaptation_folds`: in fold ``f`` the ``f``-th image of each
of its ISO groups (sorted by name) is the pool and the rest is evaluated. The pool images are cut into
``tile``×``tile`` tiles (256² by default; a 512² cc15 image gives 4), and "k pairs" are the first k tiles of the
pool, taken round-robin over the pool images (so k = 4 on a three-ISO camera spans every ISO) in a seeded order
within each image. The evaluation pairs never share an image with the pool.

Rows (:func:`score_held_camera`), each averaged over the folds: baselines fitted on the other cameras, each
given flow zero-shot (the camera is unknown to it: k = 0), and for every k the heteroscedastic baseline fitted
on the k tiles and each flow adapted on the same k tiles (:func:`~visionflows.noise.srgb.adapt_srgb_flow`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionflows.errors import DataError
from visionflows.io import atomic_write_bytes, atomic_write_text, save_model

__all__ = ["adaptation_folds", "adaptation_pool", "check_adaptation_ks", "check_camera_study", "score_held_camera",
           "run_camera_study", "plot_camera_study"]


def adaptation_folds(held: Any, tile: int | None = 256, folds: int | None = 3,
                     seed: int = 0) -> list[tuple[Any, Any]]:
    """``[(pool tiles in adaptation order, evaluation pairs)]`` for the pairs ``held`` of one camera (see the
    module docstring). ISO groups with one image are always evaluated; the number of folds is at most the
    smallest size of the other groups (and ``folds``). ``tile=None`` keeps the pool images whole.
    DataError for a camera with a single pair."""
    if len(held) < 2:
        raise DataError(f"camera {held.cameras[0] if len(held) else '?'} has {len(held)} pair(s): at least two are "
                        "needed (one to adapt on, one to evaluate).", "add pairs of the camera.")
    groups: dict[Any, list[int]] = {}
    for i in sorted(range(len(held)), key=lambda j: held.names[j]):
        groups.setdefault(held.isos[i], []).append(i)
    multi = [g for g in groups.values() if len(g) >= 2]
    if not multi:  # every ISO has one image: the first image is the pool
        multi = [[i for g in groups.values() for i in g]]
    n_folds = min(min(len(g) for g in multi), folds or 10**9)
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_folds):
        pool_idx = [g[f] for g in multi]
        rest = held.subset([i for i in range(len(held)) if i not in pool_idx])
        out.append((adaptation_pool(held.subset(pool_idx), tile, rng), rest))
    return out


def adaptation_pool(pairs: Any, tile: int | None = 256, seed: int | np.random.Generator = 0) -> Any:
    """``pairs`` cut into ``tile``² tiles (None: whole) in adaptation order: round-robin over the images, in a
    seeded random order within each image, so the first k tiles spread over as many images (ISOs) as they can."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pool = pairs.tiles(tile) if tile else pairs
    per_image: dict[str, list[int]] = {}
    for j, name in enumerate(pool.names):
        per_image.setdefault(name.split("#")[0] if tile else name, []).append(j)
    lists = [[v[i] for i in rng.permutation(len(v))] for v in per_image.values()]
    order = [lst[r] for r in range(max(len(x) for x in lists)) for lst in lists if r < len(lst)]
    return pool.subset(order)


def check_adaptation_ks(held: Any, camera: str, ks: tuple[int, ...], tile: int | None = 256,
                        folds: int | None = 3, seed: int = 0, patch: int | None = None,
                        names: dict[str, str] | None = None) -> None:
    """DataError unless every k of ``ks`` fits the adaptation pool of each fold of camera ``camera``'s pairs
    ``held`` (:func:`adaptation_folds`), and (with ``patch``) every pool tile and some evaluation image is at
    least ``patch`` on a side. ``names`` maps ``k``/``tile``/``patch`` to what the message calls them (flags)."""
    n = {"k": "k", "tile": "tile", "patch": "patch", **(names or {})}
    if not ks:
        return
    split = adaptation_folds(held, tile, folds, seed)
    k, smallest = max(ks), min(len(pool) for pool, _ in split)
    if k > smallest:
        per = "the pool of each fold: one image per ISO" if len(split) > 1 else "the pool: one image per ISO"
        raise DataError(f"{n['k']} {k} but camera {camera} has {smallest} pair(s) to adapt on ({per}"
                        + (f", cut into tiles of at most {tile}x{tile}" if tile else "") + ").",
                        f"pass {n['k']} {smallest} or less" + (f" (or a smaller {n['tile']})." if tile else "."))
    if patch is not None:
        if tile and patch > tile:
            raise DataError(f"{n['patch']} {patch} is larger than {n['tile']} {tile}: the adaptation patches are cut "
                            f"from the camera's {tile}x{tile} tiles.",
                            f"use {n['patch']} {tile} or less, or a larger {n['tile']}.")
        for pool, ev in split:
            pool.check_patch(patch, n["patch"])
            if all(min(im.shape[:2]) < patch for im in ev.noisy):
                raise DataError(f"{n['patch']} {patch} is larger than every evaluation image of camera {camera}.",
                                f"use a smaller {n['patch']}.")


def check_camera_study(pairs: Any, cameras: list[str] | None = None, ks: tuple[int, ...] = (1, 4),
                       tile: int | None = 256, folds: int | None = 3, patch: int = 32, seed: int = 0,
                       names: dict[str, str] | None = None) -> list[str]:
    """The held-out cameras of a leave-one-camera-out study on ``pairs`` (``cameras``, default every known one),
    checked before any training: the data have camera labels, each camera has pairs and other cameras to train
    on, every k fits its adaptation pools and ``patch`` fits the images (:func:`check_adaptation_ks`). DataError
    otherwise; ``names`` maps ``cameras``/``k``/``tile``/``patch`` to what the messages call them (flags)."""
    n = {"cameras": "cameras", "patch": "patch", **(names or {})}
    known = pairs.require_cameras()
    cams = [str(c).lower() for c in cameras] if cameras else known
    for cam in cams:
        rest, held = pairs.camera_split(cam)
        rest.check_patch(patch, n["patch"])
        if not ks and all(min(im.shape[:2]) < patch for im in held.noisy):
            raise DataError(f"{n['patch']} {patch} is larger than every image of camera {cam}.",
                            f"use a smaller {n['patch']}.")
        check_adaptation_ks(held, cam, ks, tile, folds, seed, patch, names)
    return cams


def score_held_camera(flows: dict[str, Any], rest: Any, held: Any, camera: str, ks: tuple[int, ...] = (1, 4),
                      folds: int | None = 3, tile: int | None = 256, adapt_steps: int = 200, adapt_lr: float = 0.01,
                      patch: int = 32, max_eval_patches: int = 1024, seed: int = 0,
                      baselines: bool = True, out_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """NLL/dim and marginal KL on the held-out ``camera`` (pairs ``held``) of the baselines fitted on ``rest``,
    of each flow in ``flows`` zero-shot and adapted on k tiles, and of the heteroscedastic baseline fitted on the
    same k tiles; averaged over the folds of :func:`adaptation_folds`. Rows ``{camera, model, k, nll_per_dim,
    marginal_kl, per_fold}``. With ``out_dir`` the adapted flows of the first fold are saved there."""
    from visionflows.noise.fitting import fit_srgb_baselines
    from visionflows.noise.srgb import SRGBNoiseFlow, adapt_srgb_flow, evaluate_srgb_noise_models

    check_adaptation_ks(held, camera, ks, tile, folds, seed)
    split = adaptation_folds(held, tile, folds, seed) if ks else [(None, held)]
    base = dict(zip(("gaussian (other cameras)", "heteroscedastic (other cameras)"),
                    fit_srgb_baselines(rest, patch, seed))) if baselines else {}
    scores: dict[tuple[str, int], list[dict[str, float]]] = {}
    for f, (pool, ev) in enumerate(split):
        patches = ev.grid_patches(patch, max_eval_patches, seed)
        models: dict[tuple[str, int], Any] = {(n, 0): m for n, m in base.items()}
        models.update({(n, 0): m for n, m in flows.items()})
        for k in ks:
            kp = pool.subset(range(k))
            models[("heteroscedastic (k pairs)", k)] = fit_srgb_baselines(kp, patch, seed)[1]
            for name, flow in flows.items():
                if isinstance(flow, SRGBNoiseFlow):
                    adapted, _ = adapt_srgb_flow(flow, kp, camera, adapt_steps, patch=patch, lr=adapt_lr,
                                                 seed=seed + f)
                    models[(f"{name} adapted", k)] = adapted
                    if out_dir is not None and f == 0:
                        save_model(adapted, Path(out_dir) / f"{name}_{camera}_k{k}.safetensors")
        res = evaluate_srgb_noise_models({f"{n}|{k}": m for (n, k), m in models.items()}, patches, seed)
        for key, v in res.items():
            n, k = key.rsplit("|", 1)
            scores.setdefault((n, int(k)), []).append({"nll_per_dim": v["nll_per_dim"], "kl": v["kl"],
                                                       "eval_images": len(ev)})
    rows = []
    for (n, k), per in scores.items():
        rows.append({"camera": camera, "model": n, "k": k,
                     "nll_per_dim": float(np.mean([p["nll_per_dim"] for p in per])),
                     "marginal_kl": float(np.mean([p["kl"] for p in per])), "folds": len(per), "per_fold": per})
    return rows


def plot_camera_study(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """``path`` (PNG): per held-out camera, NLL and KL vs k of the adapted flows and of the heteroscedastic
    baseline fitted on k pairs, with the other-cameras baselines as horizontal lines."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = list(dict.fromkeys(r["camera"] for r in rows))
    fig, axes = plt.subplots(2, len(cams), figsize=(3.6 * len(cams), 5.6), squeeze=False)
    for j, cam in enumerate(cams):
        cr = [r for r in rows if r["camera"] == cam]
        for i, (key, label) in enumerate((("nll_per_dim", "NLL (nats/dim)"), ("marginal_kl", "marginal KL"))):
            ax = axes[i][j]
            for name in dict.fromkeys(r["model"] for r in cr):
                pts = sorted((r["k"], r[key]) for r in cr if r["model"] == name)
                zero = [r for r in cr if r["model"] == name.removesuffix(" adapted") and r["k"] == 0]
                if name.endswith(" adapted") and zero:
                    pts = [(0, zero[0][key])] + pts
                if name.endswith("(other cameras)"):
                    ax.axhline(pts[0][1], ls="--", lw=1, color="grey" if "gauss" in name else "tab:orange",
                               label=name)
                elif any(r["model"] == f"{name} adapted" for r in cr):
                    continue  # drawn as the k = 0 point of its adapted line
                else:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name.replace(" (k pairs)", ""
                            " fitted on k"))
            ax.set_xlabel("k (256² pairs of the held-out camera)")
            ax.set_ylabel(label)
            ax.set_title(f"held out: {cam}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def run_camera_study(data: str | os.PathLike | Any, out_dir: str | os.PathLike, cameras: list[str] | None = None,
                     ks: tuple[int, ...] = (1, 4), flow_steps: int = 600, adapt_steps: int = 200,
                     folds: int | None = 3, tile: int | None = 256, preset: str = "srgb_noiseflow_sdl",
                     unknown_prob: float = 0.2, batch_size: int = 32, patch: int = 32, lr: float = 3e-3,
                     max_eval_patches: int = 1024, seed: int = 0, layout: str = "auto",
                     progress: bool = False) -> dict[str, Any]:
    """Leave-one-camera-out over ``cameras`` (default: every known camera of ``data``): for each, train the
    ``preset`` flow on the other cameras (``flow_steps``, ``unknown_prob`` camera/ISO dropout) into
    ``out/runs/holdout_<camera>``, then :func:`score_held_camera`. ``data``: a folder / CSV manifest, or loaded
    :class:`~visionflows.data.srgb_pairs.SRGBPairs`. Everything is checked first (:func:`check_camera_study`),
    so a bad setting writes nothing. Writes ``cameras.{txt,csv,json}``,
    ``cameras.png`` and ``experiment.json``; returns ``{"rows", "seconds", ...}``."""
    from visionflows.data.srgb_pairs import SRGBPairs, load_pairs
    from visionflows.denoise.evaluate import write_table
    from visionflows.noise.srgb import fit_srgb_noise_flow
    from visionflows.registry import create_model

    out = Path(out_dir)
    t0 = time.monotonic()
    pairs = data if isinstance(data, SRGBPairs) else load_pairs(data, layout=layout)
    cameras = check_camera_study(pairs, cameras, ks, tile, folds, patch, seed)
    proto = create_model(preset)
    rows: list[dict[str, Any]] = []
    timing = {}
    for cam in cameras:
        rest, held = pairs.camera_split(cam)
        t = time.monotonic()
        flow = fit_srgb_noise_flow(rest, out / "runs" / f"holdout_{cam}", flow_steps, batch_size, patch, lr,
                                   seed=seed, width=proto.width, progress=progress, overwrite=True,
                                   norm=proto.norm, arch=proto.arch, unknown_prob=unknown_prob)
        t_flow = time.monotonic() - t
        rows += score_held_camera({"srgb_noiseflow": flow}, rest, held, cam, ks, folds, tile, adapt_steps,
                                  patch=patch, max_eval_patches=max_eval_patches, seed=seed,
                                  out_dir=out / "adapted")
        timing[cam] = {"flow_s": t_flow, "score_s": time.monotonic() - t - t_flow}
    table = [{k: v for k, v in r.items() if k != "per_fold"} for r in rows]
    write_table(table, out, "cameras", "Leave-one-camera-out: NLL (nats/dim) and marginal KL on the held-out "
                f"camera's images, mean over folds; k = number of "
                f"{f'{tile}x{tile}' if tile else 'whole-image'} pairs of that camera used")
    plot_camera_study(rows, out / "cameras.png")
    result = {"data": pairs.root or str(data), "cameras": cameras, "ks": list(ks), "flow_steps": flow_steps,
              "adapt_steps": adapt_steps, "tile": tile, "preset": preset, "unknown_prob": unknown_prob,
              "rows": rows, "timing_s": timing, "seconds": time.monotonic() - t0, "threads": torch.get_num_threads()}
    atomic_write_text(out / "experiment.json", json.dumps(result, indent=2, default=str) + "\n")
    return result
