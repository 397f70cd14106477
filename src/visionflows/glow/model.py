"""Glow (Kingma & Dhariwal, NeurIPS 2018): a multi-scale flow on images, the baseline Wavelet Flow is compared to.

Each of ``levels`` scales squeezes (2x2 space-to-depth), runs ``steps`` Glow steps (ActNorm → LU 1x1 conv →
affine coupling), and — except the last — factors out half of the channels to the prior. Factored-out parts get a
learned per-channel Gaussian (a simplification of Glow's conditional split prior, stated here on purpose).
Images are uint8 (or float in [0, 255]), dequantised as ``x = (k + u)/256 − 0.5``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.actnorm import ActNorm
from visionflows.flows.base import Bijector, Compose, check_finite, check_nchw
from visionflows.flows.conv1x1 import LUInvertibleConv1x1
from visionflows.flows.coupling import AffineCoupling, conv_net_factory
from visionflows.flows.priors import DiagonalGaussian
from visionflows.flows.reshape import Squeeze
from visionflows.io import register_model_kind

__all__ = ["Glow", "glow_step", "dequantize"]

LN2 = math.log(2.0)


def glow_step(channels: int, width: int, context_channels: int = 0) -> Compose:
    """ActNorm → LU 1x1 conv → affine coupling (bounded log-scale, zero-initialised output)."""
    return Compose(
        ActNorm(channels),
        LUInvertibleConv1x1(channels),
        AffineCoupling(channels, conv_net_factory(width), context_channels=context_channels),
    )


def dequantize(images: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
    """uint8 (or float in [0, 255]) → ``(k + u)/256 − 0.5`` with ``u ~ U[0, 1)`` (``u = 0.5`` if not ``noise``)."""
    k = images.to(torch.float32)
    if noise:
        u = torch.rand(k.shape, generator=generator, dtype=k.dtype).to(k.device)
    else:
        u = torch.full_like(k, 0.5)
    return (k + u) / 256.0 - 0.5


class _GlowTransform(Bijector):
    """The invertible part of :class:`Glow`; its latent is the concatenation of every scale's flattened output."""

    def __init__(self, channels: int, resolution: int, levels: int, steps: int, width: int) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int]] = []
        self.blocks = nn.ModuleList()
        c, r = channels, resolution
        for level in range(levels):
            c, r = c * 4, r // 2
            self.blocks.append(Compose(Squeeze(), *[glow_step(c, width) for _ in range(steps)]))
            if level < levels - 1:
                self.shapes.append((c // 2, r, r))
                c //= 2
            else:
                self.shapes.append((c, r, r))

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        zs, logdet = [], x.new_zeros(x.shape[0])
        h = x
        for i, block in enumerate(self.blocks):
            h, ld = block(h)
            logdet = logdet + ld
            if i < len(self.blocks) - 1:
                half = h.shape[1] // 2
                zs.append(h[:, :half].reshape(h.shape[0], -1))
                h = h[:, half:]
        zs.append(h.reshape(h.shape[0], -1))
        return torch.cat(zs, dim=1), logdet

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        parts = list(torch.split(z, sizes, dim=1))
        b = z.shape[0]
        h = parts[-1].reshape(b, *self.shapes[-1])
        logdet = z.new_zeros(b)
        for i in reversed(range(len(self.blocks))):
            if i < len(self.blocks) - 1:
                h = torch.cat([parts[i].reshape(b, *self.shapes[i]), h], dim=1)
            h, ld = self.blocks[i].inverse(h)
            logdet = logdet + ld
        return h, logdet


class Glow(nn.Module):
    """Multi-scale Glow on ``[B, channels, resolution, resolution]`` uint8 images."""

    kind = "glow"

    def __init__(self, channels: int = 3, resolution: int = 32, levels: int = 3, steps: int = 8, width: int = 128):
        super().__init__()
        if resolution % (2**levels):
            raise InputError(f"Glow resolution {resolution} is not divisible by 2^levels = {2**levels}.")
        self.channels, self.resolution, self.levels, self.steps, self.width = channels, resolution, levels, steps, width
        self.transform = _GlowTransform(channels, resolution, levels, steps, width)
        self.priors = nn.ModuleList(DiagonalGaussian(s[0]) for s in self.transform.shapes)

    def model_config(self) -> dict[str, int]:
        return dict(channels=self.channels, resolution=self.resolution, levels=self.levels, steps=self.steps,
                    width=self.width)

    def _check(self, images: Tensor) -> None:
        check_nchw(images, self.channels, "images")
        if images.shape[2] != self.resolution or images.shape[3] != self.resolution:
            raise InputError(
                f"images are {images.shape[2]}x{images.shape[3]}; this Glow models "
                f"{self.resolution}x{self.resolution}.",
                "crop or resize the images to the model's resolution.",
            )
        check_finite(images, "images")

    def log_prob_continuous(self, x: Tensor) -> Tensor:
        """Log-density (nats) of already dequantised inputs ``x`` in ``[−0.5, 0.5)``, ``[B]``."""
        z, logdet = self.transform(x)
        sizes = [math.prod(s) for s in self.transform.shapes]
        lp = logdet
        for part, shape, prior in zip(torch.split(z, sizes, dim=1), self.transform.shapes, self.priors):
            lp = lp + prior.log_prob(part.reshape(z.shape[0], *shape))
        return lp

    def log_prob(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Log-density (nats) of the dequantised images in units ``x/256 − 0.5`` (bits/dim = −lp/(N ln2) + 8)."""
        self._check(images)
        return self.log_prob_continuous(dequantize(images, generator).to(images.device))

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob_continuous(x)

    def bits_per_dim(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = images[0].numel()
        return -self.log_prob(images, generator) / (n * LN2) + 8.0

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples as floats in [0, 255]."""
        dev = next(self.parameters()).device
        shapes = self.transform.shapes
        parts = [prior.sample((n, *s), temperature, generator, dev) for prior, s in zip(self.priors, shapes)]
        z = torch.cat([p.reshape(n, -1) for p in parts], dim=1)
        x, _ = self.transform.inverse(z)
        return ((x + 0.5) * 256.0).clamp(0, 255)


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


@register_model_kind("glow")
def _build_glow(config: dict[str, Any]) -> Glow:
    return Glow(**config)
