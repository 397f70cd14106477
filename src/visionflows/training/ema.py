"""Exponential moving average of a model's weights (floating parameters and buffers)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """``shadow ← decay·shadow + (1 − decay)·weights`` after every optimiser step.

    Floating parameters and buffers are averaged; integer/bool buffers (``num_batches_tracked``, ActNorm's
    ``initialized``) are copied. ``shadow`` is a full copy of the model, usable for evaluation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = model.state_dict()
        for name, avg in self.shadow.state_dict().items():
            cur = src[name]
            if avg.is_floating_point():
                avg.lerp_(cur.to(avg.dtype), 1.0 - self.decay)
            else:
                avg.copy_(cur)
