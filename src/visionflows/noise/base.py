"""The common base of every raw noise model (Noise Flow and the baselines): a :class:`FlowModel` whose data is a
noise patch ``n = noisy − clean`` ``[B, 4, H, W]`` and whose context is a :class:`NoiseContext`.

The contract methods take ``(x, context)``; as sugar, ``context`` may be the clean patch with ``iso`` and
``camera`` given after it (``model.log_prob(noise, clean, 800, "S6")``), which builds and validates the context::

    log_prob(noise, context | clean, iso, camera) -> [B]           # nats per patch
    nll_per_dim(noise, context | clean, iso, camera) -> [B]        # nats per dimension
    encode(noise, context | clean, iso, camera) -> (z, logdet [B]) # exact
    decode(z, context | clean, iso, camera) -> noise               # exact
    sample(context | clean, iso, camera, temperature=1.0, generator=None) -> noise [B, 4, H, W]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.cameras import CAMERAS, ISOS
from visionflows.errors import InputError
from visionflows.flows import Bijector, FlowModel
from visionflows.flows.model import check_generator, check_temperature
from visionflows.noise.context import NoiseContext, check_index_tensor, check_raw_values

__all__ = ["NoiseModel", "resolve_context"]


def resolve_context(
    clean: Tensor | NoiseContext,
    iso: Any,
    camera: Any,
    noise: Tensor | None = None,
    continuous_iso: bool = False,
    isos: tuple[int, ...] = ISOS,
    nlf: Any = None,
    num_cameras: int | None = len(CAMERAS),
) -> NoiseContext:
    """A validated :class:`NoiseContext` (see :meth:`NoiseContext.create`); ISOs must be in ``isos`` unless
    ``continuous_iso``, camera indices below ``num_cameras`` (``None``: any). A given NoiseContext is re-checked
    for its ISOs, camera range and the noise shape only. ``nlf``: optional per-sample metadata NLF
    ``(beta1 [B], beta2 [B])`` or per-channel ``[B, C, 2]`` attached to the context."""
    if isinstance(clean, NoiseContext):
        if iso is not None or camera is not None:
            raise InputError("iso/camera were given together with a NoiseContext, which already holds them.",
                             "pass either a NoiseContext or clean, iso and camera, not both.")
        ctx = clean
        _recheck_context(ctx, noise, None if continuous_iso else isos, num_cameras)
    else:
        ctx = NoiseContext.create(clean, iso, camera, noise=noise, allowed_isos=None if continuous_iso else isos,
                                  num_cameras=num_cameras)
    return ctx.with_nlf(nlf) if nlf is not None else ctx


def _recheck_context(ctx: NoiseContext, noise: Tensor | None, isos: tuple[int, ...] | None,
                     num_cameras: int | None) -> None:
    """Re-check a given :class:`NoiseContext` (it may come from the plain constructor, which does not validate)
    and the ``noise`` scored under it: shapes and dtypes, then every value check in one device round trip."""
    fix = "build the context with NoiseContext.create(clean, iso, camera), which validates it."
    clean = ctx.clean
    if not isinstance(clean, Tensor) or clean.dim() != 4 or not clean.is_floating_point():
        got = f"{tuple(clean.shape)} {clean.dtype}" if isinstance(clean, Tensor) else type(clean).__name__
        raise InputError(f"context.clean must be a floating-point [B, C, H, W] tensor, got {got}.", fix)
    b = clean.shape[0]
    if b == 0:
        raise InputError(f"the context holds no samples (clean shape {tuple(clean.shape)}).",
                         "pass a batch of at least one patch.")
    for name in ("iso", "camera"):
        check_index_tensor(getattr(ctx, name), f"context.{name}", b, fix)
    if noise is not None:
        if not noise.is_floating_point():
            raise InputError(f"noise must be floating point (noisy − clean), got dtype {noise.dtype}.",
                             "pass the noise as a float tensor, e.g. (noisy - clean).float().")
        if tuple(noise.shape) != tuple(clean.shape):
            raise InputError(f"noise shape {tuple(noise.shape)} does not match clean shape {tuple(clean.shape)}.",
                             "pass noise and clean patches of the same [B, 4, H, W] shape.")
    f32 = {"dtype": torch.float32, "device": clean.device}
    iso_ok = torch.ones((), **f32) if isos is None else \
        (ctx.iso[:, None] == torch.tensor(list(isos), device=ctx.iso.device)[None]).any(1).all().to(**f32)
    lo, hi, total, cam_lo, cam_hi, ok = torch.stack([
        clean.amin().to(**f32), clean.amax().to(**f32),
        noise.sum().to(**f32) if noise is not None else torch.zeros((), **f32),
        ctx.camera.min().to(**f32), ctx.camera.max().to(**f32), iso_ok.to(**f32),
    ]).tolist()  # one synchronisation for every value check
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        check_raw_values(clean, what="context.clean")  # raises naming NaN/Inf or the range
    if not math.isfinite(total) and not bool(torch.isfinite(noise).all()):
        raise InputError(f"noise contains {int((~torch.isfinite(noise)).sum())} NaN/Inf value(s).",
                         "clean the data first (SIDD: NaN -> 0).")
    if not ok:
        allowed = torch.tensor(list(isos), device=ctx.iso.device)
        bad = ~(ctx.iso[:, None] == allowed[None]).any(1)
        raise InputError(f"ISO {int(ctx.iso[bad][0])} is not one of the model's ISO levels "
                         f"{', '.join(map(str, isos))}.", "use a listed ISO or continuous_iso=True.")
    if cam_lo < 0:
        raise InputError(f"camera index {int(cam_lo)} is negative.", "use camera indices >= 0 (or camera codes).")
    if num_cameras is not None and cam_hi >= num_cameras:
        raise InputError(f"camera index {int(cam_hi)} is not one of this model's {num_cameras} cameras.",
                         f"use 0..{num_cameras - 1}, or a model adapted to that camera.")


def _batched(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}.", "use torch.as_tensor.")
    return x[None] if x.dim() == 3 else x


class NoiseModel(FlowModel):
    """A conditional density of raw noise given a :class:`NoiseContext` (see the module docstring).

    Subclasses set ``transform`` and ``prior`` (through :class:`FlowModel`), ``kind`` and ``model_config``.
    """

    #: accept any positive ISO (True) or only :data:`ISOS` (False)
    continuous_iso: bool = False
    #: camera indices this model knows (``None``: it ignores the camera, any index is accepted)
    num_cameras: int | None = len(CAMERAS)

    def __init__(self, transform: Bijector, prior: nn.Module) -> None:
        super().__init__(transform, prior)

    # -- context -----------------------------------------------------------------------------------------
    def context(self, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
                noise: Tensor | None = None, nlf: Any = None) -> NoiseContext:
        """Validate the conditioning (see :func:`resolve_context`) on this model's device."""
        device = self.reference_tensor().device
        if isinstance(clean, Tensor):
            clean = clean.to(device)
        ctx = resolve_context(clean, iso, camera, noise=noise, continuous_iso=self.continuous_iso, nlf=nlf,
                              num_cameras=self.num_cameras)
        return ctx.to(device=device)

    def prepare_context(self, context: Any, x: Tensor | None = None) -> NoiseContext:
        if not isinstance(context, NoiseContext):
            raise InputError(f"{type(self).__name__} needs a NoiseContext, got {type(context).__name__}.",
                             "pass NoiseContext.create(clean, iso, camera), or clean, iso and camera.")
        return self.context(context, noise=x)

    def _transform(self, inverse: bool, x: Tensor, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        """Apply the transform (or its inverse); Noise Flow overrides this to chunk large eval batches."""
        return (self.transform.inverse if inverse else self.transform)(x, ctx)

    # -- the contract, with the (clean, iso, camera) sugar ----------------------------------------------
    def encode(self, x: Tensor, context: Tensor | NoiseContext = None, iso: Any = None, camera: Any = None,
               nlf: Any = None) -> tuple[Tensor, Tensor]:
        """Noise → latent: ``(z [B, 4, H, W], log|det ∂z/∂n| [B])``."""
        x = _batched(x)
        ctx = self.context(context, iso, camera, noise=x, nlf=nlf)
        return self._transform(False, x.to(ctx.clean.device), ctx)

    def decode(self, z: Tensor, context: Tensor | NoiseContext = None, iso: Any = None, camera: Any = None,
               nlf: Any = None) -> Tensor:
        """Latent → noise, exactly."""
        z = _batched(z)
        ctx = self.context(context, iso, camera, noise=z, nlf=nlf)
        return self._transform(True, z.to(ctx.clean.device), ctx)[0]

    def log_prob(self, x: Tensor, context: Tensor | NoiseContext = None, iso: Any = None, camera: Any = None,
                 nlf: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(noise | clean, iso, camera)`` in nats per patch, ``[B]``."""
        z, logdet = self.encode(x, context, iso, camera, nlf=nlf)
        return self.prior.log_prob(z) + logdet

    def nll_per_dim(self, x: Tensor, context: Tensor | NoiseContext = None, iso: Any = None, camera: Any = None,
                    nlf: Any = None) -> Tensor:
        """Negative log-likelihood in nats per dimension, ``[B]``."""
        x = _batched(x)
        return -self.log_prob(x, context, iso, camera, nlf=nlf) / x[0].numel()

    def forward(self, x: Tensor, context: Tensor | NoiseContext = None, iso: Any = None,
                camera: Any = None, nlf: Any = None) -> Tensor:
        return self.log_prob(x, context, iso, camera, nlf=nlf)

    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        return tuple(context.clean.shape)

    @torch.no_grad()
    def sample(self, context: Tensor | NoiseContext | int | None = None, iso: Any = None, camera: Any = None,
               temperature: float = 1.0, generator: torch.Generator | None = None, nlf: Any = None, *,
               num_samples: int | None = None) -> Tensor:
        """Noise samples ``[B, 4, H, W]`` for the context's batch: ``z = temperature·ε``, then latent → noise."""
        if context is None or isinstance(context, int) or num_samples is not None:
            raise InputError(f"{type(self).__name__} is conditional: sample(context) draws one noise patch per "
                             "clean patch of the context.", "pass a NoiseContext or clean, iso and camera.")
        temperature = check_temperature(temperature)
        check_generator(generator)
        ctx = self.context(context, iso, camera, nlf=nlf)
        y = ctx.clean
        if generator is None:  # randn_like also traces under torch.compile with a dynamic batch size
            eps = torch.randn_like(y, memory_format=torch.contiguous_format)
        else:
            eps = torch.randn(tuple(y.shape), generator=generator, dtype=y.dtype, device=generator.device).to(y.device)
        return self._transform(True, eps if temperature == 1.0 else eps * temperature, ctx)[0]  # eps is fresh

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None,
                       size: int = 8) -> tuple[Tensor, NoiseContext]:
        """Noise ``[B, 4, size, size]`` (std 0.02) and a context of valid ISOs and cameras."""
        gen = generator or torch.Generator().manual_seed(0)
        clean = torch.rand(batch_size, 4, size, size, generator=gen) * 0.9 + 0.05
        isos = [(100, 1600, 800, 3200)[i % 4] for i in range(batch_size)]
        cams = [(2, 0, 3, 1)[i % 4] for i in range(batch_size)]
        noise = torch.randn(batch_size, 4, size, size, generator=gen) * 0.02
        return noise, NoiseContext.create(clean, isos, cams)
