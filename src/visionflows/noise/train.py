"""Training Noise Flow on the shared trainer: :class:`NoiseFlowTask` (a :class:`~visionflows.training.TrainTask`).

Loss = mean NLL per patch divided by the values per patch, so the reported ``per_dim`` is nats/dim (the paper's
unit; dividing by 4096 only rescales gradients). Paper settings (reference ``noiseflow.md`` §4): Adam, lr 1e-4
constant, batches of 138 patches of 32×32 from one image. The CLI's fast CPU default uses lr 1e-3.

Data: a dict of tensors / :class:`~visionflows.noise.simulator.SimulatedSidd` (``clean``, ``noise``
``[N, 4, p, p]``, ``iso``, ``camera`` ``[N]``): each batch draws ``batch_size`` random patches. Or a
:class:`~visionflows.data.sidd.SiddRawDataset`: each batch is ``batch_size`` random patches of **one** image
(one camera and ISO per batch, as the official code); images are read through a small cache that changes every
``image_window`` steps, so a step never reads more than one new image file.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionflows.errors import ConfigError, DataError
from visionflows.noise.metrics import iter_test_batches, noise_tensors
from visionflows.noise.model import PARAM_PRESETS, PRESETS, NoiseFlow, create_model

__all__ = ["NoiseFlowTask"]


def _as_tensors(data: Any) -> dict[str, Tensor] | None:
    t = noise_tensors(data, "training set")
    if t is None:
        return None
    keys = ("clean", "noise", "iso", "camera") + (("nlf",) if t.get("nlf") is not None else ())
    return {k: torch.as_tensor(t[k]) for k in keys}


def moment_init_signal_layer(model: NoiseFlow, noise: Tensor, clean: Tensor, iso: Tensor) -> bool:
    """Data-dependent initialisation of the signal-dependent layer (a visionflows addition; ``init="data"``).

    Fits ``E[n² | y, ISO] = a_ISO·y + b`` by least squares on the given patches and sets ``β2``, ``gain_params``
    so that ``s(y)² = a_ISO·y + b`` (with ``cam_params`` left at 1, ``β1`` at its official −5). The rest of the
    flow is (near) identity at initialisation — orthogonal 1x1 convs, zero-initialised couplings, gain 1 — so
    training starts from a heteroscedastic Gaussian instead of the official init's σ ≈ 1 (which takes thousands
    of steps to shrink). ISOs absent from the data take the fitted ``a`` of the nearest present ISO (in log ISO).
    Returns False (model unchanged) when the architecture has no signal-dependent layer.
    """
    from visionflows.noise.layers import SignalDependentLayer

    sdn = next((m for m in model.modules() if isinstance(m, SignalDependentLayer)), None)
    if sdn is None:
        return False
    y = clean.detach().double().reshape(clean.shape[0], -1)
    n2 = noise.detach().double().reshape(noise.shape[0], -1) ** 2
    isos = sdn.isos.tolist()
    present = [k for k, v in enumerate(isos) if bool((iso == v).any())]
    if not present:
        return False
    cols = [torch.where((iso == isos[k])[:, None], y, torch.zeros_like(y)).reshape(-1) for k in present]
    design = torch.stack([*cols, torch.ones_like(y).reshape(-1)], dim=1)
    coef = torch.linalg.lstsq(design, n2.reshape(-1, 1)).solution.flatten()
    slopes = {k: max(float(c), 1e-8) for k, c in zip(present, coef[:-1])}
    b = max(float(coef[-1]), 1e-9)
    log_iso = torch.tensor(isos, dtype=torch.float64).log()
    psi = math.e if sdn.camera_params else 1.0
    with torch.no_grad():
        sdn.beta2.fill_(math.log(b) / psi)
        log_b1 = float(sdn.beta1) * psi
        for k, v in enumerate(isos):
            near = min(present, key=lambda j: abs(float(log_iso[j] - log_iso[k])))
            a = slopes[k] if k in slopes else slopes[near]
            sdn.gain_params[k] = (log_b1 - math.log(a) - math.log(v)) / psi
    return True


class NoiseFlowTask:
    """Train a Noise Flow preset on simulated or SIDD patches.

    Args:
        train_data: tensors dict / SimulatedSidd, or a SiddRawDataset (see module docstring).
        test_data: same kinds, for :meth:`evaluate` (test NLL in nats/dim); ``None`` to skip.
        preset: a :data:`~visionflows.noise.model.PRESETS` name.
        batch_size: patches per batch (138 in the paper).
        eval_batches: at most this many test batches of ``eval_batch_size`` in :meth:`evaluate` (None: all).
        continuous_iso, width, seed: passed to :class:`NoiseFlow`.
        init: ``"data"`` (default): moment-match the signal-dependent layer to the training noise first
            (:func:`moment_init_signal_layer`); ``"official"``: the official initial values only.
        camera_names: the cameras of the data (default: the five SIDD phones): a zoo set
            (:func:`~visionflows.data.simulated.make_zoo_dataset`) has its own; the model gets one camera column
            per name. Data with measured noise parameters (``nlf``) pass them to every batch, which the
            measured-parameter preset ``noiseflow_nlf`` needs.
    """

    name = "noiseflow"
    unit = "nats/dim"

    def __init__(
        self,
        train_data: Any,
        test_data: Any = None,
        preset: str = "noiseflow",
        batch_size: int = 138,
        eval_batches: int | None = 50,
        eval_batch_size: int = 138,
        width: int = 4,
        continuous_iso: bool = False,
        seed: int = 0,
        image_window: int = 100,
        cache_images: int = 4,
        data_description: str = "",
        init: str = "data",
        camera_names: tuple[str, ...] | None = None,
    ) -> None:
        if init not in ("data", "official"):
            raise ConfigError(f"unknown Noise Flow init {init!r}.", "use 'data' or 'official'.")
        self.init = init
        if preset not in PRESETS and preset not in PARAM_PRESETS:
            raise ConfigError(f"unknown Noise Flow preset {preset!r}.",
                              f"choose one of {', '.join([*PRESETS, *PARAM_PRESETS])}.")
        self.camera_names = None if camera_names is None else tuple(camera_names)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.preset = preset
        self.batch_size = int(batch_size)
        self.eval_batches = eval_batches
        self.eval_batch_size = int(eval_batch_size)
        self.width = int(width)
        self.continuous_iso = bool(continuous_iso)
        self.seed = int(seed)
        self.image_window = int(image_window)
        self.cache_images = int(cache_images)
        self.data_description = data_description
        self.train_tensors = _as_tensors(train_data)
        self.train_images = None if self.train_tensors is not None else train_data
        if self.train_images is not None and not (hasattr(train_data, "images") and hasattr(train_data, "load_image")):
            raise DataError(f"cannot train on data of type {type(train_data).__name__}.",
                            "pass a dict of tensors, a SimulatedSidd or a SiddRawDataset.")
        self.test_data = test_data
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()

    # -- TrainTask ------------------------------------------------------------------------------------
    def build_model(self) -> NoiseFlow:
        extra: dict[str, Any] = {}
        if self.camera_names is not None and self.preset not in PARAM_PRESETS:
            extra = {"num_cameras": len(self.camera_names), "camera_names": self.camera_names}
        model = create_model(self.preset, width=self.width, continuous_iso=self.continuous_iso, seed=self.seed,
                             **extra)
        if self.init == "data":
            sample = self.batch(0, torch.Generator().manual_seed(self.seed))
            if self.train_tensors is not None:  # use (up to) 4096 patches for a stable fit
                t = self.train_tensors
                n = min(4096, t["clean"].shape[0])
                sample = {k: v[:n] for k, v in t.items()}
            moment_init_signal_layer(model, sample["noise"], sample["clean"], sample["iso"])
        return model

    def config(self) -> dict[str, Any]:
        n = int(self.train_tensors["clean"].shape[0]) if self.train_tensors is not None else None
        return {
            "preset": self.preset,
            "arch": (PRESETS.get(self.preset) or PARAM_PRESETS[self.preset])[0],
            "batch_size": self.batch_size,
            "width": self.width,
            "continuous_iso": self.continuous_iso,
            "seed": self.seed,
            "train_patches": n,
            "train_images": None if self.train_images is None else len(self.train_images.images),
            "data": self.data_description,
            "init": self.init,
        }

    def _image(self, idx: int) -> dict[str, Any]:
        if idx in self._cache:
            self._cache.move_to_end(idx)
            return self._cache[idx]
        data = self.train_images.load_image(self.train_images.images[idx])
        self._cache[idx] = data
        while len(self._cache) > self.cache_images:
            self._cache.popitem(last=False)
        return data

    def batch(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``{noise, clean [B,4,p,p], iso, camera [B]}``, deterministic given ``generator`` (and ``step``)."""
        if self.train_tensors is not None:
            t = self.train_tensors
            idx = torch.randint(0, t["clean"].shape[0], (self.batch_size,), generator=generator)
            return {k: v[idx] for k, v in t.items()}
        n_images = len(self.train_images.images)
        window = np.random.default_rng([self.seed, max(step, 0) // max(1, self.image_window)])
        pool = window.choice(n_images, size=min(self.cache_images, n_images), replace=False)
        img = int(pool[int(torch.randint(0, len(pool), (1,), generator=generator))])
        d = self._image(img)
        n = d["clean"].shape[0]
        pick = torch.randint(0, n, (self.batch_size,), generator=generator).numpy()
        return {
            "clean": torch.from_numpy(np.ascontiguousarray(d["clean"][pick])),
            "noise": torch.from_numpy(np.ascontiguousarray(d["noise"][pick])),
            "iso": torch.full((self.batch_size,), int(d["iso"]), dtype=torch.long),
            "camera": torch.full((self.batch_size,), int(d["camera"]), dtype=torch.long),
        }

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Mean NLL per patch / values per patch (nats/dim)."""
        ref = next(model.parameters())
        noise = batch["noise"].to(ref.device, ref.dtype)
        clean = batch["clean"].to(ref.device, ref.dtype)
        extra = {"nlf": batch["nlf"].to(ref.device)} if "nlf" in batch else {}
        lp = model(noise, clean, batch["iso"].to(ref.device), batch["camera"].to(ref.device), **extra)
        loss = -lp.float().mean() / noise[0].numel()
        return loss, {"per_dim": float(loss.detach())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test NLL in nats/dim (eval-mode BN) over at most ``eval_batches`` batches; ``{}`` without test data."""
        if self.test_data is None:
            return {}
        was_training = model.training
        model.eval()
        ref = next(model.parameters())
        total, count = 0.0, 0
        try:
            for b, batch in enumerate(iter_test_batches(self.test_data, self.eval_batch_size)):
                if self.eval_batches is not None and b >= self.eval_batches:
                    break
                noise = batch["noise"].to(ref.device, ref.dtype)
                extra = {"nlf": batch["nlf"].to(ref.device)} if "nlf" in batch else {}
                lp = model(noise, batch["clean"].to(ref.device, ref.dtype), batch["iso"].to(ref.device),
                           batch["camera"].to(ref.device), **extra)
                total += float((-lp.double() / noise[0].numel()).sum())
                count += int(noise.shape[0])
        finally:
            model.train(was_training)
        return {"test_nll": total / max(count, 1), "test_patches": float(count)}
