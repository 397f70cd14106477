"""Elementwise scaling by a function of the context: ``z = x / σ(context)`` (the bijector of every Gaussian
baseline: a fixed-form density is a flow too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.flows.base import Bijector, sum_except_batch

__all__ = ["ContextScale"]


class ContextScale(Bijector):
    """``z = x / σ``, ``log|det| = −Σ log σ``, with ``σ = scale(context, x)`` broadcastable to ``x`` and > 0.

    Args:
        scale: an ``nn.Module`` (registered, its parameters are this layer's) or any callable
            ``(context, x) -> σ``; pass a bound method of the owning model to keep the parameters there
            (no module cycle, state-dict keys unchanged).
    """

    def __init__(self, scale: nn.Module | Callable[[Any, Tensor], Tensor]) -> None:
        super().__init__()
        self.scale = scale  # a Module is registered as a submodule; a plain callable is just stored

    def _sigma(self, context: Any, x: Tensor) -> Tensor:
        return self.scale(context, x).to(device=x.device, dtype=x.dtype).expand_as(x)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self._sigma(context, x)
        return x / s, -sum_except_batch(torch.log(s))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self._sigma(context, z)
        return z * s, sum_except_batch(torch.log(s))
