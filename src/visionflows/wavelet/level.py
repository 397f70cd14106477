"""One level of Wavelet Flow: a (conditional) single-scale Glow-like flow.

Yu, Derpanis & Brubaker, "Wavelet Flow: Fast Training of High Resolution Normalizing Flows", NeurIPS 2020
(arXiv:2010.13821). Level ``L = 0`` models the 1×1 low-pass ``I_0`` unconditionally; level ``L ≥ 1`` models the
Haar details ``D_{L−1}`` (``3C`` channels) given the low-pass ``I_{L−1}`` (``C`` channels) of the same spatial
size. Every level is an independent density; its log-probabilities add up to the full model's.

Units: ``I_L`` is in normalised pixel units, ``x = (k + u)/256 − 0.5`` block-averaged; log-densities in nats.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from visionflows.errors import InputError
from visionflows.flows import (
    ActNorm,
    Bijector,
    Compose,
    DiagonalGaussian,
    FlowModel,
    HaarStep,
    StandardNormal,
)
from visionflows.flows.model import (
    _is_context_like,
    check_data,
    check_generator,
    check_num_samples,
    split_sample_args,
)
from visionflows.flows.pixels import check_pixels, dequantize, to_pixels
from visionflows.wavelet.nets import CouplingNet, ResidualBlock, coupling_net_factory, flow_step, set_fused

__all__ = [
    "CouplingNet",
    "ResidualBlock",
    "WaveletLevel",
    "block_mean",
    "coupling_net_factory",
    "dequantize",
    "flow_step",
    "level_dims",
    "level_param_count",
    "set_fused",
    "to_pixels",
]

LN2 = math.log(2.0)
LN256 = math.log(256.0)


# ------------------------------------------------------------------------------------------------ helpers
def block_mean(x: Tensor, times: int) -> Tensor:
    """Average 2×2 blocks ``times`` times (the compensated Haar low-pass): ``[B,C,H,W] → [B,C,H/2^t,W/2^t]``."""
    if times <= 0:
        return x
    f = 2**times
    if x.shape[-1] % f or x.shape[-2] % f:
        raise InputError(
            f"cannot block-average a {tuple(x.shape[-2:])} image {times} time(s): the size must be divisible by {f}.",
            "use square power-of-two images (or crops) of the model's resolution.",
        )
    return torch.nn.functional.avg_pool2d(x, f)


def level_dims(level: int, channels: int) -> tuple[int, int, int]:
    """``(data channels, conditioning channels, side)`` of level ``level`` for ``channels`` colours.

    Level 0 models ``C`` channels at 1×1; level ``L ≥ 1`` models ``3C`` channels at ``2^(L−1)`` given ``C``.
    """
    if level == 0:
        return channels, 0, 1
    return 3 * channels, channels, 2 ** (level - 1)


def level_param_count(level: int, channels: int, steps: int, width: int, res_blocks: int = 3) -> int:
    """Parameters of one level from the layer definitions (doc §3 formula, generalised to any ``res_blocks``)."""
    c, q, _ = level_dims(level, channels)
    if c < 2:
        return 2 * c  # learned diagonal Gaussian
    c1, c2 = c // 2, c - c // 2
    w = width
    per_step = 2 * c + c * c + (c1 + q) * w + 2 * w + res_blocks * (9 * w * w + 2 * w + w * w + 2 * w)
    per_step += 18 * w * c2 + 4 * c2
    return steps * per_step + 2 * c


# ------------------------------------------------------------------------------------------------ one level
class WaveletLevel(FlowModel):
    """The density of level ``level`` of an ``n``-level Wavelet Flow over ``channels`` colours.

    A :class:`~visionflows.flows.FlowModel`: its data ``x`` is the level's coefficients (``I_0`` ``[B, C, 1, 1]``
    at level 0, the details ``D_{L−1}`` ``[B, 3C, s, s]`` above) in normalised units and its context the low-pass
    ``I_{L−1}`` ``[B, C, s, s]`` (``None`` at level 0): ``log_prob(x, context)``, ``encode``/``decode``,
    ``sample(num_samples | context)``.

    * ``transform``: ``K`` steps (:func:`flow_step`) then the final learned prior ActNorm (scale factor 3, not
      DDI-initialised); the prior is :class:`~visionflows.flows.StandardNormal`. Where the data has fewer than
      2 channels (level 0 of a greyscale model) there is no coupling: the level is a learned
      :class:`~visionflows.flows.DiagonalGaussian`.
    * ``log_prob_level(images, generator)``: full-resolution images (or full-resolution crops) in [0, 255] →
      ``[B]`` nats of this level's data, Haar term included (see :meth:`log_prob_coeffs`).
    * ``flow_log_prob(data, cond)``: the flow density ``ld_L`` of the level's own coefficients.

    Temperature is applied to the standard-normal latent *before* the inverse of the prior ActNorm (Glow).
    A level saved on its own (one level's training job) is a model file of kind ``"waveletflow_level"``.
    """

    kind = "waveletflow_level"

    def __init__(
        self,
        level: int,
        n_levels: int,
        channels: int = 3,
        steps: int = 8,
        width: int = 128,
        res_blocks: int = 3,
        preset: str | None = None,
    ) -> None:
        for name, v, low in (("level", level, 0), ("n_levels", n_levels, 0), ("channels", channels, 1),
                             ("steps", steps, 0), ("width", width, 1), ("res_blocks", res_blocks, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"Wavelet Flow level: {name} must be an integer ≥ {low}, got {v!r}.",
                                 f"pass {name} as an int ≥ {low}.")
        if not 0 <= level <= n_levels:
            raise InputError(f"level {level} is outside 0..{n_levels}.")
        c, q, _ = level_dims(level, channels)
        if c >= 2:
            layers: list[Bijector] = [flow_step(c, q, width, res_blocks) for _ in range(steps)]
            layers.append(ActNorm(c, scale_factor=3.0, ddi=False))
            transform, prior = Compose(*layers), StandardNormal()
        else:
            transform, prior = Compose(), DiagonalGaussian(c)
        super().__init__(transform, prior)
        self.level, self.n_levels, self.channels = int(level), int(n_levels), int(channels)
        self.steps, self.width, self.res_blocks = int(steps), int(width), int(res_blocks)
        self.preset = preset
        self.data_channels, self.cond_channels = c, q
        self.haar = HaarStep(compensate=True)
        self.last_anneal_stats = None  # LevelAnnealStats of the last annealed sample_data call

    def model_config(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "n_levels": self.n_levels,
            "channels": self.channels,
            "steps": self.steps,
            "width": self.width,
            "res_blocks": self.res_blocks,
            "preset": self.preset,
        }

    def extra_repr(self) -> str:
        return f"level={self.level}, n_levels={self.n_levels}, steps={self.steps}, width={self.width}"

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        """Levels above 0 are conditioned on the low-pass ``I_{L−1}``."""
        return self.level > 0

    # -- the model contract ------------------------------------------------------------------------------
    def prepare_context(self, context: Any, x: Tensor | None = None) -> Tensor | None:
        """Check ``context`` (``I_{L−1}``, ``None`` at level 0) against the data ``x`` and move it to the device."""
        if self.level == 0:
            if context is not None:
                raise InputError("level 0 is unconditional but got a context.", "pass num_samples (or no context).")
            if x is not None:
                self._check(x, None)
            return None
        if isinstance(context, Tensor):
            check_data(context, f"the low-pass context I_{self.level - 1}")
        if x is not None:
            self._check(x, context)
        elif not isinstance(context, Tensor) or context.dim() != 4 or context.shape[1] != self.channels:
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise InputError(f"level {self.level} needs the low-pass I_{self.level - 1} [B, {self.channels}, s, s] "
                             f"as context, got {got}.", "pass the coarser image I_{L-1}, e.g. from "
                             "model.example_inputs() or the previous level's sample.")
        ref = self._ref()
        return context.to(ref.device, ref.dtype)

    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        side = 1 if context is None else int(context.shape[-1])
        return (num_samples, self.data_channels, side, side)

    @torch.no_grad()
    def sample(self, num_samples: int | Any = None, context: Any = None, *, temperature: float = 1.0,
               generator: torch.Generator | None = None, anneal: Any = None) -> Tensor:
        """The level's coefficients: ``I_0`` for ``num_samples`` (level 0) or ``D_{L−1}`` given ``context``.

        ``anneal`` (an :class:`~visionflows.wavelet.anneal.AnnealConfig`, ``True`` or ``"official"``): sample
        ``p^γ`` (``γ = 1/T²``) by MCMC in the latent space instead of scaling the latent by ``T``; the sampler's
        statistics are left in ``self.last_anneal_stats``.
        """
        if self.level == 0 and num_samples is not None and not _is_context_like(num_samples):
            num_samples = check_num_samples(num_samples)
        num_samples, context = split_sample_args(num_samples, context)
        check_generator(generator)
        context = self.prepare_context(context)
        return self.sample_data(context, num_samples, temperature, generator, anneal=anneal)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None,
                       side: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Coefficients and low-pass of ``side × side`` (default ``min(2^(L−1), 4)``) in normalised units."""
        gen = generator or torch.Generator().manual_seed(0)
        if self.level == 0:
            return torch.rand(batch_size, self.channels, 1, 1, generator=gen) - 0.5, None
        side = side or min(2 ** (self.level - 1), 4)
        cond = torch.rand(batch_size, self.channels, side, side, generator=gen) - 0.5
        data = 0.05 * torch.randn(batch_size, self.data_channels, side, side, generator=gen)
        return data, cond

    # -- the level's own coefficients ------------------------------------------------------------------
    def split(self, i_level: Tensor) -> tuple[Tensor, Tensor | None]:
        """``I_L → (data, cond)``: ``(I_0, None)`` at level 0, ``(D_{L−1}, I_{L−1})`` by one Haar step above."""
        if self.level == 0:
            return i_level, None
        low, details, _ = self.haar.split(i_level)
        return details, low

    def flow_log_prob(self, data: Tensor, cond: Tensor | None = None) -> Tensor:
        """``ld_L``: the flow log-density (nats, ``[B]``) of the level's coefficients ``data`` given ``cond``
        (the same as :meth:`log_prob`)."""
        self._check(data, cond)
        z, ld = self.transform(data, cond)
        return self.prior.log_prob(z) + ld

    def haar_logdet(self, dims: int) -> float:
        """``dims·(n − L)·ln ½``: the log-det of the mean-compensation scaling charged to this level (nats)."""
        return -dims * (self.n_levels - self.level) * LN2

    def log_prob_coeffs(self, i_level: Tensor) -> Tensor:
        """``ld_L + haar_ldj_L`` (nats, ``[B]``) for the normalised low-pass ``I_L`` ``[B, C, s, s]``.

        ``s = 2^L`` (or less for a crop). Normalised by the actual tensor dims ``dim = numel(data)/B``.
        """
        if i_level.dim() != 4 or i_level.shape[1] != self.channels:
            raise InputError(
                f"level {self.level} expects I_{self.level} as [B, {self.channels}, s, s], got {tuple(i_level.shape)}."
            )
        data, cond = self.split(i_level)
        dims = data[0].numel()
        return self.flow_log_prob(data, cond) + self.haar_logdet(dims)

    def downsample(self, x: Tensor) -> Tensor:
        """Full-resolution normalised images (or crops) → ``I_L`` by ``n − L`` block means."""
        return block_mean(x, self.n_levels - self.level)

    def log_prob_level(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B]`` nats of level ``L``'s data for images in [0, 255] at the *full* image scale.

        ``images`` are full-resolution images (side ``2^n``) or full-resolution crops (side ``2^n / c``); they
        are dequantised (``generator``) and block-averaged ``n − L`` times to ``I_L``. The full model's
        :meth:`~visionflows.wavelet.WaveletFlow.log_prob` equals the sum of this over the levels (same noise).
        """
        check_pixels(images, self.channels)
        x = dequantize(images.to(self._device()), generator)
        return self.log_prob_coeffs(self.downsample(x))

    def dims_for(self, images: Tensor) -> int:
        """The number of dimensions level ``L`` models for full-scale images (or crops) of this size."""
        side = images.shape[-1] // 2 ** (self.n_levels - self.level)
        return self.channels if self.level == 0 else 3 * self.channels * (side // 2) ** 2

    def bits_per_dim_level(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-level train bits/dim ``−log_prob_L/(dim_L·ln2) + 8`` (includes the ``(n − L)`` Haar offset)."""
        lp = self.log_prob_level(images, generator)
        return -lp / (self.dims_for(images) * LN2) + 8.0

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:  # for DDP/compile
        return self.log_prob_level(images, generator)

    # -- sampling ----------------------------------------------------------------------------------------
    def latent_map(self, cond: Tensor | None = None):
        """``ε ↦ (x, log|det ∂x/∂ε|)``: the level's inverse flow from its standard-normal latent ``ε`` (through
        the learned diagonal Gaussian where the level has one), given ``cond``; differentiable in ``ε``.
        ``f(ε, rows)`` uses ``cond[rows]`` (for samplers that run one chain at a time)."""

        def f(eps: Tensor, rows: slice | None = None) -> tuple[Tensor, Tensor]:
            c = cond if rows is None or cond is None else cond[rows]
            z, ld0 = eps, None
            if isinstance(self.prior, DiagonalGaussian):
                ls = self.prior.log_scale.view(1, -1, 1, 1)
                z = self.prior.loc.view(1, -1, 1, 1) + ls.exp() * eps
                ld0 = ls.expand_as(eps).flatten(1).sum(1)
            x, ld = self.transform.inverse(z, c)
            return x, ld if ld0 is None else ld + ld0

        return f

    def _sample_shape(self, cond: Tensor | None, num_samples: int | None) -> tuple[int, int, int, int]:
        if self.level == 0:
            b, side = 1 if num_samples is None else check_num_samples(num_samples), 1
        else:
            if cond is None:
                raise InputError(f"level {self.level} needs the low-pass I_{self.level - 1} as cond to sample.")
            b, side = cond.shape[0], cond.shape[-1]
        return (b, self.data_channels, side, side)

    @torch.no_grad()
    def sample_data(
        self,
        cond: Tensor | None = None,
        num_samples: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        anneal: Any = None,
    ) -> Tensor:
        """Sample the level's coefficients: ``I_0`` ``[n, C, 1, 1]`` (level 0) or ``D_{L−1}`` given ``cond``.

        Direct: ``x = f⁻¹(T·ε)``. With ``anneal`` (see :meth:`sample`): MCMC on ``p^γ``, ``γ = 1/T²``
        (:func:`~visionflows.wavelet.anneal.anneal_latent`); its statistics go to ``self.last_anneal_stats``.
        """
        from visionflows.wavelet.anneal import anneal_latent, as_anneal_config, check_temperature

        config = as_anneal_config(anneal)
        temperature = check_temperature(temperature, anneal=config is not None)
        ref = self._ref()
        shape = self._sample_shape(cond, num_samples)
        if config is not None:
            _, x, stats = anneal_latent(self.latent_map(cond), shape, temperature, config, generator, ref,
                                        level=self.level)
            self.last_anneal_stats = stats
            return x
        eps = torch.randn(shape, generator=generator, dtype=torch.float32).to(ref.device, ref.dtype)
        if isinstance(self.prior, DiagonalGaussian):
            z = eps * temperature
            z = self.prior.loc.view(1, -1, 1, 1) + self.prior.log_scale.exp().view(1, -1, 1, 1) * z
        else:
            z = eps * temperature
        return self.transform.inverse(z, cond)[0]

    @torch.no_grad()
    def sample_next(
        self, i_prev: Tensor | None, num_samples: int | None = None, temperature: float = 1.0,
        generator: torch.Generator | None = None, anneal: Any = None,
    ) -> Tensor:
        """One coarse-to-fine step: ``I_{L−1} → I_L`` (level 0: sample ``I_0``); ``anneal`` as in :meth:`sample`."""
        data = self.sample_data(i_prev, num_samples, temperature, generator, anneal=anneal)
        if self.level == 0:
            return data
        return self.haar.merge(i_prev, data)[0]

    # -- internals ---------------------------------------------------------------------------------------
    def _ref(self) -> Tensor:
        return self.reference_tensor()

    def _device(self) -> torch.device:
        return self._ref().device

    def _check(self, data: Tensor, cond: Tensor | None) -> None:
        if data.dim() != 4 or data.shape[1] != self.data_channels:
            raise InputError(
                f"level {self.level} models {self.data_channels} channels, got data of shape {tuple(data.shape)}.",
                "pass the level's coefficients [B, C, s, s] (I_0 at level 0, the Haar details D_{L-1} above), "
                "e.g. from model.split(I_L) or model.example_inputs().",
            )
        if self.level > 0:
            if not isinstance(cond, Tensor) or cond.shape != (data.shape[0], self.channels, *data.shape[2:]):
                got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
                raise InputError(
                    f"level {self.level} needs cond I_{self.level - 1} of shape "
                    f"{(data.shape[0], self.channels, *data.shape[2:])}, got {got}.",
                    "pass the low-pass image of the same batch and spatial size as the details (model.split(I_L)).",
                )
