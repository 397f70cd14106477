"""The full Wavelet Flow model: a Haar pyramid with one independent flow per level.

Yu, Derpanis & Brubaker, "Wavelet Flow: Fast Training of High Resolution Normalizing Flows", NeurIPS 2020
(arXiv:2010.13821). ``log p(x) = log p(I_0) + Σ_{k=1..n} log p(D_{k−1} | I_{k−1}) + log|det J_haar|``, where each
Haar step maps ``I_k`` to its 2×2 block mean ``I_{k−1}`` and ``3C`` orthonormal detail bands ``D_{k−1}``. The
log-det of the mean scaling, ``dim_L·(n−L)·ln ½``, is charged to level ``L`` so levels train and report alone.

Pixel conventions: images are uint8 ``[B, C, H, W]`` (or float in [0, 255]); inside, ``x = (k + u)/256 − 0.5``.
:meth:`WaveletFlow.log_prob` is the density of the dequantised ``x`` in these normalised units, so
``bits/dim = −log_prob/(N·ln 2) + 8``. Samples are float tensors in [0, 255] (see :func:`to_pixels`).

Image checks, the size rules and the bijective :class:`PyramidTransform` live in :mod:`visionflows.wavelet.pyramid`
and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import CheckpointError, InputError
from visionflows.flows import FactoredPrior, FlowModel, HaarStep
from visionflows.flows.model import check_generator, check_image_batch, check_num_samples
from visionflows.registry import register_model
from visionflows.wavelet.level import LN2, LN256, WaveletLevel, dequantize, level_dims, to_pixels
from visionflows.wavelet.pyramid import PyramidTransform, _FlatPrior, check_images, n_levels_for

__all__ = ["WaveletFlow", "PyramidTransform", "check_images", "n_levels_for"]


class WaveletFlow(FlowModel):
    """Wavelet Flow over ``channels``-colour images of ``resolution × resolution`` (a power of two).

    Attributes: ``resolution``, ``channels``, ``n_levels`` (``n = log2(resolution)``; levels ``0..n``),
    ``levels`` (``nn.ModuleList`` of :class:`~visionflows.wavelet.level.WaveletLevel`), ``level_sources``
    (``{level: description of the checkpoint it was loaded from}``, filled by
    :func:`~visionflows.wavelet.train.assemble`), ``kind = "waveletflow"``.

    A :class:`~visionflows.flows.FlowModel` over images: ``log_prob(images, generator=...)`` dequantises
    (:meth:`preprocess`) and scores in normalised units; ``encode``/``decode`` map normalised images to the flat
    concatenation of every level's latent (:class:`PyramidTransform`) and back; ``sample(n)`` returns float pixels
    at full resolution (:meth:`sample_pyramid` returns every resolution).

    Args:
        resolution: image side ``2^n``.
        channels: colour channels ``C`` (3 RGB, 1 greyscale, any ``C ≥ 1``).
        steps, widths: per-level flow steps ``K_L`` and coupling widths ``W_L`` (``n + 1`` entries or one int).
        crops: per-level training crop factors ``c_L`` (training data only; kept with the model's config).
        res_blocks: residual blocks per coupling network.
        flip: random left-right flips in training (data config, kept for reference).
        name: preset name (informational).
    """

    kind = "waveletflow"
    conditional = False

    def __init__(
        self,
        resolution: int,
        channels: int = 3,
        steps: Sequence[int] | int = 8,
        widths: Sequence[int] | int = 128,
        crops: Sequence[int] | int = 1,
        res_blocks: int = 3,
        flip: bool = False,
        name: str | None = None,
    ) -> None:
        n = n_levels_for(int(resolution), "model resolution")
        if int(channels) < 1:
            raise InputError(f"channels must be ≥ 1, got {channels}.")
        steps_l, widths_l, crops_l = (_per_level(v, n, k) for v, k in ((steps, "steps"), (widths, "widths"),
                                                                        (crops, "crops")))
        for lv, c in enumerate(crops_l):
            if c < 1 or c & (c - 1) or c > 2 ** max(lv - 1, 0):
                raise InputError(
                    f"crop factor {c} for level {lv} is invalid: it must be a power of two ≤ 2^(L−1) (or 1).",
                    "use crop factors like 1, 2, 4 that leave at least a 2×2 patch of I_L.",
                )
        levels = nn.ModuleList(
            WaveletLevel(lv, n, int(channels), steps_l[lv], widths_l[lv], int(res_blocks)) for lv in range(n + 1)
        )
        shapes = [(c * side * side,) for c, _, side in (level_dims(lv, int(channels)) for lv in range(n + 1))]
        super().__init__(PyramidTransform(levels, int(channels), register=False),
                         FactoredPrior(shapes, [_FlatPrior(lv) for lv in levels], register=True))
        self.levels = levels
        self.resolution, self.channels, self.n_levels = int(resolution), int(channels), n
        self.steps, self.widths, self.crops = steps_l, widths_l, crops_l
        self.res_blocks, self.flip, self.name = int(res_blocks), bool(flip), name
        self.haar = HaarStep(compensate=True)
        self.level_sources: dict[int, str] = {}
        self.last_anneal_stats = None  # AnnealStats of the last annealed sample / super_resolve call

    # -- config ---------------------------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "channels": self.channels,
            "steps": list(self.steps),
            "widths": list(self.widths),
            "crops": list(self.crops),
            "res_blocks": self.res_blocks,
            "flip": self.flip,
            "name": self.name,
        }

    @property
    def num_dims(self) -> int:
        """``N = C·H·W``."""
        return self.channels * self.resolution**2

    def level_dims(self) -> list[int]:
        """``dim_L`` for every level: ``C`` at 0, ``3C·4^(L−1)`` above; sums to ``N``."""
        dims = [level_dims(lv, self.channels) for lv in range(self.n_levels + 1)]
        return [c * side**2 for c, _, side in dims]

    def extra_repr(self) -> str:
        return f"name={self.name}, resolution={self.resolution}, channels={self.channels}, n_levels={self.n_levels}"

    def _ref(self) -> Tensor:
        return next(self.parameters())

    def require_levels(self, levels: Sequence[int]) -> None:
        """Raise :class:`CheckpointError` if any of ``levels`` was not loaded by :func:`assemble`."""
        bad = [lv for lv in levels if self.level_sources.get(lv) == "untrained"]
        if bad:
            raise CheckpointError(
                f"level(s) {bad} of this model have no trained checkpoint (see model.level_sources).",
                f"train level {bad[0]} (visionflows wavelet train --level {bad[0]}) before using it.",
            )

    # -- densities ------------------------------------------------------------------------------------------
    def dequantize(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Validate and dequantise: ``x = (k + u)/256 − 0.5`` (``u`` from ``generator``), on the model's device."""
        check_images(images, self.channels, self.resolution)
        return dequantize(images.to(self._ref().device), generator).to(self._ref().dtype)

    def level_log_probs(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[B, n+1]`` nats: level ``L``'s ``ld_L + dim_L·(n−L)·ln ½`` from one dequantisation of ``images``."""
        self.require_levels(range(self.n_levels + 1))
        x = self.dequantize(images, generator)
        return self.level_log_probs_continuous(x)

    def level_log_probs_continuous(self, x: Tensor) -> Tensor:
        """Like :meth:`level_log_probs` for an already normalised ``x`` ``[B, C, 2^n, 2^n]``."""
        out = [None] * (self.n_levels + 1)
        i = x
        for lv in range(self.n_levels, 0, -1):
            low, details, _ = self.haar.split(i)
            level = self.levels[lv]
            out[lv] = level.flow_log_prob(details, low) + level.haar_logdet(details[0].numel())
            i = low
        level0 = self.levels[0]
        out[0] = level0.flow_log_prob(i, None) + level0.haar_logdet(i[0].numel())
        return torch.stack(out, dim=1)

    def preprocess(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels (uint8 or float in [0, 255]) → dequantised normalised ``(k + u)/256 − 0.5``."""
        return self.dequantize(x, generator)

    def postprocess(self, data: Tensor) -> Tensor:
        return to_pixels(data)

    def log_prob(self, x: Tensor, context: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``[B]`` nats: log-density of the dequantised images in normalised units (``bpd = −lp/(N ln2) + 8``).

        The sum of the levels' terms (:meth:`level_log_probs`); ``generator`` may also be passed second."""
        if isinstance(context, torch.Generator):
            context, generator = None, context
        self.prepare_context(context)
        return self.level_log_probs(x, generator).sum(dim=1)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.log_prob(images, generator=generator)

    def encode(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """Normalised images ``[B, C, 2^n, 2^n]`` → flat latents of every level ``[B, N]`` and the log-det."""
        check_image_batch(x, self.channels, self.resolution, "normalised")
        return super().encode(x, context)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        """Random uint8 images of the model's size."""
        gen = generator or torch.Generator().manual_seed(0)
        shape = (batch_size, self.channels, self.resolution, self.resolution)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8), None

    def bits_per_dim(self, images: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"total": [B], "levels": [B, n+1]}`` bits/dim; ``levels[:, L]`` is level L's contribution
        ``−(log_prob_L − dim_L·ln 256)/(N·ln 2)`` (Haar term included) and the levels sum to ``total``."""
        lp = self.level_log_probs(images, generator)
        dims = torch.tensor(self.level_dims(), dtype=lp.dtype, device=lp.device)
        contrib = -(lp - dims * LN256) / (self.num_dims * LN2)
        return {"total": contrib.sum(dim=1), "levels": contrib}

    # -- sampling -------------------------------------------------------------------------------------------
    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        return (num_samples, self.num_dims)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int | None = None,
        context: Any = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        resolution: int | None = None,
        anneal: Any = None,
    ) -> Tensor:
        """``[n, C, r, r]`` float pixels in [0, 255] sampled coarse to fine, level by level (``r``: ``resolution``,
        default the model's). The same draws as the last entry of :meth:`sample_pyramid`.

        ``anneal``: ``None`` (direct sampling, latents scaled by ``temperature``) or an
        :class:`~visionflows.wavelet.anneal.AnnealConfig` (``True``: defaults, ``"official"``: the official NUTS
        settings): every level samples ``p^γ``, ``γ = 1/T²``, by MCMC given the already sampled coarser image;
        the sampler's acceptance rates, step sizes and timings are left in ``self.last_anneal_stats``.
        """
        if isinstance(context, int):  # sample(n, resolution) of earlier versions
            context, resolution = None, context
        self.prepare_context(context)
        if num_samples is None:
            raise InputError("WaveletFlow.sample needs num_samples.", "call model.sample(n).")
        return self.sample_pyramid(check_num_samples(num_samples), resolution, temperature, generator,
                                   anneal=anneal)[-1]

    def _anneal_setup(self, temperature: float, anneal: Any, images: int):
        from visionflows.wavelet.anneal import AnnealStats, as_anneal_config, check_temperature

        config = as_anneal_config(anneal)
        t = check_temperature(temperature, anneal=config is not None)
        stats = None if config is None else AnnealStats(t, 1.0 / (t * t), config, int(images))
        self.last_anneal_stats = stats
        return config, t, stats

    def _next(self, lv: int, i: Tensor | None, n: int | None, t: float, generator, config, stats) -> Tensor:
        level = self.levels[lv]
        out = level.sample_next(i, n, t, generator, anneal=config)
        if stats is not None:
            stats.levels.append(level.last_anneal_stats)
        return out

    @torch.no_grad()
    def sample_pyramid(
        self,
        n: int,
        resolution: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        anneal: Any = None,
    ) -> list[Tensor]:
        """Sample ``n`` images coarse to fine; returns ``[I_0, I_1, …]`` as float pixels in [0, 255].

        The list holds one ``[n, C, 2^L, 2^L]`` tensor per resolution ``1, 2, 4, …, resolution`` (default the
        model's). One scalar ``temperature`` for every level; ``temperature=0`` is deterministic. ``anneal``: see
        :meth:`sample`.
        """
        n = check_num_samples(n, "n")
        check_generator(generator)
        if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)):
            raise InputError(f"sample resolution must be an int, got {resolution!r}.",
                             f"pass a power of two ≤ {self.resolution}, e.g. resolution={self.resolution}.")
        res = self.resolution if resolution is None else int(resolution)
        top = n_levels_for(res, "sample resolution")
        if top > self.n_levels:
            raise InputError(f"sample resolution {res} exceeds the model's {self.resolution}.",
                             f"use a resolution ≤ {self.resolution}.")
        config, t, stats = self._anneal_setup(temperature, anneal, n)
        self.require_levels(range(top + 1))
        i = self._next(0, None, int(n), t, generator, config, stats)
        out = [to_pixels(i)]
        for lv in range(1, top + 1):
            i = self._next(lv, i, None, t, generator, config, stats)
            out.append(to_pixels(i))
        return out

    def check_superres_factor(self, factor: Any, low_side: int | None = None) -> int:
        """The number of levels a super-resolution by ``factor`` samples; :class:`InputError` unless ``factor`` is
        a power of two ≥ 2 within the model's levels (from ``low_side`` if given, else from 1×1)."""
        try:
            f = int(factor)
        except (TypeError, ValueError):
            f = -1
        if isinstance(factor, bool) or f != factor or f < 2 or f & (f - 1):
            raise InputError(f"super-resolution factor {factor!r} is not a power of two ≥ 2.",
                             "use --factor 2, 4, 8, … (each factor of 2 is one Wavelet Flow level).")
        steps = int(round(math.log2(f)))
        base = 0 if low_side is None else n_levels_for(int(low_side), "low-res image")
        if base + steps > self.n_levels:
            most = 2 ** (self.n_levels - base)
            raise InputError(
                f"super-resolution factor {f} needs {steps} detail levels above the {2**base}×{2**base} input, but "
                f"this {self.resolution}×{self.resolution} model has {self.n_levels - base} "
                f"({2**base * f} > {self.resolution}).",
                (f"use a factor ≤ {most}" + (" or a smaller low-res input." if low_side else ".")) if most >= 2 else
                f"the input is already {2**base}×{2**base}: pass a smaller low-res image (≤ {self.resolution // 2}"
                f"×{self.resolution // 2}).",
            )
        return steps

    @torch.no_grad()
    def super_resolve(
        self,
        low_res: Tensor,
        factor: int,
        temperature: float = 1.0,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        anneal: Any = None,
        reduce: str | None = None,
    ) -> Tensor:
        """Sample the missing detail levels of real low-resolution images.

        ``low_res``: uint8 / float-in-[0, 255] ``[B, C, s, s]`` with ``s = 2^b`` and ``s·factor ≤ resolution``;
        it is used as ``I_b`` at the bin centres (``(k + 0.5)/256 − 0.5``, no noise). Returns float pixels in
        [0, 255], ``[B, n_samples, C, s·factor, s·factor]``.

        * ``temperature=0``: the deterministic mode of the latent (every level's ``z = 0``);
        * ``reduce="mean"``: the mean of the ``n_samples`` samples (an estimate of the conditional mean, the
          minimum-MSE prediction), returned as ``[B, 1, C, s·f, s·f]``;
        * ``anneal``: every sampled level by MCMC on ``p^γ`` (see :meth:`sample`).
        """
        check_images(low_res, self.channels, None, "low-res images")
        s = low_res.shape[-1]
        steps = self.check_superres_factor(factor, s)
        b = n_levels_for(s, "low-res image")
        if reduce not in (None, "mean"):
            raise InputError(f"reduce must be None or 'mean', got {reduce!r}.")
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or int(n_samples) < 1:
            raise InputError(f"n_samples must be an integer ≥ 1, got {n_samples!r}.")
        check_generator(generator)
        bsz = low_res.shape[0]
        config, t, stats = self._anneal_setup(temperature, anneal, bsz * int(n_samples))
        self.require_levels(range(b + 1, b + steps + 1))
        x = dequantize(low_res.to(self._ref().device), noise=False).to(self._ref().dtype)
        i = x.repeat_interleave(int(n_samples), dim=0)
        for lv in range(b + 1, b + steps + 1):
            i = self._next(lv, i, None, t, generator, config, stats)
        side = s * int(factor)
        out = to_pixels(i).reshape(bsz, int(n_samples), self.channels, side, side)
        return out.mean(dim=1, keepdim=True) if reduce == "mean" else out

    def pyramid(self) -> PyramidTransform:
        """The bijective part ``x → (z_0, …, z_n)`` as a stand-alone :class:`PyramidTransform` (registers the
        levels' transforms as its own submodules, e.g. for the bijector harness)."""
        return PyramidTransform(self.levels, self.channels)


def _per_level(v: Sequence[int] | int, n: int, what: str) -> list[int]:
    vals = [int(v)] * (n + 1) if isinstance(v, int) else [int(a) for a in v]
    if len(vals) != n + 1:
        raise InputError(f"{what} needs {n + 1} entries (levels 0..{n}), got {len(vals)}: {vals}.")
    return vals


def _level_preset(**overrides: Any) -> WaveletLevel:
    return WaveletLevel(**{"level": 2, "n_levels": 3, "channels": 3, "steps": 2, "width": 16, "res_blocks": 1,
                           **overrides})


_level_preset.__doc__ = "One Wavelet Flow level (defaults: level 2 of a 3-level RGB model, 2 steps, width 16)."
register_model("waveletflow_level", family="wavelet")(_level_preset)
