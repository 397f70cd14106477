"""Per-level training task, independent level jobs, assembly from checkpoints at different steps."""

from __future__ import annotations

import math

import pytest
import torch

from visionflows.errors import CheckpointError, ConfigError
from visionflows.training import TrainTask
from visionflows.wavelet import create_model
from visionflows.wavelet.train import WaveletLevelTask, assemble, level_run_dir, train_all_levels, train_level


def _data(n: int = 12, r: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, r, r), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_task_protocol_crops_and_loss():
    task = WaveletLevelTask("tiny_8", 3, _data(), batch_size=4)
    assert isinstance(task, TrainTask)
    assert task.crop == 2 and task.crop_size == 4  # tiny_8 crops level 3 by 2
    b1 = task.batch(0, torch.Generator().manual_seed(1))
    b2 = task.batch(0, torch.Generator().manual_seed(1))
    assert torch.equal(b1[0], b2[0]) and b1[1] == b2[1] and b1[0].shape == (4, 3, 4, 4)
    model = task.build_model()
    model.train()
    loss, metrics = task.loss(model, b1)
    # loss is the level's bits/dim over the actual (cropped) dims: 9 channels × 2×2
    level_bpd = model.bits_per_dim_level(b1[0], torch.Generator().manual_seed(b1[1]))
    assert math.isclose(float(loss.detach()), float(level_bpd.detach().mean()), rel_tol=1e-6)
    assert float(metrics["per_dim"]) == float(loss.detach())
    assert model.dims_for(b1[0]) == 36
    ev = task.evaluate(model.eval())
    assert set(ev) == {"bpd", "contrib_bpd"} and math.isclose(ev["contrib_bpd"], ev["bpd"] * 144 / 192)
    cfg = task.config()
    assert cfg["level"] == 3 and cfg["crop"] == 2
    with pytest.raises(ConfigError):
        WaveletLevelTask("tiny_8", 7, _data())


def test_train_levels_independently_and_assemble(tmp_path):
    root = tmp_path / "run"
    data = _data()
    steps = {0: 3, 1: 2, 2: 4, 3: 3}
    for lv, n in steps.items():
        res = train_level("tiny_8", lv, level_run_dir(root, lv), data=data, steps=n, batch_size=4,
                          progress=False, tensorboard=False, warmup_steps=2)
        assert res.step == n
    model = assemble(root)
    assert model.n_levels == 3 and model.name == "tiny_8"
    for lv, n in steps.items():
        assert f"step {n}" in model.level_sources[lv] and f"level_{lv}" in model.level_sources[lv]
    out = model.bits_per_dim(data[:4], torch.Generator().manual_seed(0))
    assert torch.isfinite(out["total"]).all()
    # the assembled level equals the level trained alone
    from visionflows.wavelet.train import load_wavelet

    alone = load_wavelet(level_run_dir(root, 2))
    with torch.no_grad():
        a = alone.log_prob_level(data[:4], torch.Generator().manual_seed(1))
        b = model.levels[2].log_prob_level(data[:4], torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # a dict of checkpoints works too
    m2 = assemble({lv: level_run_dir(root, lv) for lv in steps})
    assert m2.level_sources == model.level_sources

    # a missing level is a clear error naming it; sampling can use a partial model
    import shutil

    shutil.rmtree(level_run_dir(root, 3))
    with pytest.raises(CheckpointError, match=r"level\(s\) \[3\]"):
        assemble(root)
    partial = assemble(root, require=())
    assert partial.level_sources[3] == "untrained"
    assert [s.shape[-1] for s in partial.sample_pyramid(2, resolution=4)] == [1, 2, 4]
    with pytest.raises(CheckpointError, match=r"level\(s\) \[3\]"):
        partial.sample(2)


def test_resume_continues_a_level(tmp_path):
    run = tmp_path / "level_1"
    train_level("tiny_8", 1, run, data=_data(), steps=2, batch_size=4, progress=False, tensorboard=False)
    res = train_level("tiny_8", 1, run, data=_data(), steps=4, batch_size=4, progress=False, tensorboard=False,
                      resume=True)
    assert res.step == 4


@pytest.mark.slow
def test_train_all_levels_runs_separate_processes(tmp_path):
    root = tmp_path / "all"
    codes = train_all_levels("tiny_8", root, parallel=2, levels=[0, 1], steps=2, threads=1,
                             extra_args=["--batch-size", "4"])
    assert codes == {0: 0, 1: 0}
    model = assemble(root, require=[0, 1])
    assert "step 2" in model.level_sources[0] and model.level_sources[2] == "untrained"
    assert (root / "logs" / "level_1.log").is_file()


def test_sum_of_level_losses_is_model_bpd():
    model = create_model("tiny_8")
    data = _data(4)
    model.train()
    model.log_prob(data, torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        total = model.bits_per_dim(data, torch.Generator().manual_seed(2))["total"]
        contrib = 0.0
        for lv, level in enumerate(model.levels):
            bpd = level.bits_per_dim_level(data, torch.Generator().manual_seed(2))
            contrib = contrib + bpd * model.level_dims()[lv] / model.num_dims
    assert float((contrib - total).abs().max()) < 1e-4
