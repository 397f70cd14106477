"""Coupling layers: affine (bounded log-scale) and additive, optionally conditioned on a tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.base import Bijector, sum_except_batch, zeros_logdet

__all__ = ["AffineCoupling", "AdditiveCoupling", "NetFactory", "zero_last_layer", "conv_net_factory", "ZeroConv2d"]

NetFactory = Callable[[int, int], nn.Module]
"""Builds a coupling network mapping ``in_channels -> out_channels`` (spatial size preserved)."""


def zero_last_layer(net: nn.Module) -> None:
    """Zero the weight and bias of the last module of ``net`` that has a ``weight`` (identity coupling at init)."""
    last = None
    for m in net.modules():
        if isinstance(getattr(m, "weight", None), torch.Tensor):
            last = m
    if last is None:
        raise ValueError("coupling network has no layer with a weight to zero-initialise")
    with torch.no_grad():
        last.weight.zero_()
        if getattr(last, "bias", None) is not None:
            last.bias.zero_()
        if isinstance(getattr(last, "logs", None), torch.Tensor):
            last.logs.zero_()


class ZeroConv2d(nn.Module):
    """3x3 conv whose output channel ``j`` is multiplied by ``exp(gain·logs[j])``; all zero at init (Glow)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, gain: float = 3.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.weight = self.conv.weight
        self.bias = self.conv.bias
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.gain = gain
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(self.gain * self.logs)


def conv_net_factory(hidden: int = 64, kernel_size: int = 3) -> NetFactory:
    """A small Glow/RealNVP coupling network: conv-ReLU, 1x1 conv-ReLU, zero-initialised :class:`ZeroConv2d`."""

    def make(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            ZeroConv2d(hidden, out_channels, kernel_size),
        )

    return make


class _Coupling(Bijector):
    def __init__(self, channels: int, split: int | None, context_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.split = channels // 2 if split is None else int(split)
        if not 0 < self.split < channels:
            raise ValueError(f"coupling split {self.split} must be in (0, {channels})")
        self.context_channels = int(context_channels)

    def _net_input(self, xa: Tensor, context: Any) -> Tensor:
        if self.context_channels == 0:
            return xa
        if not isinstance(context, Tensor):
            raise InputError(
                f"this coupling is conditional ({self.context_channels} context channels) but got "
                f"context of type {type(context).__name__}.",
                "pass the conditioning tensor [B, C_ctx, H, W] as context.",
            )
        if context.shape[0] != xa.shape[0] or context.shape[1] != self.context_channels or (
            context.shape[2:] != xa.shape[2:]
        ):
            raise InputError(
                f"context shape {tuple(context.shape)} does not match input {tuple(xa.shape)} with "
                f"{self.context_channels} context channels.",
                "give the context the batch size and spatial size of the input.",
            )
        return torch.cat([xa, context.to(xa.dtype)], dim=1)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InputError(f"coupling expects [B, {self.channels}, H, W], got shape {tuple(x.shape)}.")


class AffineCoupling(_Coupling):
    """Affine coupling (RealNVP/Glow) on a channel split ``x = [xa | xb]`` (``xa`` passes through).

    The network ``net_factory(split + context_channels, 2·(C − split))`` sees ``xa`` (and the context, if
    any, concatenated on channels) and outputs a shift ``t`` and a raw log-scale ``r``. The log-scale is
    bounded: ``ℓ = λ·tanh(r)`` with ``λ = scale_bound`` (learnable if ``learn_scale_bound``).

    * ``shift_first=False`` (Noise Flow / RealNVP): ``zb = xb·exp(ℓ) + t``; net output ``[t, r]``.
    * ``shift_first=True`` (Wavelet Flow): ``zb = (xb + t)·exp(ℓ)``; net output ``[r, t]``.

    ``log|det| = Σ ℓ``. The network's last layer is zero-initialised so the coupling starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        net_factory: NetFactory,
        split: int | None = None,
        context_channels: int = 0,
        scale_bound: float = 1.0,
        learn_scale_bound: bool = False,
        shift_first: bool = False,
        zero_init: bool = True,
    ) -> None:
        super().__init__(channels, split, context_channels)
        self.transformed = channels - self.split
        self.net = net_factory(self.split + self.context_channels, 2 * self.transformed)
        if zero_init:
            zero_last_layer(self.net)
        bound = torch.tensor(float(scale_bound))
        if learn_scale_bound:
            self.scale_bound = nn.Parameter(bound)
        else:
            self.register_buffer("scale_bound", bound)
        self.shift_first = bool(shift_first)

    def _params(self, xa: Tensor, context: Any) -> tuple[Tensor, Tensor]:
        h = self.net(self._net_input(xa, context))
        k = self.transformed
        if self.shift_first:
            raw, shift = h[:, :k], h[:, k:]
        else:
            shift, raw = h[:, :k], h[:, k:]
        log_scale = self.scale_bound.to(raw.dtype) * torch.tanh(raw)
        return shift, log_scale

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        xa, xb = x[:, : self.split], x[:, self.split :]
        shift, log_scale = self._params(xa, context)
        if self.shift_first:
            zb = (xb + shift) * torch.exp(log_scale)
        else:
            zb = xb * torch.exp(log_scale) + shift
        return torch.cat([xa, zb], dim=1), sum_except_batch(log_scale)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        za, zb = z[:, : self.split], z[:, self.split :]
        shift, log_scale = self._params(za, context)
        if self.shift_first:
            xb = zb * torch.exp(-log_scale) - shift
        else:
            xb = (zb - shift) * torch.exp(-log_scale)
        return torch.cat([za, xb], dim=1), -sum_except_batch(log_scale)


class AdditiveCoupling(_Coupling):
    """Additive (NICE) coupling: ``zb = xb + t(xa, context)``, log-det 0; last layer zero-initialised."""

    def __init__(
        self,
        channels: int,
        net_factory: NetFactory,
        split: int | None = None,
        context_channels: int = 0,
        zero_init: bool = True,
    ) -> None:
        super().__init__(channels, split, context_channels)
        self.net = net_factory(self.split + self.context_channels, channels - self.split)
        if zero_init:
            zero_last_layer(self.net)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        xa, xb = x[:, : self.split], x[:, self.split :]
        zb = xb + self.net(self._net_input(xa, context))
        return torch.cat([xa, zb], dim=1), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        za, zb = z[:, : self.split], z[:, self.split :]
        xb = zb - self.net(self._net_input(za, context))
        return torch.cat([za, xb], dim=1), zeros_logdet(z)

