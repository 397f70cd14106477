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
from visionflows.flows.base import Bijector, Compose
from visionflows.flows.conv1x1 import LUInvertibleConv1x1
from visionflows.flows.coupling import AffineCoupling, conv_net_factory
from visionflows.flows.model import FlowModel, check_image_batch
from visionflows.flows.pixels import check_pixels, dequantize, to_pixels
from visionflows.flows.priors import DiagonalGaussian, FactoredPrior
from visionflows.flows.reshape import Squeeze
from visionflows.registry import HarnessSpec, register_model

__all__ = ["Glow", "GlowTransform", "glow_step", "dequantize", "to_pixels"]

LN2 = math.log(2.0)


def glow_step(channels: int, width: int, context_channels: int = 0) -> Compose:
    """ActNorm → LU 1x1 conv → affine coupling (bounded log-scale, zero-initialised output)."""
    return Compose(
        ActNorm(channels),
        LUInvertibleConv1x1(channels),
        AffineCoupling(channels, conv_net_factory(width), context_channels=context_channels),
    )


class GlowTransform(Bijector):
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


class Glow(FlowModel):
    """Multi-scale Glow on ``[B, channels, resolution, resolution]`` images (uint8, or float pixels in [0, 255]).

    A :class:`~visionflows.flows.FlowModel`: ``log_prob(images, generator=...)`` dequantises (``preprocess``) and
    scores in units ``x/256 − 0.5``; ``encode``/``decode`` act on those continuous units; ``sample(n)`` returns
    float pixels. ``forward(x)`` (the training objective) takes already dequantised ``x``.
    """

    kind = "glow"
    conditional = False

    def __init__(self, channels: int = 3, resolution: int = 32, levels: int = 3, steps: int = 8, width: int = 128):
        if isinstance(levels, int) and levels < 1:
            raise InputError(f"Glow needs at least 1 level, got {levels}.", "use --levels 1 or more.")
        for name, v, low in (("channels", channels, 1), ("resolution", resolution, 2), ("levels", levels, 1),
                             ("steps", steps, 0), ("width", width, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"Glow {name} must be an integer ≥ {low}, got {v!r}.",
                                 f"pass {name} as an int ≥ {low}.")
        if resolution % (2**levels):
            raise InputError(f"Glow resolution {resolution} is not divisible by 2^levels = {2**levels}.",
                             f"use a resolution that is a multiple of {2**levels}, or fewer levels.")
        transform = GlowTransform(channels, resolution, levels, steps, width)
        priors = nn.ModuleList(DiagonalGaussian(s[0]) for s in transform.shapes)
        super().__init__(transform, FactoredPrior(transform.shapes, list(priors), register=False))
        self.priors = priors  # state-dict keys priors.{i}.loc / log_scale (as in earlier files)
        self.channels, self.resolution, self.levels, self.steps, self.width = channels, resolution, levels, steps, width

    def model_config(self) -> dict[str, int]:
        return dict(channels=self.channels, resolution=self.resolution, levels=self.levels, steps=self.steps,
                    width=self.width)

    def _check(self, images: Tensor) -> None:
        """Pixels ``[B, C, R, R]``: uint8, other integers or floats with values in [0, 255] (finite)."""
        if isinstance(images, Tensor) and images.dim() == 4 and images.shape[1] == self.channels and \
                (images.shape[2] != self.resolution or images.shape[3] != self.resolution):
            raise InputError(
                f"images are {images.shape[2]}x{images.shape[3]}; this Glow models "
                f"{self.resolution}x{self.resolution}.",
                "crop or resize the images to the model's resolution.",
            )
        check_pixels(images, self.channels, "images", integers=True)

    def preprocess(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels → dequantised ``(k + u)/256 − 0.5`` on the model's device."""
        self._check(x)
        ref = self.reference_tensor()
        return dequantize(x, generator).to(ref.device, ref.dtype)

    def postprocess(self, data: Tensor) -> Tensor:
        return to_pixels(data)

    def encode(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """Dequantised images ``[B, C, R, R]`` in ``[−0.5, 0.5)`` → the flat latent ``[B, N]`` and the log-det."""
        check_image_batch(x, self.channels, self.resolution, "dequantised")
        return super().encode(x, context)

    def log_prob_continuous(self, x: Tensor) -> Tensor:
        """Log-density (nats) of already dequantised inputs ``x`` in ``[−0.5, 0.5)``, ``[B]``."""
        z, logdet = self.transform(x)
        return self.prior.log_prob(z) + logdet

    def log_prob(self, x: Tensor, context: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Log-density (nats) of the dequantised images in units ``x/256 − 0.5`` (bits/dim = −lp/(N ln2) + 8).

        ``generator`` may also be given as the second positional argument (earlier API)."""
        if isinstance(context, torch.Generator):
            context, generator = None, context
        return self.log_prob_continuous(self.preprocess(x, generator))

    def forward(self, x: Tensor, context: Any = None) -> Tensor:
        return self.log_prob_continuous(x)

    def bits_per_dim(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = images[0].numel()
        return -self.log_prob(images, generator=generator) / (n * LN2) + 8.0

    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        return (num_samples, sum(self.prior.sizes))

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        """Random uint8 images of the model's size."""
        gen = generator or torch.Generator().manual_seed(0)
        shape = (batch_size, self.channels, self.resolution, self.resolution)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8), None


@register_model("glow", family="glow", harness=HarnessSpec(overrides={"resolution": 8, "levels": 2, "steps": 2,
                                                                      "width": 8}))
def glow(**overrides: Any) -> Glow:
    """Multi-scale Glow baseline (defaults: 32x32 RGB, 3 levels of 8 steps, width 128)."""
    return Glow(**overrides)


@register_model("glow_cpu_32", family="glow", harness=HarnessSpec(overrides={"resolution": 8, "levels": 2}))
def glow_cpu_32(**overrides: Any) -> Glow:
    """The CPU-sized Glow the benchmarks compare with Wavelet Flow's cpu_32 (3 levels of 4 steps, width 48)."""
    return Glow(**{"channels": 3, "resolution": 32, "levels": 3, "steps": 4, "width": 48, **overrides})
