"""Training DnCNN denoisers on noise synthesised on the fly by a noise model (Noise Flow paper, §10 of
``docs/noiseflow.md``), with the shared trainer.

Data (clean patches + the conditioning + real noisy partners):

* :class:`SimulatorPatches` — packed raw patches of the built-in camera simulator (``domain="raw"``).
* :class:`SRGBPatches` — random aligned patches of real 8-bit sRGB pairs (``domain="srgb"``).

Noise sources (``make_noise_source``): ``gaussian`` (σ ~ U(0.24186, 11.507)/255 per batch, as the paper, or a
fixed σ), ``nlf`` (raw only: a random ``cam_iso_nlf`` row per batch, var = β1·y + β2), a noise-model file
(any :func:`visionflows.io.load_model` file with ``sample``; conditioned on each patch's camera/ISO, T = 1, eval
BN) and ``real`` (the data's real noisy partners). The noisy input is clipped to [0, 1]; in the sRGB domain it is
also quantised to 8 bits like real images. Deviation: the paper's Noise Flow denoiser mixes 50 % Gaussian
batches in; we use the noise model alone, so each row of the table isolates one noise model.

Loss: ``Σ (pred − clean)² / 2`` per patch (the paper's), averaged over the batch; Adam, lr 1e-3.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.denoise.dncnn import DnCNN
from visionflows.errors import CheckpointError, ConfigError, InputError
from visionflows.io import load_model

__all__ = [
    "GAUSSIAN_SIGMA_RANGE",
    "SimulatorPatches",
    "SRGBPatches",
    "GaussianSource",
    "NLFSource",
    "ModelSource",
    "RealSource",
    "load_noise_model",
    "make_noise_source",
    "load_denoise_data",
    "DenoiseTask",
    "train_denoiser",
]

#: σ range of the paper's Gaussian denoiser, in [0, 1] units (``U(0.24186, 11.507)/255``).
GAUSSIAN_SIGMA_RANGE = (0.24186 / 255.0, 11.507 / 255.0)


# ------------------------------------------------------------------------------------------------ data
class SimulatorPatches:
    """Packed raw patches of a :class:`~visionflows.noise.simulator.SimulatedSidd` set.

    ``sample(n, generator)`` → dict ``clean``/``noisy`` ``[n, 4, p, p]`` float in [0, 1], ``iso`` and ``camera``
    (camera indices) LongTensors ``[n]``.
    """

    domain = "raw"
    channels = 4

    def __init__(self, dataset: Any) -> None:
        if len(dataset) == 0:
            raise ConfigError("the simulated dataset is empty.", "use at least one simulated image.")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, idx: Tensor) -> dict:
        d = self.dataset
        clean = d.clean[idx]
        return {"clean": clean, "noisy": (clean + d.noise[idx]).clamp(0.0, 1.0), "iso": d.iso[idx],
                "camera": d.camera[idx]}

    def sample(self, n: int, generator: torch.Generator) -> dict:
        return self._item(torch.randint(len(self.dataset), (n,), generator=generator))

    def all(self) -> dict:
        return self._item(torch.arange(len(self.dataset)))


class SRGBPatches:
    """Random aligned patches of real 8-bit sRGB pairs (:class:`~visionflows.data.srgb_pairs.SRGBPairs`).

    ``sample`` → dict ``clean``/``noisy`` float ``[n, 3, p, p]`` (8-bit / 255), ``clean_u8``, ``iso`` (0 =
    unknown) and ``camera`` (list of names or None).
    """

    domain = "srgb"
    channels = 3

    def __init__(self, pairs: Any, patch: int = 32) -> None:
        self.pairs, self.patch = pairs, int(patch)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, n: int, generator: torch.Generator) -> dict:
        p = self.pairs.random_patches(n, self.patch, generator)
        return {"clean": p["clean"].float() / 255.0, "noisy": p["noisy"].float() / 255.0, "clean_u8": p["clean"],
                "iso": p["iso"], "camera": p["camera"]}


def load_denoise_data(spec: str = "simulator", patch: int = 32, n_train_images: int = 24, n_test_images: int = 6,
                      seed: int = 0, test_fraction: float = 0.25, on_error: str = "stop") -> tuple[Any, Any]:
    """``(train data, test set)`` for ``spec`` (train data None when ``n_train_images`` is 0): ``"simulator"``
    (train :class:`SimulatorPatches`; test: a scene-disjoint :class:`SimulatedSidd` of 64² packed crops) or a
    folder of sRGB pairs (train :class:`SRGBPatches` and test :class:`SRGBPairs`, split by image; bad pairs
    stop the load or, with ``on_error="skip"``, are left out with a warning: see
    :func:`~visionflows.data.srgb_pairs.load_pairs`)."""
    if spec == "simulator":
        from visionflows.noise.simulator import make_simulated_dataset

        train = make_simulated_dataset(n_train_images, 0, patch=patch, seed=seed)["train"] if n_train_images else None
        if train is not None and len(train) == 0:
            _patch_too_large_for_simulator(patch, n_train_images)
        test = make_simulated_dataset(0, n_test_images, patch=64, patches_per_side=2, seed=seed)["test"]
        return (SimulatorPatches(train) if train is not None else None), test
    from visionflows.data.srgb_pairs import load_pairs

    pairs = load_pairs(spec, on_error=on_error)
    train, test = pairs.split(test_fraction, seed)
    return SRGBPatches(train, patch), test


def _patch_too_large_for_simulator(patch: int, n_images: int) -> None:
    """InputError for a simulated training set left empty by ``patch``: each simulated image is a packed raw crop
    of half a bundled photo's side, and gives no patch when smaller than ``patch``."""
    from visionflows.data.simulated import PHOTOS, TEST_PHOTOS, load_photo

    sides = [min(load_photo(p).shape[:2]) // 2 for p in PHOTOS if p not in TEST_PHOTOS]
    raise InputError(f"none of the {n_images} simulated training image(s) is as large as the patch size {patch} "
                     f"(their packed raw crops are {min(sides)} to {max(sides)} pixels on a side, half the bundled "
                     "photo's), so no training patch fits.",
                     f"use a patch size (--patch) of at most {min(sides)}, which every simulated image has (the "
                     "default is 32).")


# --------------------------------------------------------------------------------------------- sources
def _finish(noisy: Tensor, domain: str) -> Tensor:
    noisy = noisy.clamp(0.0, 1.0)
    return torch.round(noisy * 255.0) / 255.0 if domain == "srgb" else noisy


class GaussianSource:
    """i.i.d. Gaussian noise: fixed ``sigma`` ([0, 1] units), or σ ~ U(``sigma_range``) drawn per batch (the
    default) or, with ``per_patch``, independently for every patch of the batch (a blind denoiser then sees
    every level in every batch)."""

    def __init__(self, sigma: float | None = None, sigma_range: tuple[float, float] = GAUSSIAN_SIGMA_RANGE,
                 domain: str = "raw", per_patch: bool = False) -> None:
        lo, hi = (float(v) for v in sigma_range)
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"invalid Gaussian sigma range {sigma_range}.", "use 0 <= low <= high (in [0, 1] units).")
        self.sigma, self.sigma_range, self.domain, self.per_patch = sigma, (lo, hi), domain, bool(per_patch)
        self.name = "gaussian" if sigma is None else f"gaussian-{sigma * 255:.3g}"

    def noisy(self, batch: dict, generator: torch.Generator) -> Tensor:
        clean = batch["clean"]
        if self.sigma is None:
            lo, hi = self.sigma_range
            shape = (clean.shape[0],) + (1,) * (clean.dim() - 1) if self.per_patch else ()
            sigma = lo + (hi - lo) * torch.rand(shape, generator=generator)
        else:
            sigma = torch.tensor(self.sigma)
        return _finish(clean + sigma.to(clean.dtype) * torch.randn(clean.shape, generator=generator), self.domain)


