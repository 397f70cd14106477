"""Trainer task for the Glow baseline (:class:`~visionflows.glow.Glow`) on images."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.base import check_nchw
from visionflows.glow.model import LN2, Glow, dequantize

__all__ = ["GlowImageTask"]


class GlowImageTask:
    """Trainer task: Glow on random crops (+ optional flips) of uint8 images.

    ``images`` is a uint8 tensor ``[N, C, H, W]`` or an :class:`~visionflows.data.images.ImagePool` (its
    ``eval_images`` are used for evaluation unless ``test_images`` is given).

    ``loss`` is the mean bits/dim of the batch (``per_dim``); ``evaluate`` scores ``test_images`` (centre
    crops) with a fixed dequantisation seed.
    """

    name = "glow"
    unit = "bits/dim"

    def __init__(
        self,
        images: Any,
        resolution: int = 32,
        levels: int = 3,
        steps: int = 8,
        width: int = 128,
        batch_size: int = 16,
        test_images: Tensor | None = None,
        flip: bool = False,
    ) -> None:
        if hasattr(images, "crops"):  # an ImagePool
            self.pool, self.channels = images, images.channels
            test_images = images.eval_images if test_images is None else test_images
        else:
            check_nchw(images, None, "training images")
            if images.shape[2] < resolution or images.shape[3] < resolution:
                raise InputError(f"training images {tuple(images.shape)} are smaller than the crop {resolution}.")
            self.pool, self.channels = None, int(images.shape[1])
        self.images, self.test_images = images, test_images
        self.resolution, self.levels, self.steps, self.width = resolution, levels, steps, width
        self.batch_size, self.flip = batch_size, flip

    def build_model(self) -> Glow:
        return Glow(self.channels, self.resolution, self.levels, self.steps, self.width)

    def config(self) -> dict[str, Any]:
        return dict(resolution=self.resolution, levels=self.levels, steps=self.steps, width=self.width,
                    batch_size=self.batch_size, flip=self.flip, n_images=len(self.images))

    def batch(self, step: int, generator: torch.Generator) -> Tensor:
        if self.pool is not None:
            return dequantize(self.pool.crops(self.batch_size, self.resolution, generator, self.flip), generator)
        n, _, h, w = self.images.shape
        r = self.resolution
        idx = torch.randint(0, n, (self.batch_size,), generator=generator)
        ys = torch.randint(0, h - r + 1, (self.batch_size,), generator=generator)
        xs = torch.randint(0, w - r + 1, (self.batch_size,), generator=generator)
        crops = torch.stack([self.images[i, :, y : y + r, x : x + r] for i, y, x in zip(idx, ys, xs)])
        if self.flip:
            mask = torch.rand(self.batch_size, generator=generator) < 0.5
            crops[mask] = crops[mask].flip(-1)
        return dequantize(crops, generator)

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = batch.to(next(model.parameters()).device)
        bpd = -model(x) / (x[0].numel() * LN2) + 8.0
        loss = bpd.mean()
        return loss, {"per_dim": float(loss.detach())}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.test_images is None:
            return {}
        r = self.resolution
        imgs = self.test_images
        top, left = (imgs.shape[2] - r) // 2, (imgs.shape[3] - r) // 2
        crops = imgs[:, :, top : top + r, left : left + r]
        gen = torch.Generator().manual_seed(1234)
        bpd = torch.cat([model.bits_per_dim(c, gen) for c in crops.split(64)])
        return {"bits_per_dim": float(bpd.mean())}
