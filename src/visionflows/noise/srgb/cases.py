"""Harness cases of the sRGB Noise Flow layers (run by ``tests/test_harness.py``)."""

from __future__ import annotations

import torch

from visionflows.noise.srgb.context import SRGBContext
from visionflows.noise.srgb.layers import (
    CheckerboardCoupling,
    ConditionalAffineCoupling,
    ConditionalLinear,
    FixedScale,
    SignalDependentScale,
    cac_step,
)
from visionflows.testing import BijectorCase, register_case

__all__ = ["example_srgb_context"]


def example_srgb_context(batch: int = 2, size: int = 6, seed: int = 0, n_iso: int = 3, n_cam: int = 3) -> SRGBContext:
    """A deterministic :class:`SRGBContext` ``[batch, 3, size, size]`` mixing known and unknown (0) entries."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 3, size, size, generator=gen)
    iso = torch.tensor([i % n_iso for i in range(batch)])
    cam = torch.tensor([(i + 1) % n_cam for i in range(batch)])
    return SRGBContext(clean, iso, cam, n_iso, n_cam)


def _noise(batch: int = 2, size: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 3.0


@register_case
def srgb_fixed_scale() -> BijectorCase:
    return BijectorCase("srgb_fixed_scale", lambda: FixedScale(4.0), _noise())


@register_case
def srgb_sdl() -> BijectorCase:
    return BijectorCase("srgb_sdl", lambda: SignalDependentScale(3, 3), _noise(), context=example_srgb_context())


@register_case
def srgb_cl2() -> BijectorCase:
    return BijectorCase("srgb_cl2", lambda: ConditionalLinear(3, 3), _noise(), context=example_srgb_context())


@register_case
def srgb_cac_coupling() -> BijectorCase:
    return BijectorCase("srgb_cac_coupling", lambda: ConditionalAffineCoupling(3, 3, width=4), _noise(),
                        context=example_srgb_context())


@register_case
def srgb_cac_step() -> BijectorCase:
    return BijectorCase("srgb_cac_step", lambda: cac_step(3, 3, 4, torch.Generator().manual_seed(0)), _noise(),
                        context=example_srgb_context())


@register_case
def srgb_cac_actnorm() -> BijectorCase:
    return BijectorCase("srgb_cac_actnorm", lambda: ConditionalAffineCoupling(3, 3, width=4, norm="act"), _noise(),
                        context=example_srgb_context())


@register_case
def srgb_checkerboard_even() -> BijectorCase:
    return BijectorCase("srgb_checkerboard_even", lambda: CheckerboardCoupling(3, 3, width=4, parity=0), _noise(),
                        context=example_srgb_context())


@register_case
def srgb_checkerboard_odd_actnorm() -> BijectorCase:
    return BijectorCase("srgb_checkerboard_odd_actnorm",
                        lambda: CheckerboardCoupling(3, 3, width=4, parity=1, norm="act"), _noise(size=7),
                        context=example_srgb_context(size=7))


@register_case
def srgb_flow_transform() -> BijectorCase:
    """A whole sRGB Noise Flow transform with every layer type (fixed scale, SDL, CL2, both checkerboard couplings,
    LU 1×1 convolution, CAC), which takes the native kernel in evaluation mode."""
    from visionflows.noise.srgb.model import SRGBNoiseFlow

    def make() -> torch.nn.Module:
        return SRGBNoiseFlow("SDL|CL2|SPC|CAC", 4, ["a", "b"], [100, 800], noise_std=3.0, norm="act").transform

    return BijectorCase("srgb_flow_transform", make, _noise(size=5), context=example_srgb_context(size=5))