class NLFSource:
    """Camera NLF noise (raw): a random (camera, ISO) row per batch, ``var = β1·y + β2`` (default: the 15
    official training rows, ``cam_iso_nlf.txt``)."""

    name = "nlf"
    domain = "raw"

    def __init__(self, rows: list[tuple[float, float]] | None = None) -> None:
        from visionflows.cameras import NLF_TABLE, TRAIN_PAIRS

        self.rows = rows if rows is not None else [NLF_TABLE[p] for p in TRAIN_PAIRS]

    def noisy(self, batch: dict, generator: torch.Generator) -> Tensor:
        clean = batch["clean"]
        b1, b2 = self.rows[int(torch.randint(len(self.rows), (), generator=generator))]
        std = torch.sqrt(b1 * clean + b2)
        return _finish(clean + std * torch.randn(clean.shape, generator=generator), self.domain)


class ModelSource:
    """Noise sampled from a noise model (``model.sample(clean, iso, camera, temperature, generator)``) conditioned
    on each patch's camera and ISO; raw: noise in normalised units; sRGB: noise in 8-bit levels."""

    def __init__(self, model: nn.Module, domain: str, temperature: float = 1.0, name: str = "noise-model") -> None:
        self.model = model.eval()
        self.domain, self.temperature, self.name = domain, float(temperature), name

    @torch.no_grad()
    def noisy(self, batch: dict, generator: torch.Generator) -> Tensor:
        clean = batch["clean"]
        noise = self.model.sample(clean, batch["iso"], batch["camera"], self.temperature, generator).cpu().float()
        if self.domain == "srgb":
            from visionflows.noise.srgb import quantize_noisy

            return quantize_noisy(batch.get("clean_u8", clean), noise).float() / 255.0
        return _finish(clean + noise, self.domain)


class RealSource:
    """The data's real noisy partners (no synthesis)."""

    name = "real"

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def noisy(self, batch: dict, generator: torch.Generator) -> Tensor:
        return batch["noisy"]


