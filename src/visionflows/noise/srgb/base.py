"""The common base of the sRGB noise models (the flow and its baselines)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows import Bijector, FlowModel
from visionflows.flows.model import check_generator, check_temperature
from visionflows.noise.context import check_index_tensor
from visionflows.noise.srgb.context import SRGBContext, as_clean, as_iso, as_list

__all__ = ["SRGBNoiseModel"]


class SRGBNoiseModel(FlowModel):
    """Shared API of the sRGB noise models (a :class:`~visionflows.flows.FlowModel` over noise in 8-bit levels
    given an :class:`SRGBContext`): vocabularies, context building, NLL, sampling.

    Contract methods take ``(noise, context)``; as sugar ``context`` may be the clean image followed by ``iso`` and
    ``camera`` (``model.log_prob(noise, clean, 1600, "d800")``)."""

    domain = "srgb"
    channels = 3

    def __init__(self, transform: Bijector, prior: nn.Module, cameras: Sequence[str] = (),
                 isos: Sequence[int] = ()) -> None:
        super().__init__(transform, prior)
        self.cameras = [str(c).lower() for c in cameras]
        self.isos = [as_iso(i) for i in isos]
        self._cam_index = {c: i + 1 for i, c in enumerate(self.cameras)}
        self._iso_index = {v: i + 1 for i, v in enumerate(self.isos)}

    @property
    def n_iso(self) -> int:
        return len(self.isos) + 1

    @property
    def n_cam(self) -> int:
        return len(self.cameras) + 1

    def context(self, clean: Tensor | SRGBContext, iso: Any = None, camera: Any = None) -> SRGBContext:
        """Validated :class:`SRGBContext`. ``iso``: int / sequence / tensor (0 or None = unknown); ``camera``:
        name / sequence of names (None = unknown). Values not in the fit-time vocabulary map to "unknown".
        A given SRGBContext is re-checked (it may come from the plain constructor or another model)."""
        device = self.reference_tensor().device
        weight = next(self.parameters(), None)  # a flow computes in its weights' dtype; baselines in clean's
        if isinstance(clean, SRGBContext):
            if iso is not None or camera is not None:
                raise InputError("iso/camera were given together with an SRGBContext, which already holds them.",
                                 "pass either an SRGBContext or clean, iso and camera, not both.")
            ctx = self._recheck(clean)
            return ctx.to(device=device, dtype=weight.dtype if weight is not None else None)
        clean = as_clean(clean)
        if weight is not None:
            clean = clean.to(weight.dtype)
        b = clean.shape[0]
        isos = as_list(iso, b, "iso")
        cams = as_list(camera, b, "camera")
        iso_idx = [self._iso_index.get(as_iso(i), 0) if i is not None else 0 for i in isos]
        cam_idx = [self._cam_index.get(str(c).lower(), 0) if c is not None else 0 for c in cams]
        return SRGBContext(clean.to(device), torch.tensor(iso_idx, device=device),
                           torch.tensor(cam_idx, device=device), self.n_iso, self.n_cam)

    def _recheck(self, ctx: SRGBContext) -> SRGBContext:
        fix = "build the context with model.context(clean, iso, camera) of this very model."
        if (ctx.n_iso, ctx.n_cam) != (self.n_iso, self.n_cam):
            raise InputError(f"the context was built for a vocabulary of {ctx.n_iso} ISOs × {ctx.n_cam} cameras, "
                             f"this {type(self).__name__} has {self.n_iso} × {self.n_cam} (unknown included).", fix)
        clean = ctx.clean
        if not isinstance(clean, Tensor) or clean.dim() != 4 or clean.shape[1] != 3 or not clean.is_floating_point():
            got = f"{tuple(clean.shape)} {clean.dtype}" if isinstance(clean, Tensor) else type(clean).__name__
            raise InputError(f"context.clean must be floating-point sRGB [B, 3, H, W] in [0, 1], got {got}.", fix)
        b = clean.shape[0]
        if clean.numel() == 0:
            raise InputError(f"the context holds no pixels (clean shape {tuple(clean.shape)}).",
                             "pass at least one image of at least 1×1.")
        for name in ("iso_idx", "cam_idx"):
            check_index_tensor(getattr(ctx, name), f"context.{name}", b, fix, per="image")
        f32 = {"dtype": torch.float32, "device": clean.device}
        lo, hi, i_lo, i_hi, c_lo, c_hi = torch.stack([
            clean.amin().to(**f32), clean.amax().to(**f32), ctx.iso_idx.min().to(**f32),
            ctx.iso_idx.max().to(**f32), ctx.cam_idx.min().to(**f32), ctx.cam_idx.max().to(**f32)]).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("context.clean contains NaN/Inf values.", "clean the data first.")
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"context.clean values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}].",
                             "divide 8-bit values by 255.")
        for name, low, high, n in (("iso_idx", i_lo, i_hi, self.n_iso), ("cam_idx", c_lo, c_hi, self.n_cam)):
            if low < 0 or high >= n:
                raise InputError(f"context.{name} holds {int(low if low < 0 else high)}, outside this model's "
                                 f"0..{n - 1} (0 = unknown).", fix)
        return ctx

    def nll_per_dim(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        """NLL in nats per dimension ``[B]`` (noise in 8-bit levels: the discrete 8-bit NLL bound)."""
        return -self.log_prob(noise, clean, iso, camera) / noise[0].numel()

    def _check_noise(self, noise: Tensor, ctx: SRGBContext) -> Tensor:
        if not isinstance(noise, Tensor):
            raise InputError(f"noise must be a tensor, got {type(noise).__name__}.", "use torch.as_tensor.")
        noise = noise[None] if noise.dim() == 3 else noise
        if tuple(noise.shape) != tuple(ctx.clean.shape):
            raise InputError(f"noise shape {tuple(noise.shape)} does not match clean {tuple(ctx.clean.shape)}.",
                             "pass noise and clean of the same [B, 3, H, W] shape.")
        if not noise.is_floating_point():
            raise InputError(f"noise must be floating point (dequantised, in 8-bit levels), got dtype {noise.dtype}.",
                             "dequantise 8-bit pairs with visionflows.noise.srgb.dequantize_noise(noisy, clean).")
        if not torch.isfinite(noise).all():
            raise InputError("noise contains NaN/Inf.", "clean the data first.")
        return noise.to(device=ctx.clean.device, dtype=ctx.clean.dtype)

    def prepare_context(self, context: Any, x: Tensor | None = None) -> SRGBContext:
        if not isinstance(context, SRGBContext):
            raise InputError(f"{type(self).__name__} needs an SRGBContext, got {type(context).__name__}.",
                             "pass model.context(clean, iso, camera), or clean, iso and camera.")
        return self.context(context)

    # -- the contract, with the (clean, iso, camera) sugar ----------------------------------------------
    def encode(self, x: Tensor, context: Any = None, iso: Any = None, camera: Any = None) -> tuple[Tensor, Tensor]:
        """Noise → latent ``(z, log|det| [B])``."""
        ctx = self.context(context, iso, camera)
        return self.transform(self._check_noise(x, ctx), ctx)

    def decode(self, z: Tensor, context: Any = None, iso: Any = None, camera: Any = None) -> Tensor:
        """Latent → noise (exact)."""
        ctx = self.context(context, iso, camera)
        return self.transform.inverse(self._check_noise(z, ctx), ctx)[0]

    def log_prob(self, x: Tensor, context: Any = None, iso: Any = None, camera: Any = None, *,
                 generator: torch.Generator | None = None) -> Tensor:
        """``log p(noise | clean, iso, camera)`` in nats per image/patch ``[B]``."""
        z, ld = self.encode(x, context, iso, camera)
        return self.prior.log_prob(z) + ld

    def forward(self, x: Tensor, context: Any = None, iso: Any = None, camera: Any = None) -> Tensor:
        return self.log_prob(x, context, iso, camera)

    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        return tuple(context.clean.shape)

    @torch.no_grad()
    def sample(self, context: Any = None, iso: Any = None, camera: Any = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, *, num_samples: int | None = None) -> Tensor:
        """Noise samples in 8-bit levels ``[B, 3, H, W]``, one per clean image of the context (use eval mode)."""
        if context is None or isinstance(context, int) or num_samples is not None:
            raise InputError(f"{type(self).__name__} is conditional: sample(context) draws one noise image per "
                             "clean image.", "pass the clean images (and iso, camera) or an SRGBContext.")
        temperature = check_temperature(temperature)
        check_generator(generator)
        ctx = self.context(context, iso, camera)
        y = ctx.clean
        eps = torch.randn(tuple(y.shape), generator=generator, dtype=y.dtype).to(y.device)
        return self.transform.inverse(eps * temperature, ctx)[0]

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None,
                       size: int = 8) -> tuple[Tensor, SRGBContext]:
        """Noise in 8-bit levels (std 3) and a context mixing known and unknown ISOs/cameras."""
        gen = generator or torch.Generator().manual_seed(0)
        clean = torch.rand(batch_size, 3, size, size, generator=gen)
        isos = [(self.isos + [None])[i % (len(self.isos) + 1)] for i in range(batch_size)]
        cams = [(self.cameras + [None])[i % (len(self.cameras) + 1)] for i in range(batch_size)]
        return 3.0 * torch.randn(batch_size, 3, size, size, generator=gen), self.context(clean, isos, cams)
