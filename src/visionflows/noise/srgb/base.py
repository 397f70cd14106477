"""The common base of the sRGB noise models (the flow and its baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows import Bijector, FlowModel
from visionflows.noise.srgb.context import SRGBContext, as_clean, as_list

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
        self.isos = [int(i) for i in isos]
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
        name / sequence of names (None = unknown). Values not in the fit-time vocabulary map to "unknown"."""
        device = self.reference_tensor().device
        if isinstance(clean, SRGBContext):
            return clean.to(device=device)
        clean = as_clean(clean)
        b = clean.shape[0]
        isos = as_list(iso, b, "iso")
        cams = as_list(camera, b, "camera")
        iso_idx = [self._iso_index.get(int(i), 0) if i is not None else 0 for i in isos]
        cam_idx = [self._cam_index.get(str(c).lower(), 0) if c is not None else 0 for c in cams]
        return SRGBContext(clean.to(device), torch.tensor(iso_idx, device=device),
                           torch.tensor(cam_idx, device=device), self.n_iso, self.n_cam)

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
