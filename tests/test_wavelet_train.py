"""Per-level training task, independent level jobs, assembly from checkpoints at different steps."""

from __future__ import annotations

import math
import time

import pytest
import torch

from visionflows.errors import CheckpointError, ConfigError
from visionflows.training import TrainTask
from visionflows.wavelet import create_model, get_preset
from visionflows.wavelet.train import WaveletLevelTask, assemble, level_run_dir, train_level


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


# ------------------------------------------------------------------------------ all levels: workers and budgets
def test_plan_levels_longest_first_each_level_once():
    from visionflows.wavelet.parallel import plan_levels

    costs = {0: 1.0, 1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 8.0}
    plan = plan_levels(costs, 2)
    assert sorted(lv for q in plan for lv in q) == list(costs)  # every level exactly once
    for q in plan:
        assert [costs[lv] for lv in q] == sorted((costs[lv] for lv in q), reverse=True)  # longest first
    loads = [sum(costs[lv] for lv in q) for q in plan]
    assert loads == [12.0, 12.0]
    assert plan_levels(costs, 1) == [[5, 4, 3, 2, 1, 0]]
    # a worker that starts late (process start-up) gets less work
    late = plan_levels(costs, 2, startup=[0.0, 6.0])
    assert sum(costs[lv] for lv in late[0]) > sum(costs[lv] for lv in late[1])


def test_estimated_cost_grows_with_pixels_and_width():
    from visionflows.wavelet.parallel import estimate_step_seconds

    est = [estimate_step_seconds("cpu_32", lv, device="cpu") for lv in range(6)]
    assert est[0] < est[3] < est[4] and est == sorted(est[:5]) + est[5:]
    assert est[5] == pytest.approx(est[4], rel=0.2)  # level 5 is cropped by 2: the same grid as level 4
    wide = estimate_step_seconds("cpu_32", 4, device="cpu", threads=1)
    wider = estimate_step_seconds(get_preset("cpu_32", widths=(16, 16, 24, 32, 96, 48)), 4, device="cpu")
    assert wider > 3 * wide - 0.05  # the convolutions dominate: ∝ width²
    assert estimate_step_seconds("cpu_32", 4, batch_size=64) > estimate_step_seconds("cpu_32", 4, batch_size=32)


def _fake_jobs(costs):
    from visionflows.wavelet.worker import LevelJob

    return {lv: LevelJob(lv, f"level_{lv}", "tiny_8") for lv in costs}


def test_time_budgets_split_by_cost_and_all_workers_end_together():
    from visionflows.wavelet.parallel import _Schedule
    from visionflows.wavelet.worker import LevelOutcome

    costs = {0: 1.0, 1: 1.5, 2: 2.0, 3: 4.0, 4: 9.0, 5: 8.0}
    now = [0.0]
    deadline = 120.0
    overhead = 0.5
    sched = _Schedule(_fake_jobs(costs), costs, 2, deadline, startup_s=3.0, t0=0.0, clock=lambda: now[0])
    free = {0: 0.0, 1: 3.0}  # worker 1 is ready after its start-up
    budgets, ends = {}, {}
    while free:
        k = min(free, key=free.get)
        now[0] = free[k]
        job = sched.next(k)
        if job is None:
            ends[k] = free.pop(k)
            continue
        budgets[job.level] = (k, job.max_minutes * 60)
        wall = job.max_minutes * 60 + overhead
        sched.report(LevelOutcome(job.level, True, k, start_step=0, step=10, budget_minutes=job.max_minutes,
                                  wall_s=wall))
        free[k] += wall
    assert sorted(budgets) == list(costs)  # every level once
    # the first jobs assume the default overhead (0.3 s) until one is measured: the workers end within a second
    assert max(ends.values()) <= deadline + 1.0 and min(ends.values()) > deadline - 1.0, ends
    for k in (0, 1):  # on each worker, time ∝ cost
        mine = {lv: b for lv, (w, b) in budgets.items() if w == k}
        ratios = [b / costs[lv] for lv, b in mine.items()]
        assert max(ratios) / min(ratios) < 1.2, mine
    # without a deadline: one shared queue, costliest first, each job with its step target
    shared = _Schedule(_fake_jobs(costs), costs, 2, None, 0.0, 0.0)
    order = [shared.next(k % 2).level for k in range(6)]
    assert order == [4, 5, 3, 2, 1, 0] and shared.next(0) is None


def _folder(tmp_path, n=6):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, img in enumerate(_data(n)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k}.png")
    return str(folder)


def _ckpt_state(run, lv):
    from visionflows.io import read_model_file
    from visionflows.training import find_checkpoints

    return read_model_file(find_checkpoints(level_run_dir(run, lv))[-1] / "model.safetensors")[1]


