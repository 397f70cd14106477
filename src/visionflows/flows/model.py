"""A flow model: a bijector (data → latent) plus a prior, with exact encode/decode kept apart from sampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.flows.base import Bijector

__all__ = ["FlowModel"]


class FlowModel(nn.Module):
    """``log p(x | c) = log p_Z(f(x; c)) + log|det ∂f/∂x|``.

    Args:
        transform: the bijector ``f`` (data → latent).
        prior: a module with ``log_prob(z) -> [B]`` and ``sample(shape, temperature, generator, device, dtype)``.
        event_shape: the per-sample latent shape (e.g. ``(C, H, W)``) for unconditional sampling; conditional
            models may instead override :meth:`latent_shape`.
    """

    def __init__(self, transform: Bijector, prior: nn.Module, event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.transform = transform
        self.prior = prior
        self.event_shape = tuple(event_shape) if event_shape is not None else None

    # -- exact maps ---------------------------------------------------------------------------------
    def encode(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """Data → latent: ``(z, log|det ∂z/∂x| [B])``. Deterministic."""
        return self.transform(x, context)

    def decode(self, z: Tensor, context: Any = None) -> Tensor:
        """Latent → data, exactly (no sampling)."""
        return self.transform.inverse(z, context)[0]

    # -- densities ----------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Any = None) -> Tensor:
        """Log-density in nats per sample, ``[B]``."""
        z, logdet = self.encode(x, context)
        return self.prior.log_prob(z) + logdet

    def forward(self, x: Tensor, context: Any = None) -> Tensor:  # so DDP/compile wrap log_prob
        return self.log_prob(x, context)

    # -- sampling -----------------------------------------------------------------------------------
    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        """The full latent shape ``[B, ...]`` to sample for ``num_samples`` (or the context's batch)."""
        if self.event_shape is None:
            raise ValueError("this model has no event_shape; pass a context or override latent_shape")
        return (num_samples, *self.event_shape)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int | None = None,
        context: Any = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw samples: ``z = prior sample at temperature``, then decode. Give ``num_samples`` or a context."""
        if num_samples is None:
            if context is None:
                raise ValueError("give num_samples or a context")
            num_samples = _batch_of(context)
        ref = next(self.parameters(), None)
        device = ref.device if ref is not None else None
        dtype = ref.dtype if ref is not None else torch.float32
        z = self.prior.sample(self.latent_shape(num_samples, context), temperature, generator, device, dtype)
        return self.decode(z, context)


def _batch_of(context: Any) -> int:
    if isinstance(context, Tensor):
        return context.shape[0]
    if hasattr(context, "batch_size"):
        return int(context.batch_size)
    raise ValueError(f"cannot infer the batch size from a context of type {type(context).__name__}")
