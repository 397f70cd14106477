"""Harness cases of the Noise Flow layers (run by ``tests/test_harness.py``)."""

from __future__ import annotations

import torch

from visionflows.noise.context import NoiseContext
from visionflows.noise.layers import GainLayer, SignalDependentLayer, unconditional_step
from visionflows.noise.model import PARAM_PRESETS, NoiseFlow
from visionflows.noise.param_layers import ParamGainLayer, ParamSignalLayer
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


def _param_context(per_channel: bool = True) -> NoiseContext:
    """:func:`example_context` with measured noise parameters: ``[B, 4, 2]`` per channel, or ``[B, 2]``."""
    ctx = example_context()
    k = torch.tensor([[2e-4, 1e-4, 3e-4, 1e-4], [8e-4, 5e-4, 9e-4, 5e-4]], dtype=torch.float64)
    nlf = torch.stack([k, k * 3e-2], dim=-1)
    return ctx.with_nlf(nlf if per_channel else nlf[:, 0])


def _perturbed(layer: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # away from the zero initialisation, so every parameter matters
        for p in layer.parameters():
            p.copy_(torch.linspace(-0.3, 0.4, p.numel()).reshape(p.shape))
    return layer


@register_case
def noise_sdnp() -> BijectorCase:
    return BijectorCase("noise_sdnp", lambda: _perturbed(ParamSignalLayer()), _noise(), context=_param_context())


@register_case
def noise_sdnp_one_pair() -> BijectorCase:
    return BijectorCase("noise_sdnp_one_pair", lambda: _perturbed(ParamSignalLayer()), _noise(),
                        context=_param_context(per_channel=False))


@register_case
def noise_gainp() -> BijectorCase:
    return BijectorCase("noise_gainp", lambda: _perturbed(ParamGainLayer()), _noise(), context=_param_context())


@register_case
def noise_flow_nlf_transform() -> BijectorCase:
    return BijectorCase("noise_flow_nlf_transform", lambda: NoiseFlow(PARAM_PRESETS["noiseflow_nlf"][0]).transform,
                        _noise(scale=0.01), context=_param_context())