@pytest.mark.slow
def test_all_levels_on_library_workers_deterministic_and_resumable(tmp_path, monkeypatch):
    """Workers are library processes (no CLI argv), each level trains exactly once, and two workers give the
    same checkpoints as one (same steps and seeds); --resume continues every level."""
    import os
    import subprocess

    import visionflows.wavelet.worker as worker_mod
    from visionflows.wavelet.train import train_all_levels

    started = []
    real_popen = subprocess.Popen

    def recording_popen(cmd, *a, **k):
        started.append(list(cmd))
        return real_popen(cmd, *a, **k)

    monkeypatch.setattr(worker_mod.subprocess, "Popen", recording_popen)
    # with a time budget the levels are placed on the workers up front (so worker 1 gets levels however fast
    # worker 0 is); every level reaches its 3 steps long before its share of the 2 minutes
    kw = dict(steps=3, threads=1, batch_size=4, warmup_steps=2, data=_folder(tmp_path), tensorboard=False,
              max_minutes=2.0)
    seq = train_all_levels("tiny_8", tmp_path / "seq", parallel=1, **kw)
    assert started == []  # one worker: the calling process itself
    par = train_all_levels("tiny_8", tmp_path / "par", parallel=2, **kw)
    assert len(started) == 1 and started[0][1:] == ["-m", "visionflows.wavelet.worker"]
    assert "train" not in started[0] and "--level" not in started[0]
    assert sorted(par) == [0, 1, 2, 3] and all(o.ok and o.step == 3 and o.start_step == 0 for o in par.values())
    pids = {o.pid for o in par.values()}
    assert len(pids) == 2 and os.getpid() in pids  # two workers in all, each trained several levels in turn
    for lv in range(4):
        a, b = _ckpt_state(tmp_path / "seq", lv), _ckpt_state(tmp_path / "par", lv)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), lv
        log = (tmp_path / "par" / "logs" / f"level_{lv}.log").read_text()
        assert log.count("trained by") == 1  # each level trained exactly once
    assert {o.worker for o in seq.values()} == {0}
    # resume: every level continues from its checkpoint
    res = train_all_levels("tiny_8", tmp_path / "par", parallel=2, resume=True, **{**kw, "steps": 5})
    assert all(o.ok and (o.start_step, o.step) == (3, 5) for o in res.values())
    assert "step 5" in assemble(tmp_path / "par").level_sources[3]
    with pytest.raises(ConfigError, match="not empty"):
        train_all_levels("tiny_8", tmp_path / "par", parallel=2, **kw)


@pytest.mark.slow
def test_all_levels_time_budget_is_shared_by_cost(tmp_path):
    from visionflows.wavelet.parallel import estimate_step_seconds
    from visionflows.wavelet.train import train_all_levels

    widths = (8, 8, 8, 256)
    out = train_all_levels("tiny_8", tmp_path / "r", parallel=1, levels=[0, 3], max_minutes=0.1, threads=1,
                           data=_folder(tmp_path), tensorboard=False, widths=widths)
    assert all(o.ok and o.steps_done > 0 for o in out.values())
    assert sum(o.budget_minutes for o in out.values()) * 60 <= 6.0
    p = get_preset("tiny_8", widths=widths)
    # the budget, not the step limit, ended the wide level (its 1,000 steps take far longer than its seconds)
    assert out[3].steps_done < p.max_steps
    ratio = estimate_step_seconds(p, 3, threads=1) / estimate_step_seconds(p, 0, threads=1)
    assert ratio > 2
    # the wide level costs most: it goes first and gets more time (the last job also gets what the first left)
    assert out[3].started_s < out[0].started_s
    assert out[3].budget_minutes > 1.3 * out[0].budget_minutes


_PARENT = """
import sys
from visionflows.wavelet.train import train_all_levels
train_all_levels("tiny_8", sys.argv[1], parallel=2, steps=10**7, threads=1, batch_size=4, data=sys.argv[2],
                 tensorboard=False, checkpoint_every=100)
"""


def _alive_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is ``pgid``."""
    from pathlib import Path

    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_killing_the_parent_leaves_no_worker_behind(tmp_path, sig):
    import os
    import re
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # SIGINT at its default action in the child, as in a terminal: a test run started in the background inherits
    # it ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, str(script), str(run), _folder(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    worker = None
    deadline = time.monotonic() + 90
    try:
        while worker is None:
            assert proc.poll() is None, "the parent ended before it could be killed"
            assert time.monotonic() < deadline, "no worker process started"
            for log in (run / "logs").glob("level_*.log"):
                m = re.search(r"trained by worker 1 \(pid (\d+)\)", log.read_text())
                if m:
                    worker = int(m.group(1))
            time.sleep(0.1)
        time.sleep(0.5)  # the worker is training now
        assert _alive_in_group(worker) == [worker]
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
        end = time.monotonic() + 10
        while _alive_in_group(worker) and time.monotonic() < end:
            time.sleep(0.1)
        assert _alive_in_group(worker) == [], f"worker {worker} outlived its parent ({sig})"
    finally:
        if proc.poll() is None:
            proc.kill()
        if worker is not None:
            for pid in _alive_in_group(worker):
                os.kill(pid, signal.SIGKILL)
