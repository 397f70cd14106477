"""The fused coupling-network fast path of Wavelet Flow levels matches the plain conv → ActNorm → ReLU chain."""

from __future__ import annotations

import pytest
import torch

from visionflows.flows import ActNorm
from visionflows.wavelet.level import WaveletLevel, set_fused


def _level(dtype: torch.dtype) -> tuple[WaveletLevel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    level = WaveletLevel(3, 3, channels=3, steps=2, width=16, res_blocks=2).to(dtype)
    data = torch.randn(4, 9, 4, 4, dtype=dtype)
    cond = torch.randn(4, 3, 4, 4, dtype=dtype)
    level.train()
    with torch.no_grad():
        level.flow_log_prob(data, cond)  # DDI
        for p in level.parameters():  # leave the zero-initialised identity start
            p.add_(0.05 * torch.randn_like(p))
    return level, data, cond


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_matches_plain(dtype: torch.dtype) -> None:
    level, data, cond = _level(dtype)
    lp_fused = level.flow_log_prob(data, cond)
    grads_fused = torch.autograd.grad(lp_fused.sum(), list(level.parameters()))
    set_fused(level, False)
    lp_plain = level.flow_log_prob(data, cond)
    grads_plain = torch.autograd.grad(lp_plain.sum(), list(level.parameters()))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(lp_fused, lp_plain, rtol=tol, atol=tol)
    for gf, gp in zip(grads_fused, grads_plain):
        torch.testing.assert_close(gf, gp, rtol=tol, atol=tol * max(1.0, float(gp.abs().max())))


def test_fused_ddi_then_round_trip() -> None:
    level = WaveletLevel(2, 2, channels=3, steps=2, width=8, res_blocks=1)
    level.train()
    data, cond = torch.randn(8, 9, 2, 2), torch.randn(8, 3, 2, 2)
    level.flow_log_prob(data, cond)
    norms = [m for m in level.modules() if isinstance(m, ActNorm)]
    assert all(bool(m.initialized) for m in norms if m.scale_factor == 3.0 and m is not level.transform.layers[-1])
    z, _ = level.transform(data, cond)
    x, _ = level.transform.inverse(z, cond)
    torch.testing.assert_close(x, data, rtol=1e-4, atol=1e-4)


def test_actnorm_init_flag_follows_state_dict() -> None:
    an = ActNorm(3)
    an.train()
    assert an.needs_init()
    an(torch.randn(4, 3, 2, 2))
    assert not an.needs_init()
    fresh = ActNorm(3).state_dict()
    an.load_state_dict(fresh)  # an uninitialised state: DDI must run again
    assert an.needs_init()
    an.eval()
    assert not an.needs_init()
