"""Training the sRGB Noise Flow on real pairs with the shared trainer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import ConfigError
from visionflows.noise.srgb.context import dequantize_noise
from visionflows.noise.srgb.layers import NORMS
from visionflows.noise.srgb.metrics import nll_per_dim
from visionflows.noise.srgb.model import DEFAULT_ARCH, SRGBNoiseFlow

__all__ = ["SRGBNoiseTask", "fit_srgb_noise_flow"]


class SRGBNoiseTask:
    """:class:`~visionflows.training.TrainTask` fitting :class:`SRGBNoiseFlow` on random patches of 8-bit pairs.

    Loss: NLL in nats/dim of the dequantised noise (fresh ``u`` per batch). ``evaluate``: NLL/dim on ``test``
    grid patches (at most ``eval_patches``), if given.

    ``unknown_prob``: each patch's camera (and, independently, its ISO) is replaced by "unknown" with this
    probability, so the unknown entries learn the pooled noise of the training cameras (what a camera the model
    never saw gets); 0 = the paper's training (unknown entries only learn from patches of unknown camera/ISO).
    ``norm``: normalisation of the coupling networks (see :class:`SRGBNoiseFlow`).
    """

    name = "srgb-noiseflow"
    unit = "nats/dim"

    def __init__(self, train: Any, batch_size: int = 32, patch: int = 32, test: Any = None,
                 eval_patches: int = 256, arch: str = DEFAULT_ARCH, width: int = 4, seed: int = 0,
                 norm: str = "batch", unknown_prob: float = 0.0) -> None:
        if not 0.0 <= float(unknown_prob) < 1.0:
            raise ConfigError(f"unknown_prob must be in [0, 1), got {unknown_prob}.", "use e.g. 0.2.")
        if norm not in NORMS:
            raise ConfigError(f"unknown coupling-network norm {norm!r}.", f"use one of {', '.join(NORMS)}.")
        self.norm, self.unknown_prob = norm, float(unknown_prob)
        self.train_pairs, self.test_pairs = train, test
        self.batch_size, self.patch, self.eval_patches = int(batch_size), int(patch), int(eval_patches)
        self.arch, self.width, self.seed = arch, int(width), int(seed)
        gen = torch.Generator().manual_seed(12345)
        probe = train.random_patches(512, patch, gen)
        self.noise_std = float(dequantize_noise(probe["noisy"], probe["clean"], gen).std())
        self.cameras, self.isos = train.vocab()
        self._eval = test.grid_patches(patch, eval_patches, seed) if test is not None else None

    def build_model(self) -> SRGBNoiseFlow:
        return SRGBNoiseFlow(self.arch, self.width, self.cameras, self.isos, self.noise_std, self.seed, self.norm)

    def config(self) -> dict[str, Any]:
        return {"data": getattr(self.train_pairs, "root", ""), "train_images": list(self.train_pairs.names),
                "batch_size": self.batch_size, "patch": self.patch, "arch": self.arch, "width": self.width,
                "noise_std": self.noise_std, "cameras": self.cameras, "isos": self.isos, "norm": self.norm,
                "unknown_prob": self.unknown_prob}

    def batch(self, step: int, generator: torch.Generator) -> dict:
        p = self.train_pairs.random_patches(self.batch_size, self.patch, generator)
        p["noise"] = dequantize_noise(p["noisy"], p["clean"], generator)
        if self.unknown_prob > 0:
            drop_cam, drop_iso = (torch.rand(2, len(p["camera"]), generator=generator) < self.unknown_prob).tolist()
            p["camera"] = [None if d else c for c, d in zip(p["camera"], drop_cam)]
            p["iso"] = torch.where(torch.tensor(drop_iso), torch.zeros_like(p["iso"]), p["iso"])
        return p

    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        nll = model.nll_per_dim(batch["noise"], batch["clean"], batch["iso"], batch["camera"]).mean()
        return nll, {"per_dim": float(nll.detach())}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self._eval is None:
            return {}
        return {"test_nll_per_dim": nll_per_dim(model, self._eval, self.seed)}


def fit_srgb_noise_flow(train: Any, run_dir: Any, steps: int = 1000, batch_size: int = 32, patch: int = 32,
                        lr: float = 1e-3, test: Any = None, seed: int = 0, width: int = 4, progress: bool = False,
                        resume: bool = False, overwrite: bool = False, norm: str = "batch", unknown_prob: float = 0.0,
                        arch: str = DEFAULT_ARCH, **train_kwargs: Any) -> SRGBNoiseFlow:
    """Train an :class:`SRGBNoiseFlow` on ``train`` (:class:`~visionflows.data.srgb_pairs.SRGBPairs`) with the
    shared trainer into ``run_dir``; returns the trained model in eval mode."""
    from visionflows.training import TrainConfig
    from visionflows.training import train as run_train

    task = SRGBNoiseTask(train, batch_size, patch, test, arch=arch, width=width, seed=seed, norm=norm,
                         unknown_prob=unknown_prob)
    train_kwargs = {"tensorboard": False, "checkpoint_every": max(steps, 1), "log_every": max(1, steps // 20),
                    "device": "cpu", **train_kwargs}
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, **train_kwargs)
    return run_train(task, cfg, run_dir, resume=resume, overwrite=overwrite).model.eval()