def load_noise_model(path: str | os.PathLike) -> tuple[nn.Module, str]:
    """Load a noise-model file; returns ``(model, domain)`` with domain ``"raw"`` or ``"srgb"``.

    CheckpointError if the file does not hold a noise model (no ``sample``/``log_prob``, e.g. a denoiser)."""
    model = load_model(path)
    kind = getattr(model, "kind", type(model).__name__)
    if not (hasattr(model, "sample") and hasattr(model, "log_prob")) or isinstance(model, DnCNN):
        raise CheckpointError(f"{path} holds a {kind!r} model, not a noise model.",
                              "pass a noise-model file (Noise Flow, sRGB Noise Flow or a noise baseline).")
    domain = getattr(model, "domain", None) or ("srgb" if str(kind).startswith("srgb") else "raw")
    return model, domain


def make_noise_source(spec: Any, domain: str, sigma: float | None = None, temperature: float = 1.0) -> Any:
    """A noise source for data of ``domain`` from ``spec``: ``gaussian``, ``nlf``, ``real``, a noise-model file
    or an already built source / noise model object. CheckpointError if a model file is for the other domain."""
    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "noisy"):
            return spec
        if hasattr(spec, "sample"):
            mdom = getattr(spec, "domain", "raw")
            if mdom != domain:
                raise ConfigError(f"the noise model is for {mdom} data but the data are {domain}.")
            return ModelSource(spec, domain, temperature, getattr(spec, "kind", "noise-model"))
        raise ConfigError(f"cannot use {type(spec).__name__} as a noise source.")
    s = str(spec)
    if s == "gaussian":
        return GaussianSource(sigma, domain=domain)
    if s == "nlf":
        if domain != "raw":
            raise ConfigError("the camera NLF noise source is for raw data only.",
                              "use --noise gaussian, real or an sRGB noise-model file with sRGB pairs.")
        return NLFSource()
    if s == "real":
        return RealSource(domain)
    if not Path(s).exists():
        raise ConfigError(f"--noise {s!r} is neither gaussian, nlf, real nor an existing noise-model file.",
                          "pass one of gaussian, nlf, real, or the path of a noise-model .safetensors file.")
    model, mdom = load_noise_model(s)
    if mdom != domain:
        raise CheckpointError(f"noise model {s} is for the {mdom} domain but the training data are {domain}.",
                              f"use a {domain} noise model (or {mdom} data).")
    return ModelSource(model, domain, temperature, f"model:{Path(s).name}")


# ------------------------------------------------------------------------------------------------ task
class DenoiseTask:
    """:class:`~visionflows.training.TrainTask` of a DnCNN on ``data`` with noise from ``source``."""

    unit = "mse"

    def __init__(self, data: Any, source: Any, batch_size: int = 32, depth: int = 9, width: int = 32,
                 seed: int = 0) -> None:
        if getattr(source, "domain", data.domain) != data.domain:
            raise ConfigError(f"noise source {source.name!r} is for {source.domain} data but the data are "
                              f"{data.domain}.")
        self.data, self.source = data, source
        self.batch_size, self.depth, self.width, self.seed = int(batch_size), int(depth), int(width), int(seed)
        self.name = f"denoise-{source.name}"

    def build_model(self) -> DnCNN:
        return DnCNN(self.data.channels, self.depth, self.width, self.data.domain, self.seed)

    def config(self) -> dict[str, Any]:
        return {"noise": self.source.name, "domain": self.data.domain, "batch_size": self.batch_size,
                "depth": self.depth, "width": self.width, "loss": "sum((pred-clean)^2)/2 per patch, batch mean"}

    def batch(self, step: int, generator: torch.Generator) -> dict:
        b = self.data.sample(self.batch_size, generator)
        return {"noisy": self.source.noisy(b, generator), "clean": b["clean"]}

    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        dev = next(model.parameters()).device
        noisy, clean = batch["noisy"].to(dev), batch["clean"].to(dev)
        err = model(noisy) - clean
        loss = 0.5 * err.pow(2).sum() / err.shape[0]
        mse = float(err.detach().pow(2).mean())
        return loss, {"per_dim": mse, "psnr": -10.0 * torch.log10(torch.tensor(max(mse, 1e-12))).item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}


def train_denoiser(data: Any, noise: Any, run_dir: str | os.PathLike, steps: int = 1000, batch_size: int = 32,
                   lr: float = 1e-3, depth: int = 9, width: int = 32, seed: int = 0, sigma: float | None = None,
                   temperature: float = 1.0, resume: bool = False, overwrite: bool = False, progress: bool = False,
                   **train_kwargs: Any) -> Any:
    """Train a DnCNN on ``data`` with noise ``noise`` (see :func:`make_noise_source`) into ``run_dir``.

    Returns the trainer's :class:`~visionflows.training.TrainResult` (``.model`` is the trained DnCNN)."""
    from visionflows.training import TrainConfig, train

    source = make_noise_source(noise, data.domain, sigma, temperature)
    task = DenoiseTask(data, source, batch_size, depth, width, seed)
    train_kwargs.setdefault("tensorboard", False)
    train_kwargs.setdefault("checkpoint_every", max(1, steps))
    train_kwargs.setdefault("log_every", max(1, steps // 20))
    train_kwargs.setdefault("device", "cpu")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, **train_kwargs)
    return train(task, cfg, run_dir, resume=resume, overwrite=overwrite)
