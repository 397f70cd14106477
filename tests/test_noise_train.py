"""NoiseFlowTask on the shared trainer: deterministic batches, decreasing loss, SIDD-style one-image batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionflows.noise.train import NoiseFlowTask
from visionflows.training import TrainConfig, train


def _data(n=64, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 4, size, size, generator=g) * 0.6 + 0.05
    noise = torch.randn(clean.shape, generator=g) * torch.sqrt(2e-3 * clean + 1e-5)
    return {"clean": clean, "noise": noise, "iso": torch.full((n,), 800), "camera": torch.full((n,), 2)}


def test_batches_are_deterministic_and_loss_is_per_dim():
    task = NoiseFlowTask(_data(), _data(seed=1), preset="noiseflow_s_g_cam", batch_size=16)
    b1 = task.batch(5, torch.Generator().manual_seed(7))
    b2 = task.batch(5, torch.Generator().manual_seed(7))
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    model = task.build_model()
    loss, metrics = task.loss(model, b1)
    expect = -model.log_prob(b1["noise"], b1["clean"], b1["iso"], b1["camera"]).mean() / 256
    loss, expect = float(loss.detach()), float(expect.detach())
    assert abs(loss - expect) < 1e-5 and metrics["per_dim"] == loss


@pytest.mark.slow
def test_training_lowers_test_nll(tmp_path):
    task = NoiseFlowTask(_data(), _data(seed=1), preset="noiseflow_s_ax1_g_ax1", batch_size=16, eval_batches=2,
                         eval_batch_size=16, init="official")
    before = task.evaluate(task.build_model())["test_nll"]
    cfg = TrainConfig(steps=40, lr=3e-2, progress=False, tensorboard=False, checkpoint_every=40, log_every=10)
    result = train(task, cfg, tmp_path / "run")
    after = result.eval_metrics["test_nll"]
    assert after < before - 0.5, (before, after)


class _FakeSidd:
    """Duck-typed SiddRawDataset: `images` and `load_image(image)` with one camera/ISO per image."""

    def __init__(self):
        self.images = list(range(3))
        self.loads = 0

    def load_image(self, image):
        self.loads += 1
        rng = np.random.default_rng(image)
        clean = rng.random((20, 4, 8, 8)).astype(np.float32) * 0.5
        return {"clean": clean, "noise": (rng.standard_normal(clean.shape) * 0.01).astype(np.float32),
                "iso": [100, 800, 1600][image], "camera": image, "nlf": (1e-3, 1e-6)}


def test_sidd_style_batches_come_from_one_image():
    data = _FakeSidd()
    task = NoiseFlowTask(data, None, preset="noiseflow_s_g_cam", batch_size=12, cache_images=2, image_window=10)
    for step in range(25):
        b = task.batch(step, torch.Generator().manual_seed(step))
        assert b["iso"].unique().numel() == 1 and b["camera"].unique().numel() == 1
        assert b["clean"].shape == (12, 4, 8, 8)
    assert data.loads <= 8  # cached per window
    assert task.evaluate(task.build_model()) == {}


def test_data_init_starts_near_a_heteroscedastic_fit():
    from visionflows.noise.baselines import HeteroscedasticNoise
    from visionflows.noise.simulator import make_simulated_dataset
    from visionflows.noise.train import NoiseFlowTask

    sim = make_simulated_dataset(6, 2, seed=3)
    # scored on the training patches: the fitted baseline knows exactly those camera/ISO pairs
    official = NoiseFlowTask(sim["train"], sim["train"], batch_size=16, eval_batches=None, init="official")
    data = NoiseFlowTask(sim["train"], sim["train"], batch_size=16, eval_batches=None, init="data")
    nll_official = official.evaluate(official.build_model().eval())["test_nll"]
    nll_data = data.evaluate(data.build_model().eval())["test_nll"]
    t = sim["train"].tensors()
    het = HeteroscedasticNoise().fit(t["noise"], t["clean"], t["iso"], t["camera"])
    nll_het = float(het.nll_per_dim(t["noise"], t["clean"], t["iso"], t["camera"]).detach().mean())
    assert nll_official > -1.0  # the official init is far from the data (sigma ~ 1)
    assert nll_data < nll_official - 1.0
    assert abs(nll_data - nll_het) < 0.3
