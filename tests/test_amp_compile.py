"""Mixed precision keeps log-dets in float32; bf16 training tracks fp32 training; torch.compile trains the same model.

Every run below trains the same tiny Glow from the same seed, so batches, dequantisation noise and the
data-dependent initialisation are identical and only the arithmetic differs. Losses are bits/dim (about 8.2 here).
Tolerances, with what 2 CPU cores measured:
- bf16 autocast vs fp32 (eager): every logged loss within 5e-3 (measured 1.1e-3), the final evaluation within 5e-3
  (measured 2e-4), and the losses are not bit-identical (autocast really computed in bf16);
- compiled vs eager (both bf16, the `--amp bf16 --compile` combination): every logged loss within 1e-3 (measured
  2e-4), the final evaluation within 1e-3, and the final weights within 10 % of the distance training moved them
  (measured 2 %; a compiled step that did not update the weights would be at 100 %).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from visionflows.flows import Compose
from visionflows.glow import GlowImageTask, glow_step
from visionflows.training import TrainConfig, TrainResult, train

STEPS = 6


def test_logdet_stays_float32_under_bf16_autocast():
    flow = Compose(*[glow_step(4, 8) for _ in range(2)])
    x = torch.randn(2, 4, 4, 4)
    flow.train()
    flow(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, ld = flow(x)
    assert ld.dtype == torch.float32
    # at initialisation the couplings' zero convolutions give the same log-scales in bf16: equal log-dets
    torch.testing.assert_close(ld, flow(x)[1])
    with torch.no_grad():  # away from it, the bf16 networks move the log-det by bf16 rounding only (~4e-3 of ~15)
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ld = flow(x)[1]
    assert ld.dtype == torch.float32
    torch.testing.assert_close(ld, flow(x)[1], rtol=0.0, atol=0.02)


def _run(run_dir, steps: int = STEPS, quiet: bool = True, **cfg) -> TrainResult:
    if quiet:  # the warning for CPUs that emulate bf16 has its own test
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bf16 autocast on a CPU without native bf16")
            return _run(run_dir, steps, quiet=False, **cfg)
    images = torch.randint(0, 256, (8, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    task = GlowImageTask(images, resolution=8, levels=2, steps=1, width=8, batch_size=4, test_images=images)
    config = TrainConfig(steps=steps, lr=3e-3, progress=False, tensorboard=False, checkpoint_every=max(steps, 1),
                         log_every=1, device="cpu", **cfg)
    return train(task, config, run_dir)


def _losses(result: TrainResult) -> list[float]:
    rows = [r for r in result.history if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


def _flat(result: TrainResult) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in result.model.parameters()])


@pytest.fixture(scope="module")
def eager(tmp_path_factory) -> dict[str, TrainResult]:
    root = tmp_path_factory.mktemp("amp")
    return {"init": _run(root / "init", steps=0), "fp32": _run(root / "fp32"), "bf16": _run(root / "bf16", amp="bf16")}


def test_bf16_training_tracks_fp32(eager):
    fp32, bf16 = _losses(eager["fp32"]), _losses(eager["bf16"])
    gaps = [abs(a - b) for a, b in zip(fp32, bf16)]
    assert max(gaps) < 5e-3, gaps
    assert max(gaps) > 1e-5, "bf16 losses equal the fp32 ones bit for bit: autocast did not run"
    before = eager["init"].eval_metrics["bits_per_dim"]
    after32, after16 = eager["fp32"].eval_metrics["bits_per_dim"], eager["bf16"].eval_metrics["bits_per_dim"]
    assert after32 < before - 0.03, (before, after32)  # training moved the model, so the comparison means something
    assert abs(after16 - after32) < 5e-3, (after32, after16)
    assert all(torch.isfinite(p).all() for p in eager["bf16"].model.parameters())


@pytest.mark.slow
def test_compiled_bf16_training_matches_eager(eager, tmp_path):
    compiled = _run(tmp_path / "compiled", amp="bf16", compile=True)
    assert compiled.step == STEPS
    gaps = [abs(a - b) for a, b in zip(_losses(eager["bf16"]), _losses(compiled))]
    assert max(gaps) < 1e-3, gaps
    assert abs(compiled.eval_metrics["bits_per_dim"] - eager["bf16"].eval_metrics["bits_per_dim"]) < 1e-3
    moved = float((_flat(eager["bf16"]) - _flat(eager["init"])).norm())
    apart = float((_flat(compiled) - _flat(eager["bf16"])).norm())
    assert apart < 0.1 * moved, (apart, moved)


def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, monkeypatch):
    from visionflows.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        _run(tmp_path / "emulated", steps=1, quiet=False, amp="bf16")
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _run(tmp_path / "native", steps=1, quiet=False, amp="bf16")
