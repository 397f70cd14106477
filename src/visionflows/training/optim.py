"""Optimisers and learning-rate schedules used by the papers."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["GlowAdamax", "linear_warmup", "build_optimizer"]


class GlowAdamax(torch.optim.Optimizer):
    """Glow's Adamax variant, as used by the official Wavelet Flow code (Kingma & Dhariwal 2018).

    For every parameter, at step ``t``::

        m ← β1·m + (1 − β1)·g
        u ← max(β2·u, |g|)
        w ← w − lr·sqrt(1 − β2^t)/(1 − β1^t) · m / (u + eps)

    It differs from :class:`torch.optim.Adamax` by the ``sqrt(1 − β2^t)`` factor and by keeping ``eps`` out of
    the max. Default ``β2 = 1 − 1/782`` (the official ``train_its × polyak_epochs``).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 1.0 - 1.0 / 782.0),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, u = state["exp_avg"], state["exp_inf"]
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                torch.maximum(u.mul_(beta2), p.grad.abs(), out=u)
                alpha = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.addcdiv_(m, u + group["eps"], value=-alpha)
        return loss


def linear_warmup(warmup_steps: int):
    """LambdaLR factor: ``min(1, (step + 1) / warmup_steps)`` (1 when ``warmup_steps <= 0``)."""

    def factor(step: int) -> float:
        if warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / warmup_steps)

    return factor


def build_optimizer(
    name: str, params: Iterable[Tensor], lr: float, betas: tuple[float, float] | None, weight_decay: float
) -> torch.optim.Optimizer:
    """``adam`` | ``adamw`` | ``adamax_glow`` (see :class:`GlowAdamax`)."""
    from visionflows.errors import ConfigError

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas or (0.9, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas or (0.9, 0.999), weight_decay=weight_decay)
    if name == "adamax_glow":
        return GlowAdamax(params, lr=lr, betas=betas or (0.9, 1.0 - 1.0 / 782.0))
    raise ConfigError(f"unknown optimizer {name!r}.", "use one of: adam, adamw, adamax_glow.")
