"""Harness cases for Wavelet Flow's invertible parts (see :mod:`visionflows.testing`)."""

from __future__ import annotations

import torch

from visionflows.flows import AffineCoupling
from visionflows.testing import BijectorCase, register_case
from visionflows.wavelet.level import WaveletLevel, coupling_net_factory
from visionflows.wavelet.model import WaveletFlow

__all__: list[str] = []


# The harness perturbs every weight by 0.1·randn (the hidden convs are initialised with std 0.05 and their
# ActNorms were DDI-initialised before the perturbation), so the perturbed residual nets produce shifts of
# 10–10³ and float32 round trips lose precision by cancellation. The float64 checks stay at 1e-10.
_RTOL32 = 5e-3


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@register_case
def wavelet_conditional_coupling() -> BijectorCase:
    """The level-L coupling: split 4 | 5 of 9 detail channels, residual net sees [x1, I_{L−1}]."""
    return BijectorCase(
        "wavelet_conditional_coupling",
        lambda: AffineCoupling(9, coupling_net_factory(8, 2), split=4, context_channels=3, shift_first=True),
        _x(2, 9, 4, 4),
        context=_x(2, 3, 4, 4, seed=1),
    )


@register_case
def wavelet_coupling_winograd() -> BijectorCase:
    """The level coupling at 8×8 and width 16: on the CPU in float32 its 3×3 convolutions run as Winograd
    F(4×4, 3×3) with the vectorised kernels (``visionflows.wavelet.winograd``); float64 checks use direct ones."""
    return BijectorCase(
        "wavelet_coupling_winograd",
        lambda: AffineCoupling(9, coupling_net_factory(16, 2), split=4, context_channels=3, shift_first=True),
        _x(1, 9, 8, 8, seed=5),
        context=_x(1, 3, 8, 8, seed=6),
        rtol32=_RTOL32,
    )


@register_case
def wavelet_conditional_level() -> BijectorCase:
    """A full level-3 transform (2 steps + prior ActNorm) on D_2 [2, 9, 4, 4] given I_2 [2, 3, 4, 4]."""
    return BijectorCase(
        "wavelet_conditional_level",
        lambda: WaveletLevel(3, 3, channels=3, steps=2, width=8, res_blocks=1).transform,
        _x(2, 9, 4, 4, seed=2),
        context=_x(2, 3, 4, 4, seed=3),
        rtol32=_RTOL32,
    )


@register_case
def wavelet_level0() -> BijectorCase:
    """Level 0: the unconditional flow of I_0 (3 channels, 1×1)."""
    return BijectorCase(
        "wavelet_level0",
        lambda: WaveletLevel(0, 3, channels=3, steps=2, width=8, res_blocks=1).transform,
        _x(8, 3, 1, 1, seed=4),
        rtol32=_RTOL32,
    )


@register_case
def wavelet_pyramid() -> BijectorCase:
    """The whole pyramid's bijective part on [4, 3, 8, 8] (flows of all 4 levels + Haar compensation)."""
    return BijectorCase(
        "wavelet_pyramid",
        lambda: WaveletFlow(8, channels=3, steps=1, widths=4, res_blocks=1).pyramid(),
        _x(4, 3, 8, 8, seed=5),
        rtol32=_RTOL32,
    )


@register_case
def wavelet_pyramid_grey() -> BijectorCase:
    """Greyscale pyramid (level 0 is a learned Gaussian, no transform) on [4, 1, 8, 8]."""
    return BijectorCase(
        "wavelet_pyramid_grey",
        lambda: WaveletFlow(8, channels=1, steps=1, widths=4, res_blocks=1).pyramid(),
        _x(4, 1, 8, 8, seed=6),
        rtol32=_RTOL32,
    )
