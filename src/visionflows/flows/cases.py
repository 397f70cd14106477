"""Harness cases for the core layers (see :mod:`visionflows.testing`)."""

from __future__ import annotations

import torch

from visionflows.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    HaarStep,
    Inverse,
    InvertibleConv1x1,
    LUInvertibleConv1x1,
    Squeeze,
    conv_net_factory,
)
from visionflows.testing import BijectorCase, register_case


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@register_case
def actnorm() -> BijectorCase:
    return BijectorCase("actnorm", lambda: ActNorm(3), _x(4, 3, 4, 4) * 2 + 1)


@register_case
def actnorm_scale_factor3() -> BijectorCase:
    return BijectorCase("actnorm_scale_factor3", lambda: ActNorm(5, scale_factor=3.0), _x(3, 5, 3, 3))


@register_case
def conv1x1() -> BijectorCase:
    return BijectorCase("conv1x1", lambda: InvertibleConv1x1(4), _x(2, 4, 4, 4))


@register_case
def conv1x1_lu() -> BijectorCase:
    return BijectorCase("conv1x1_lu", lambda: LUInvertibleConv1x1(4), _x(2, 4, 4, 4))


@register_case
def conv1x1_lu_row_vector() -> BijectorCase:
    return BijectorCase("conv1x1_lu_row_vector", lambda: LUInvertibleConv1x1(3, row_vector=True), _x(2, 3, 4, 4))


@register_case
def affine_coupling() -> BijectorCase:
    return BijectorCase(
        "affine_coupling", lambda: AffineCoupling(4, conv_net_factory(8), learn_scale_bound=True), _x(2, 4, 4, 4)
    )


@register_case
def affine_coupling_conditional_shift_first() -> BijectorCase:
    return BijectorCase(
        "affine_coupling_conditional_shift_first",
        lambda: AffineCoupling(5, conv_net_factory(8), split=2, context_channels=3, shift_first=True),
        _x(2, 5, 4, 4),
        context=_x(2, 3, 4, 4, seed=1),
    )


@register_case
def additive_coupling_conditional() -> BijectorCase:
    return BijectorCase(
        "additive_coupling_conditional",
        lambda: AdditiveCoupling(4, conv_net_factory(8), context_channels=2),
        _x(2, 4, 4, 4),
        context=_x(2, 2, 4, 4, seed=1),
    )


@register_case
def squeeze() -> BijectorCase:
    return BijectorCase("squeeze", lambda: Squeeze(), _x(2, 3, 4, 4))


@register_case
def haar_orthonormal() -> BijectorCase:
    return BijectorCase("haar_orthonormal", lambda: HaarStep(), _x(2, 3, 4, 4))


@register_case
def haar_compensated() -> BijectorCase:
    return BijectorCase("haar_compensated", lambda: HaarStep(compensate=True), _x(2, 3, 8, 8))


@register_case
def glow_step_compose() -> BijectorCase:
    return BijectorCase(
        "glow_step_compose",
        lambda: Compose(ActNorm(4), LUInvertibleConv1x1(4), AffineCoupling(4, conv_net_factory(8))),
        _x(3, 4, 4, 4),
    )


@register_case
def inverse_of_squeeze_compose() -> BijectorCase:
    return BijectorCase(
        "inverse_of_conv_and_coupling",
        lambda: Inverse(Compose(InvertibleConv1x1(4), AffineCoupling(4, conv_net_factory(8)))),
        _x(2, 4, 4, 4),
    )


@register_case
def glow_multiscale_transform() -> BijectorCase:
    from visionflows.glow import GlowTransform

    return BijectorCase(
        "glow_multiscale_transform", lambda: GlowTransform(3, 8, levels=2, steps=2, width=8), _x(2, 3, 8, 8) * 0.3
    )


class _LogScaleNet(torch.nn.Module):
    """A tiny conditioning network for the ContextScale case: σ = exp(conv(context))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)

    def forward(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * self.conv(context))


@register_case
def context_scale() -> BijectorCase:
    from visionflows.flows import ContextScale

    return BijectorCase("context_scale", lambda: ContextScale(_LogScaleNet()), _x(2, 3, 4, 4),
                        context=_x(2, 2, 4, 4, seed=1))
