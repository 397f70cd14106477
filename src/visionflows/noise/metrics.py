"""Noise-model metrics of the Noise Flow paper (reference ``noiseflow.md`` §8).

* **NLL** in nats/dim: per-patch NLL divided by the patch's number of values (4096 for 4×32×32), averaged over
  patches. Continuous density on normalised raw units, eval-mode BN, no dequantisation.
* **Marginal KL**: for every test minibatch of 138 patches take patches 0, 5, 10, …; histogram the real noise
  and one model sample (same clean patch, ISO, camera; T = 1) over the edges
  ``[−1000] ∪ {−0.1 + k·0.003125, k = 0…64} ∪ [1000]``; ``p, q = counts / values per patch``;
  ``KL(p‖q) = Σ_{p>0, q>0} p·ln(p/q)``; average over the patches of a batch, then over batches.

:func:`evaluate_noise_models` scores several models on one test set, overall, per camera and per ISO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.cameras import CAMERAS
from visionflows.errors import DataError, InputError

__all__ = [
    "KL_EDGES",
    "marginal_kl",
    "histogram_pmf",
    "kl_patch_indices",
    "iter_test_batches",
    "NoiseEvalResults",
    "evaluate_noise_models",
]

#: 67 edges, 66 bins (numpy histogram: half-open except the last).
KL_EDGES: np.ndarray = np.concatenate([[-1000.0], -0.1 + 0.003125 * np.arange(65), [1000.0]])


def histogram_pmf(values: np.ndarray | Tensor, edges: np.ndarray = KL_EDGES) -> np.ndarray:
    """Bin counts of the flattened ``values`` divided by their number (not clipped)."""
    v = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, np.float64)
    v = v.reshape(-1)
    counts, _ = np.histogram(v, bins=edges)
    return counts / v.size


def marginal_kl(real: np.ndarray | Tensor, model: np.ndarray | Tensor, edges: np.ndarray = KL_EDGES) -> float:
    """Forward KL between the value histograms of one real and one sampled noise patch (empty bins dropped)."""
    p, q = histogram_pmf(real, edges), histogram_pmf(model, edges)
    m = (p > 0) & (q > 0)
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def kl_patch_indices(batch_size: int, every: int = 5) -> list[int]:
    """Patches of a minibatch used for the KL: 0, 5, 10, … (28 of 138)."""
    return list(range(0, batch_size, every))


def noise_tensors(data: Any, what: str = "data") -> dict[str, Any] | None:
    """``{clean, noise, iso, camera (, nlf)}`` of a tensor mapping or an object with ``.tensors()``; ``None``
    for other kinds of data. Raises :class:`DataError` when a key is missing or the set is empty."""
    if hasattr(data, "tensors") and callable(data.tensors):
        data = data.tensors()
    if not isinstance(data, Mapping):
        return None
    missing = [k for k in ("clean", "noise", "iso", "camera") if k not in data]
    if missing:
        raise DataError(f"{what} lacks {missing}.", "give clean, noise [N,4,H,W], iso and camera [N].")
    if int(data["clean"].shape[0]) == 0:
        raise DataError(f"the {what} is empty.", "give at least one patch.")
    return data


def iter_test_batches(test_set: Any, batch_size: int = 138) -> Iterator[dict[str, Tensor]]:
    """Minibatches ``{noise, clean, iso [B], camera [B], (nlf [B, 2])}`` of a test set.

    ``test_set``: a mapping (or an object with ``.tensors()``) of tensors ``clean``, ``noise`` ``[N, 4, H, W]``,
    ``iso``, ``camera`` ``[N]`` (optional ``nlf [N, 2]``), sliced in order; or an object with ``images`` and
    ``load_image(image)`` (:class:`visionflows.data.sidd.SiddRawDataset`), batched per image (one camera and ISO
    per batch, as the official evaluation); or an iterable of such batch dicts.
    """
    if hasattr(test_set, "load_image") and hasattr(test_set, "images"):
        for image in test_set.images:
            d = test_set.load_image(image)
            n = d["clean"].shape[0]
            for s in range(0, n, batch_size):
                e = min(n, s + batch_size)
                yield {
                    "clean": torch.from_numpy(np.ascontiguousarray(d["clean"][s:e])),
                    "noise": torch.from_numpy(np.ascontiguousarray(d["noise"][s:e])),
                    "iso": torch.full((e - s,), int(d["iso"]), dtype=torch.long),
                    "camera": torch.full((e - s,), int(d["camera"]), dtype=torch.long),
                    "nlf": torch.tensor([list(d["nlf"])] * (e - s), dtype=torch.float64),
                }
        return
    tensors = noise_tensors(test_set, "test set")
    if tensors is not None:
        test_set = tensors
        n = int(test_set["clean"].shape[0])
        for s in range(0, n, batch_size):
            batch = {k: torch.as_tensor(test_set[k][s : s + batch_size]) for k in ("clean", "noise", "iso", "camera")}
            if "nlf" in test_set:
                batch["nlf"] = torch.as_tensor(test_set["nlf"][s : s + batch_size])
            yield batch
        return
    if isinstance(test_set, Iterable):
        yield from test_set
        return
    raise InputError(f"cannot iterate a test set of type {type(test_set).__name__}.",
                     "pass a dict of tensors, a SimulatedSidd or a SiddRawDataset.")


@dataclass
class NoiseEvalResults:
    """Per-patch scores and aggregates of :func:`evaluate_noise_models`.

    ``nll[name]``: nats/dim per patch ``[N]`` (NaN where the model cannot score the patch, e.g. a camera-NLF
    pair missing from the table); ``kl[name]``: per KL patch; ``kl_batch``: the batch of every KL patch.
    ``samples``: a few pooled (real, per-model) noise values per ISO for figures; ``examples``: a few
    (clean, real, samples) patches.
    """

    models: list[str]
    iso: np.ndarray
    camera: np.ndarray
    nll: dict[str, np.ndarray]
    kl_iso: np.ndarray
    kl_camera: np.ndarray
    kl_batch: np.ndarray
    kl: dict[str, np.ndarray]
    values_per_patch: int
    samples: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def _agg(self, mask: np.ndarray, kl_mask: np.ndarray, name: str) -> dict[str, float]:
        nll = self.nll[name][mask]
        ok = np.isfinite(nll)
        out = {"nll": float(nll[ok].mean()) if ok.any() else math.nan, "n_patches": int(ok.sum())}
        kl, batches = self.kl[name][kl_mask], self.kl_batch[kl_mask]
        good = np.isfinite(kl)
        per_batch = [kl[good & (batches == b)].mean() for b in np.unique(batches[good])]
        out["kl"] = float(np.mean(per_batch)) if per_batch else math.nan
        return out

    def summary(self) -> dict[str, Any]:
        """``{"overall": {model: {nll, kl, n_patches}}, "per_camera": {cam: {...}}, "per_iso": {iso: {...}}}``."""
        every = np.ones_like(self.iso, dtype=bool)
        every_kl = np.ones_like(self.kl_iso, dtype=bool)
        out: dict[str, Any] = {
            "overall": {m: self._agg(every, every_kl, m) for m in self.models},
            "per_camera": {},
            "per_iso": {},
            "n_patches": int(self.iso.size),
            "n_kl_patches": int(self.kl_iso.size),
            "n_batches": int(np.unique(self.kl_batch).size),
            "values_per_patch": self.values_per_patch,
        }
        for c in np.unique(self.camera):
            out["per_camera"][CAMERAS[int(c)]] = {
                m: self._agg(self.camera == c, self.kl_camera == c, m) for m in self.models
            }
        for i in np.unique(self.iso):
            out["per_iso"][str(int(i))] = {m: self._agg(self.iso == i, self.kl_iso == i, m) for m in self.models}
        return out


def _model_device(model: torch.nn.Module) -> torch.device:
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), None)
    return ref.device if ref is not None else torch.device("cpu")


def _score(model: Any, fn: str, *args: Any, **kwargs: Any) -> Tensor | None:
    try:
        return getattr(model, fn)(*args, **kwargs)
    except InputError:
        return None


@torch.no_grad()
def evaluate_noise_models(
    models: Mapping[str, Any],
    test_set: Any,
    batch_size: int = 138,
    generator: torch.Generator | None = None,
    kl_every: int = 5,
    max_batches: int | None = None,
    keep_values: int = 200_000,
    n_examples: int = 4,
) -> NoiseEvalResults:
    """Score ``models`` (name → noise model with the common API) on ``test_set`` (see :func:`iter_test_batches`).

    Models are put in eval mode. A :class:`~visionflows.noise.baselines.CameraNLF` uses a batch's per-image
    ``nlf`` (metadata) when present. Patches a model cannot score (InputError, e.g. a missing table pair) get
    NaN and are left out of its aggregates (``n_patches`` says how many were scored).
    """
    from visionflows.noise.baselines import CameraNLF

    if not models:
        raise InputError("no models to evaluate.", "pass at least one model.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for m in models.values():
        m.eval()
    names = list(models)
    nll: dict[str, list[np.ndarray]] = {n: [] for n in names}
    kl: dict[str, list[float]] = {n: [] for n in names}
    isos, cams, kl_iso, kl_cam, kl_batch = [], [], [], [], []
    pooled: dict[int, dict[str, list[np.ndarray]]] = {}
    examples: list[dict[str, Any]] = []
    values_per_patch = 0
    for b, batch in enumerate(iter_test_batches(test_set, batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        clean, noise = batch["clean"].float(), batch["noise"].float()
        iso, cam = batch["iso"].long(), batch["camera"].long()
        values_per_patch = int(noise[0].numel())
        isos.append(iso.numpy())
        cams.append(cam.numpy())
        idx = torch.tensor(kl_patch_indices(clean.shape[0], kl_every))
        kl_iso.append(iso[idx].numpy())
        kl_cam.append(cam[idx].numpy())
        kl_batch.extend([b] * len(idx))
        reals = noise[idx]
        for name in names:
            model = models[name]
            dev = _model_device(model)
            extra = {}
            if isinstance(model, CameraNLF) and "nlf" in batch:
                extra["nlf"] = (batch["nlf"][:, 0].to(dev), batch["nlf"][:, 1].to(dev))
            lp = _score(model, "nll_per_dim", noise.to(dev), clean.to(dev), iso.to(dev), cam.to(dev), **extra)
            nll[name].append(lp.double().cpu().numpy() if lp is not None else np.full(clean.shape[0], np.nan))
            if extra:
                extra = {"nlf": (extra["nlf"][0][idx.to(dev)], extra["nlf"][1][idx.to(dev)])}
            sample = _score(model, "sample", clean[idx].to(dev), iso[idx].to(dev), cam[idx].to(dev),
                            generator=gen, **extra)
            if sample is None:
                kl[name].extend([math.nan] * len(idx))
                continue
            sample = sample.float().cpu()
            kl[name].extend(marginal_kl(r, s) for r, s in zip(reals, sample))
            for j in range(len(idx)):
                key = int(iso[idx[j]])
                slot = pooled.setdefault(key, {})
                got = sum(a.size for a in slot.get(name, []))
                if got < keep_values:
                    slot.setdefault(name, []).append(sample[j].reshape(-1).numpy())
                    if name == names[0]:
                        slot.setdefault("real", []).append(reals[j].reshape(-1).numpy())
        if len(examples) < n_examples and int(iso[0]) not in [ex["iso"] for ex in examples]:
            ex = {"iso": int(iso[0]), "camera": CAMERAS[int(cam[0])], "batch": b, "clean": clean[0].numpy(),
                  "real": noise[0].numpy(), "samples": {}}
            for name in names:
                dev = _model_device(models[name])
                extra = {}
                if isinstance(models[name], CameraNLF) and "nlf" in batch:
                    extra["nlf"] = (batch["nlf"][:1, 0].to(dev), batch["nlf"][:1, 1].to(dev))
                s = _score(models[name], "sample", clean[:1].to(dev), iso[:1].to(dev), cam[:1].to(dev),
                           generator=gen, **extra)
                if s is not None:
                    ex["samples"][name] = s[0].float().cpu().numpy()
            examples.append(ex)
    if not isos:
        raise DataError("the test set yielded no batches.", "check the test data.")
    samples = {k: {n: np.concatenate(v) for n, v in d.items()} for k, d in pooled.items()}
    return NoiseEvalResults(
        models=names,
        iso=np.concatenate(isos),
        camera=np.concatenate(cams),
        nll={n: np.concatenate(v) for n, v in nll.items()},
        kl_iso=np.concatenate(kl_iso),
        kl_camera=np.concatenate(kl_cam),
        kl_batch=np.asarray(kl_batch),
        kl={n: np.asarray(v, dtype=np.float64) for n, v in kl.items()},
        values_per_patch=values_per_patch,
        samples=samples,
        examples=examples,
    )
