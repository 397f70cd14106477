"""Harness cases of the Noise Flow layers (run by ``tests/test_harness.py``)."""

from __future__ import annotations

import torch

from visionflows.noise.context import NoiseContext
from visionflows.noise.layers import GainLayer, SignalDependentLayer, unconditional_step
from visionflows.noise.model import NoiseFlow
from visionflows.testing import BijectorCase, register_case

__all__ = ["example_context"]


def example_context(batch: int = 2, size: int = 8, seed: int = 0, isos=(100, 1600), cameras=(2, 0)) -> NoiseContext:
    """A deterministic NoiseContext ``[batch, 4, size, size]`` for tests."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 4, size, size, generator=gen) * 0.9 + 0.05
    iso = torch.tensor([isos[i % len(isos)] for i in range(batch)])
    cam = torch.tensor([cameras[i % len(cameras)] for i in range(batch)])
    return NoiseContext.create(clean, iso, cam, allowed_isos=None)


def _noise(batch: int = 2, size: int = 8, seed: int = 1, scale: float = 0.02) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, size, size, generator=gen) * scale


@register_case
def noise_sdn5() -> BijectorCase:
    return BijectorCase("noise_sdn5", lambda: SignalDependentLayer(), _noise(), context=example_context())


@register_case
def noise_sdn4() -> BijectorCase:
    return BijectorCase("noise_sdn4", lambda: SignalDependentLayer(camera_params=False), _noise(),
                        context=example_context())


@register_case
def noise_sdn5_continuous_iso() -> BijectorCase:
    ctx = example_context(isos=(250, 6400), cameras=(1, 4))
    return BijectorCase("noise_sdn5_continuous_iso", lambda: SignalDependentLayer(continuous_iso=True), _noise(),
                        context=ctx)


@register_case
def noise_gain4() -> BijectorCase:
    return BijectorCase("noise_gain4", GainLayer, _noise(), context=example_context())


@register_case
def noise_unc_step() -> BijectorCase:
    return BijectorCase("noise_unc_step", lambda: unconditional_step(4, 4, torch.Generator().manual_seed(0)),
                        _noise(scale=1.0), context=example_context())


@register_case
def noise_flow_transform() -> BijectorCase:
    return BijectorCase("noise_flow_transform", lambda: NoiseFlow(seed=0).transform, _noise(scale=1.0),
                        context=example_context())
