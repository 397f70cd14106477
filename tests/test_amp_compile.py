"""Mixed precision keeps log-dets in float32; torch.compile trains the same model."""

from __future__ import annotations

import torch

from visionflows.flows import Compose
from visionflows.flows.glow import GlowImageTask, glow_step
from visionflows.training import TrainConfig, train


def test_logdet_stays_float32_under_bf16_autocast():
    flow = Compose(*[glow_step(4, 8) for _ in range(2)])
    x = torch.randn(2, 4, 4, 4)
    flow.train()
    flow(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, ld = flow(x)
    assert ld.dtype == torch.float32
    ref = flow(x)[1]
    assert torch.allclose(ld, ref, rtol=5e-2, atol=0.5)


def _task():
    images = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return GlowImageTask(images, resolution=8, levels=2, steps=1, width=8, batch_size=4)


def test_train_with_bf16_and_compile(tmp_path):
    cfg = TrainConfig(steps=3, lr=1e-3, amp="bf16", compile=True, progress=False, tensorboard=False,
                      checkpoint_every=3, device="cpu")
    result = train(_task(), cfg, tmp_path / "run")
    assert result.step == 3
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
