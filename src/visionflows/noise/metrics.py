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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "uses_measured_params",
    "camera_map",
    "unknown_cameras",
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
    """Forward KL between the value histograms of one real and one sampled noise patch (empty bins dropped).

    :class:`InputError` for an empty or non-finite input (NaN values would fall outside every bin and leave a
    histogram that does not sum to 1: a silently wrong KL)."""
    for name, values in (("real", real), ("model", model)):
        v = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, np.float64)
        if v.size == 0:
            raise InputError(f"marginal_kl: the {name} noise is empty.", "pass non-empty noise patches.")
        if not np.isfinite(v).all():
            raise InputError(f"marginal_kl: the {name} noise contains {int((~np.isfinite(v)).sum())} NaN/Inf "
                             "value(s).", "clean the data, or check the model that sampled it.")
    p, q = histogram_pmf(real, edges), histogram_pmf(model, edges)
    m = (p > 0) & (q > 0)
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _kl_or_nan(real: Tensor, sample: Tensor | None) -> float:
    """:func:`marginal_kl`, NaN where the model could not sample the patch or either patch is not finite."""
    if sample is None or not (bool(torch.isfinite(sample).all()) and bool(torch.isfinite(real).all())):
        return math.nan
    return marginal_kl(real, sample)


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
    """Minibatches ``{noise, clean, iso [B], camera [B], (nlf [B, 2] or [B, 4, 2])}`` of a test set.

    ``test_set``: a mapping (or an object with ``.tensors()``) of tensors ``clean``, ``noise`` ``[N, 4, H, W]``,
    ``iso``, ``camera`` ``[N]`` (optional ``nlf [N, 2]``, or per channel ``[N, 4, 2]``), sliced in order; or an
    object with ``images`` and ``load_image(image)`` (:class:`visionflows.data.sidd.SiddRawDataset`), batched per
    image (one camera and ISO per batch, as the official evaluation); or an iterable of such batch dicts.
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
    (clean, real, samples) patches. ``camera_names``: the names of the ``camera`` indices (a camera-zoo set's own
    cameras; ``None``: the SIDD phones IP, GP, S6, N6, G4).
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
    camera_names: tuple[str, ...] | None = None

    def camera_label(self, index: int) -> str:
        """The name of camera ``index`` (a SIDD code, or a zoo camera's name)."""
        return _camera_label(index, self.camera_names)

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
            out["per_camera"][self.camera_label(int(c))] = {
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


def _camera_label(index: int, names: tuple[str, ...] | None) -> str:
    if names is not None:
        return names[index] if 0 <= index < len(names) else f"camera {index}"
    return CAMERAS[index] if 0 <= index < len(CAMERAS) else f"camera {index}"


def _score(model: Any, fn: str, *args: Any, **kwargs: Any) -> Tensor | None:
    try:
        return getattr(model, fn)(*args, **kwargs)
    except InputError:
        return None


def uses_measured_params(model: Any) -> bool:
    """Whether ``model`` takes each patch's measured noise parameters (``nlf``): the camera NLF and the
    parameter-conditioned Noise Flow (``noiseflow_nlf``)."""
    return bool(getattr(model, "uses_measured_params", False) or getattr(model, "uses_metadata_nlf", False))


def camera_map(model: Any, camera_names: Sequence[str] | None) -> Tensor | None:
    """``[len(camera_names)]`` LongTensor: the index of each test camera among ``model.camera_names`` (−1: the
    model has no such camera), or ``None`` when no mapping is needed (a SIDD test set, or a model that does not
    index cameras by name: baselines fitted on the same set, measured-parameter models)."""
    names = getattr(model, "camera_names", None)
    if camera_names is None or names is None or getattr(model, "num_cameras", None) is None:
        return None
    own = {str(n).strip().lower(): i for i, n in enumerate(names)}
    return torch.tensor([own.get(str(n).strip().lower(), -1) for n in camera_names], dtype=torch.long)


def unknown_cameras(models: Mapping[str, Any], camera_names: Sequence[str] | None) -> dict[str, list[str]]:
    """``{model name: [test cameras it has no column for]}`` for the models that index cameras by name."""
    out = {}
    for name, model in models.items():
        m = camera_map(model, camera_names)
        if m is not None and bool((m < 0).any()):
            out[name] = [str(camera_names[i]) for i in (m < 0).nonzero().flatten().tolist()]  # type: ignore[index]
    return out


class _Scorer:
    """One model on one batch: the model's camera indices (mapped by name), measured parameters when it takes
    them, and the patches it can score (those of cameras it knows)."""

    def __init__(self, model: Any, batch: dict[str, Tensor], mapping: Tensor | None) -> None:
        self.model, self.dev = model, _model_device(model)
        cam = batch["camera"].long()
        if mapping is not None:  # test-set index -> the model's own (−1: unknown to the model)
            ok = (cam >= 0) & (cam < len(mapping))
            cam = torch.where(ok, mapping[cam.clamp(0, max(len(mapping) - 1, 0))], torch.full_like(cam, -1))
        self.cam = cam
        self.known = self.cam >= 0
        self.nlf = batch.get("nlf") if uses_measured_params(model) else None
        self.clean, self.iso = batch["clean"].float(), batch["iso"].long()

    def _args(self, sub: Tensor) -> tuple[tuple[Tensor, ...], dict[str, Any]]:
        extra = {"nlf": self.nlf[sub].to(self.dev)} if self.nlf is not None else {}
        return (self.clean[sub].to(self.dev), self.iso[sub].to(self.dev), self.cam[sub].to(self.dev)), extra

    def nll(self, noise: Tensor) -> np.ndarray:
        """``[B]`` nats/dim (NaN where the model cannot score a patch)."""
        out = np.full(noise.shape[0], np.nan)
        sub = self.known.nonzero().flatten()
        if len(sub):
            args, extra = self._args(sub)
            lp = _score(self.model, "nll_per_dim", noise[sub].to(self.dev), *args, **extra)
            if lp is not None:
                out[sub.numpy()] = lp.double().cpu().numpy()
        return out

    def sample(self, idx: Tensor, gen: torch.Generator) -> list[Tensor | None]:
        """One T = 1 sample per patch of ``idx`` (``None`` where the model cannot sample it)."""
        out: list[Tensor | None] = [None] * len(idx)
        keep = [j for j in range(len(idx)) if bool(self.known[idx[j]])]
        if keep:
            args, extra = self._args(idx[keep])
            s = _score(self.model, "sample", *args, generator=gen, **extra)
            if s is not None:
                for j, v in zip(keep, s.float().cpu()):
                    out[j] = v
        return out


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
    camera_names: Sequence[str] | None = None,
) -> NoiseEvalResults:
    """Score ``models`` (name → noise model with the common API) on ``test_set`` (see :func:`iter_test_batches`).

    Models are put in eval mode. Models that take measured noise parameters (the camera NLF, ``noiseflow_nlf``)
    get each batch's ``nlf`` (SIDD metadata ``[B, 2]``, a zoo set's mapped profiles ``[B, 4, 2]``) when it has
    one. ``camera_names`` (default: ``test_set.camera_names``, e.g. of a camera-zoo set) names the test set's
    camera indices; a Noise Flow with named cameras (trained on zoo cameras, or adapted) is then given its own
    index of each camera, and patches of cameras it does not know are left to it unscored. Patches a model
    cannot score (InputError, e.g. a missing table pair) get NaN and are left out of its aggregates
    (``n_patches`` says how many were scored).
    """
    if not models:
        raise InputError("no models to evaluate.", "pass at least one model.")
    for name, m in models.items():
        if not (callable(getattr(m, "nll_per_dim", None)) and callable(getattr(m, "sample", None))):
            raise InputError(f"model {name!r} ({type(m).__name__}) is not a raw noise model (it has no nll_per_dim "
                             "and sample).", "pass Noise Flow or a raw noise baseline (visionflows.noise), e.g. "
                             "visionflows.create_model('gaussian_noise').")
    if camera_names is None:
        camera_names = getattr(test_set, "camera_names", None)
    cam_names = tuple(str(n) for n in camera_names) if camera_names is not None else None
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for m in models.values():
        m.eval()
    names = list(models)
    maps = {n: camera_map(models[n], cam_names) for n in names}
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
        scorers = {n: _Scorer(models[n], batch, maps[n]) for n in names}
        for name in names:
            sc = scorers[name]
            nll[name].append(sc.nll(noise))
            samples = sc.sample(idx, gen)
            kl[name].extend(_kl_or_nan(r, s) for r, s in zip(reals, samples))
            for j, sample in enumerate(samples):
                if sample is None:
                    continue
                slot = pooled.setdefault(int(iso[idx[j]]), {})
                if sum(a.size for a in slot.get(name, [])) < keep_values:
                    slot.setdefault(name, []).append(sample.reshape(-1).numpy())
                    if name == names[0]:
                        slot.setdefault("real", []).append(reals[j].reshape(-1).numpy())
        if len(examples) < n_examples and int(iso[0]) not in [ex["iso"] for ex in examples]:
            ex = {"iso": int(iso[0]), "camera": _camera_label(int(cam[0]), cam_names), "batch": b,
                  "clean": clean[0].numpy(), "real": noise[0].numpy(), "samples": {}}
            for name in names:
                s = scorers[name].sample(torch.tensor([0]), gen)[0]
                if s is not None:
                    ex["samples"][name] = s.numpy()
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
        camera_names=cam_names,
    )
