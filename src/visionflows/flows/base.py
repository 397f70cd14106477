"""The bijector contract shared by every invertible layer in visionflows.

Direction convention (the same for every layer, model and document of this project):

* ``forward(x, context=None) -> (z, logdet)`` maps **data → latent**. ``logdet`` is
  ``log|det dz/dx|`` per sample, a tensor of shape ``[B]``.
* ``inverse(z, context=None) -> (x, logdet)`` maps **latent → data** and returns ``log|det dx/dz|``, so the two
  log-dets of a round trip sum to zero.

Invariants every subclass MUST keep:

* tensors are NCHW (or ``[B, D]`` for vector layers); the batch dimension is never mixed;
* the log-det starts from ``x.new_zeros(B)`` (so it follows device and dtype) and is accumulated in float32 or
  better, also under autocast (see :func:`logdet_dtype`);
* nothing is logged or printed inside ``forward``/``inverse``;
* fixed tensors (kernels, permutations, masks) are buffers, never parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Bijector", "Compose", "Inverse", "logdet_dtype", "zeros_logdet", "sum_except_batch"]


def logdet_dtype(x: Tensor) -> torch.dtype:
    """The dtype log-dets are accumulated in: the input's, promoted to float32 for half precisions."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def zeros_logdet(x: Tensor) -> Tensor:
    """A zero log-det of shape ``[B]`` on ``x``'s device, in :func:`logdet_dtype`."""
    return torch.zeros(x.shape[0], device=x.device, dtype=logdet_dtype(x))


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first, in :func:`logdet_dtype` (``[B, ...] -> [B]``)."""
    return x.to(logdet_dtype(x)).reshape(x.shape[0], -1).sum(dim=1)


class Bijector(nn.Module):
    """Base class of every invertible layer; see the module docstring for the contract."""

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:  # data -> latent
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:  # latent -> data
        raise NotImplementedError


class Compose(Bijector):
    """A sequence of bijectors applied in order (data → latent); the inverse runs them backwards."""

    def __init__(self, *bijectors: Bijector | Iterable[Bijector]) -> None:
        super().__init__()
        flat: list[Bijector] = []
        for b in bijectors:
            if isinstance(b, Bijector):
                flat.append(b)
            else:
                flat.extend(b)
        self.layers = nn.ModuleList(flat)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Bijector:
        return self.layers[i]

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        logdet = zeros_logdet(x)
        for layer in self.layers:
            x, ld = layer(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        logdet = zeros_logdet(z)
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z, context)
            logdet = logdet + ld
        return z, logdet

    def trace(self, x: Tensor, context: Any = None) -> tuple[list[Tensor], list[Tensor]]:
        """Data → latent, returning the state and the cumulative log-det after every layer (for debugging)."""
        states, logdets = [x], [zeros_logdet(x)]
        for layer in self.layers:
            x, ld = layer(x, context)
            states.append(x)
            logdets.append(logdets[-1] + ld)
        return states, logdets


class Inverse(Bijector):
    """Swaps the two directions of a bijector."""

    def __init__(self, bijector: Bijector) -> None:
        super().__init__()
        self.bijector = bijector

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        return self.bijector.inverse(x, context)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        return self.bijector(z, context)


def check_nchw(x: Tensor, channels: int | None = None, name: str = "input") -> None:
    """Raise :class:`~visionflows.errors.InputError` unless ``x`` is ``[B, C, H, W]`` (with ``C == channels``)."""
    from visionflows.errors import InputError

    if x.dim() != 4:
        raise InputError(
            f"{name} must be a 4-D NCHW tensor [B, C, H, W], got shape {tuple(x.shape)}.",
            "add the batch dimension with x[None] or reshape to [B, C, H, W].",
        )
    if channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{name} has {x.shape[1]} channels, expected {channels} (shape {tuple(x.shape)}).",
            "pass tensors in NCHW layout with the channel count the model was built for.",
        )


def check_finite(x: Tensor, name: str = "input") -> None:
    """Raise :class:`~visionflows.errors.InputError` if ``x`` holds NaN or Inf."""
    from visionflows.errors import InputError

    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(
            f"{name} contains {bad} NaN/Inf value(s).",
            "clean the data first (e.g. torch.nan_to_num) or drop the affected samples.",
        )


def as_sequence(x: Sequence[int] | int, n: int) -> list[int]:
    """Broadcast an int to a list of length ``n`` (per-level configs)."""
    if isinstance(x, int):
        return [x] * n
    return list(x)
