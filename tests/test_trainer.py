"""The shared trainer: checkpoints, exact resume after SIGKILL, DDP under torchrun, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _require import needs_kernels
from visionflows import kernels
from visionflows.errors import CheckpointError, ConfigError, OutputError
from visionflows.glow import GlowImageTask
from visionflows.io import load_model
from visionflows.training import GlowAdamax, TrainConfig, find_checkpoints, train

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_glow.py"


def _task(**kw) -> GlowImageTask:
    images = torch.randint(0, 256, (8, 3, 12, 12), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    return GlowImageTask(images, resolution=8, levels=2, steps=2, width=8, batch_size=4, test_images=images, **kw)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, lr=1e-3, checkpoint_every=3, progress=False, tensorboard=False, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_train_writes_versioned_checkpoints_and_config(tmp_path):
    result = train(_task(), _cfg(ema_decay=0.9, tensorboard=True), tmp_path / "run")
    run = tmp_path / "run"
    assert result.step == 6
    ckpts = find_checkpoints(run)
    assert [c.name for c in ckpts] == ["step-00000003", "step-00000006"]
    state = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    assert state["format_version"] == 1 and state["step"] == 6 and state["ema"] is not None
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps"] == 6 and cfg["task"]["resolution"] == 8
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and "per_dim" in rows[0]
    assert "eval_bits_per_dim" in rows[-1]
    assert any(p.name.startswith("events") for p in (run / "tb").iterdir())
    model = load_model(run)
    for k, v in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # ActNorm was initialised from data, and the flag persisted
    assert bool(model.transform.blocks[0].layers[1].layers[0].initialized)


@pytest.mark.slow
def test_training_reduces_bits_per_dim(tmp_path):
    task = _task()
    result = train(task, _cfg(steps=40, lr=3e-3, checkpoint_every=100), tmp_path / "run")
    first = result.history[0]["per_dim"]
    last = sum(r["per_dim"] for r in result.history[-5:] if "per_dim" in r) / 5
    assert last < first - 0.1


def test_refuses_non_empty_run_dir_without_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        train(_task(), _cfg(), run)
    train(_task(), _cfg(steps=1), run, overwrite=True)
    assert not (run / "something").exists()


def test_unknown_config_key_is_refused():
    with pytest.raises(ConfigError, match="unknown training config key"):
        TrainConfig.from_dict({"steps": 3, "learning_rate": 1e-3})


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        train(_task(), _cfg(steps=1), blocker / "run")


def test_resume_in_process_matches_uninterrupted(tmp_path):
    full = train(_task(), _cfg(steps=6, ema_decay=0.9, warmup_steps=4), tmp_path / "a")
    train(_task(), _cfg(steps=3, ema_decay=0.9, warmup_steps=4), tmp_path / "b")
    resumed = train(_task(), _cfg(steps=6, ema_decay=0.9, warmup_steps=4), tmp_path / "b", resume=True)
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    for k, v in full.ema_model.state_dict().items():
        assert torch.equal(resumed.ema_model.state_dict()[k], v), k


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    run = tmp_path / "run"
    train(_task(), _cfg(steps=3), run)
    ckpt = find_checkpoints(run)[-1]
    (ckpt / "state.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(_task(), _cfg(steps=6), run, resume=True)
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(ckpt)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    steps = 12
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(SCRIPT), str(ref), str(steps), "--dump", str(tmp_path / "ref.pt")],
                   check=True, env=_env())
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run), str(steps), "--sleep", "0.4"], env=_env())
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-00000004" / "state.pt").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.6)  # now mid-way between checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [c.name for c in find_checkpoints(run)]
    assert "step-00000012" not in done
    subprocess.run([sys.executable, str(SCRIPT), str(run), str(steps), "--resume", "--dump", str(tmp_path / "res.pt")],
                   check=True, env=_env())
    a = torch.load(str(tmp_path / "ref.pt") + ".rank0", weights_only=True)
    b = torch.load(str(tmp_path / "res.pt") + ".rank0", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # no temporary or half-written folders are left behind
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def _torchrun(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), *args]
    subprocess.run(cmd, check=True, env=_env(), timeout=240)


@pytest.mark.slow
def test_torchrun_two_processes_identical_init_and_weights(tmp_path):
    # steps=0: only the data-dependent initialisation runs
    _torchrun([str(tmp_path / "init"), "0", "--dump", str(tmp_path / "init.pt")])
    r0 = torch.load(str(tmp_path / "init.pt") + ".rank0", weights_only=True)
    r1 = torch.load(str(tmp_path / "init.pt") + ".rank1", weights_only=True)
    actnorm_keys = [k for k in r0 if k.endswith((".loc", ".log_scale")) and "priors" not in k]
    assert actnorm_keys
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert any(r0[k].abs().sum() > 0 for k in actnorm_keys), "ActNorm was not initialised"
    _torchrun([str(tmp_path / "run"), "4", "--dump", str(tmp_path / "run.pt")])
    w0 = torch.load(str(tmp_path / "run.pt") + ".rank0", weights_only=True)
    w1 = torch.load(str(tmp_path / "run.pt") + ".rank1", weights_only=True)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert any(not torch.equal(w0[k], r0[k]) for k in w0), "weights did not change"


def test_glow_adamax_matches_reference_update():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = GlowAdamax([w], lr=0.1, betas=(0.9, 0.99))
    m = torch.zeros(2)
    u = torch.zeros(2)
    ref = w.detach().clone()
    for t in range(1, 4):
        g = torch.tensor([0.5, -1.0]) * t
        w.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        u = torch.maximum(0.99 * u, g.abs())
        ref = ref - 0.1 * (1 - 0.99**t) ** 0.5 / (1 - 0.9**t) * m / (u + 1e-8)
    torch.testing.assert_close(w.detach(), ref)


@needs_kernels
def test_glow_adamax_native_update_matches_pytorch_ops(monkeypatch: pytest.MonkeyPatch):
    """The one-pass kernel (float32 CPU parameters) and the PyTorch ops give the same trajectory to float32
    rounding, for large and small parameters, a non-contiguous one (PyTorch path) and a NaN gradient (propagated)."""
    from visionflows.training import optim

    assert optim._optim_lib() is not None, kernels.build_error("optim")

    def run(native: bool) -> list[torch.Tensor]:
        if not native:
            monkeypatch.setattr(optim, "_optim_lib", lambda: None)
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(300, 400), (7,), (5, 6)]]
        params[2] = torch.nn.Parameter(params[2].detach().t())  # non-contiguous
        opt = GlowAdamax(params, lr=0.01)
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        params[1].grad = torch.tensor([float("nan")] + [1.0] * 6)
        opt.step()
        monkeypatch.undo()
        return [p.detach().clone() for p in params] + [opt.state[params[1]]["exp_inf"].clone()]

    native, plain = run(True), run(False)
    for a, b in zip(native, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert torch.isnan(native[1][0]) and torch.isnan(native[3][0]) and not torch.isnan(native[1][1:]).any()


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_is_fused_where_supported_and_takes_the_same_steps(name: str):
    """``build_optimizer`` takes PyTorch's fused Adam/AdamW where it exists for the parameters (CPU float32 with
    torch >= 2.4): the same trajectory as the default implementation to float32 rounding."""
    from visionflows.training import build_optimizer

    def run(fused_ok: bool) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(300, 40), (7,)]]
        if fused_ok:
            opt = build_optimizer(name, params, 1e-2, None, 0.01)
        else:
            cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
            opt = cls(params, lr=1e-2, weight_decay=0.01)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return [p.detach().clone() for p in params], opt

    built, opt = run(True)
    plain, _ = run(False)
    assert opt.defaults.get("fused") is (True if _fused_cpu_adam() else None)
    for a, b in zip(built, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _fused_cpu_adam() -> bool:
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def test_adam_falls_back_where_fused_is_not_supported(monkeypatch: pytest.MonkeyPatch):
    """Without a fused kernel (older PyTorch on the CPU, other devices) the default implementation is used."""
    from visionflows.training import build_optimizer

    real = torch.optim.Adam

    class NoFused(real):  # type: ignore[misc, valid-type]
        def __init__(self, params, fused=None, **kw):  # noqa: ANN001
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    opt = build_optimizer("adam", (p for p in [torch.nn.Parameter(torch.zeros(3))]), 1e-3, None, 0.0)
    assert isinstance(opt, NoFused) and not opt.defaults.get("fused")
    assert len(opt.param_groups[0]["params"]) == 1  # a generator of parameters is not consumed by the first try
