"""Paper-style evaluation reports of noise models: table (text, CSV, JSON) and figures (PNG).

:func:`write_noise_report` writes, atomically, into ``out_dir``:

* ``table.txt``: NLL (nats/dim) and marginal KL per model, overall, per camera and per ISO (Noise Flow
  paper Table 1 style);
* ``results.csv`` (one row per scope × group × model) and ``results.json`` (the summary);
* ``histograms.png``: real vs sampled noise value histograms per ISO, one line per model (the KL bins);
* ``samples.png``: clean patch, real noise and each model's sample side by side, amplified to ±3σ of the real
  noise (grey = 0) so a person can judge texture and level.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from visionflows.io import atomic_write_bytes, atomic_write_text
from visionflows.noise.metrics import KL_EDGES, NoiseEvalResults, evaluate_noise_models

__all__ = ["evaluate_noise_models", "format_table", "results_rows", "write_noise_report", "plot_histograms",
           "plot_samples"]


def _fmt(v: float, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_table(summary: dict[str, Any], title: str = "Noise model evaluation") -> str:
    """A plain-text table: overall rows per model, then per-camera and per-ISO NLL/KL columns."""
    models = list(summary["overall"])
    w = max(12, *(len(m) for m in models)) + 2
    lines = [title, f"{summary['n_patches']} test patches, {summary['values_per_patch']} values each; "
             f"KL on {summary['n_kl_patches']} patches in {summary['n_batches']} batches", ""]
    lines.append(f"{'model':<{w}}{'NLL (nats/dim)':>16}{'KL':>10}{'patches':>10}")
    for m in models:
        r = summary["overall"][m]
        lines.append(f"{m:<{w}}{_fmt(r['nll']):>16}{_fmt(r['kl']):>10}{r['n_patches']:>10}")
    cw = [max(20, len(m)) + 4 for m in models]  # a column per model, wide enough for its full name
    for scope, label in (("per_camera", "camera"), ("per_iso", "ISO")):
        gw = max(8, *(len(str(g)) + 2 for g in summary[scope]), len(label) + 2)  # zoo camera names are long
        lines += ["", f"NLL (nats/dim) / KL per {label}"]
        lines.append(f"{label:<{gw}}" + "".join(f"{m:>{c}}" for m, c in zip(models, cw)))
        for group, res in summary[scope].items():
            cells = "".join(f"{_fmt(res[m]['nll']) + ' / ' + _fmt(res[m]['kl']):>{c}}" for m, c in zip(models, cw))
            lines.append(f"{group:<{gw}}{cells}")
    return "\n".join(lines) + "\n"


def results_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows ``{scope, group, model, nll_nats_per_dim, kl, n_patches}``."""
    rows = []
    for m, r in summary["overall"].items():
        rows.append({"scope": "overall", "group": "all", "model": m, "nll_nats_per_dim": r["nll"], "kl": r["kl"],
                     "n_patches": r["n_patches"]})
    for scope in ("per_camera", "per_iso"):
        for group, res in summary[scope].items():
            for m, r in res.items():
                rows.append({"scope": scope, "group": group, "model": m, "nll_nats_per_dim": r["nll"],
                             "kl": r["kl"], "n_patches": r["n_patches"]})
    return rows


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_histograms(results: NoiseEvalResults) -> bytes:
    """PNG bytes: per ISO, the real noise value density and each model's (over the KL bins inside ±0.1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(results.samples)
    n = max(1, len(keys))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    edges = KL_EDGES[1:-1]
    centres = 0.5 * (edges[1:] + edges[:-1])
    for ax, iso in zip(axes[0], keys):
        d = results.samples[iso]
        for name in ["real"] + [m for m in results.models if m in d]:
            if name not in d:
                continue
            counts, _ = np.histogram(d[name], bins=edges)
            dens = counts / max(1, d[name].size) / np.diff(edges)
            ax.plot(centres, dens, lw=2.2 if name == "real" else 1.2, color="k" if name == "real" else None,
                    label=name)
        ax.set_yscale("log")
        ax.set_title(f"ISO {iso}")
        ax.set_xlabel("noise value (normalised raw)")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    if not keys:
        axes[0][0].text(0.5, 0.5, "no samples", ha="center")
    return _png(fig)


def plot_samples(results: NoiseEvalResults) -> bytes:
    """PNG bytes: rows = example patches (one per ISO); columns = clean, real noise, each model's sample.

    Noise is shown as the packed channel-1 plane mapped from ±3σ(real) to black/white (grey = 0); the clean
    patch as the mean of its 4 channels, normalised to its max.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = results.examples
    cols = ["clean", "real"] + list(results.models)
    rows = max(1, len(ex))
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.9 * len(cols), 2.0 * rows), squeeze=False)
    for r, e in enumerate(ex):
        sigma = max(float(np.std(e["real"])), 1e-8)
        for c, col in enumerate(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == "clean":
                img = e["clean"].mean(0)
                ax.imshow(img / max(float(img.max()), 1e-8), cmap="gray", vmin=0, vmax=1)
                ax.set_ylabel(f"{e['camera']} ISO {e['iso']}", fontsize=8)
            else:
                arr = e["real"] if col == "real" else e["samples"].get(col)
                if arr is None:
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center")
                else:
                    ax.imshow(arr[1], cmap="gray", vmin=-3 * sigma, vmax=3 * sigma)
            if r == 0:
                ax.set_title(col[:18], fontsize=8)
    return _png(fig)


def write_noise_report(results: NoiseEvalResults, out_dir: str | os.PathLike, figures: bool = True,
                       title: str = "Noise model evaluation") -> dict[str, Path]:
    """Write ``table.txt``, ``results.csv``, ``results.json`` (+ ``histograms.png``, ``samples.png``) atomically."""
    out = Path(out_dir)
    summary = results.summary()
    paths = {"table": out / "table.txt", "csv": out / "results.csv", "json": out / "results.json"}
    atomic_write_text(paths["table"], format_table(summary, title))
    buf = io.StringIO()
    rows = results_rows(summary)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(paths["csv"], buf.getvalue())
    atomic_write_text(paths["json"], json.dumps(_json_safe(summary), indent=2) + "\n")
    if figures:
        paths["histograms"] = out / "histograms.png"
        paths["samples"] = out / "samples.png"
        atomic_write_bytes(paths["histograms"], plot_histograms(results))
        atomic_write_bytes(paths["samples"], plot_samples(results))
    return paths
