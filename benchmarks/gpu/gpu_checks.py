"""Correctness checks on a CUDA device (run by benchmarks/gpu/run_gpu.sh on a lent GPU machine; never in CI).

Prints one line per check and exits non-zero if any fails:
- the official Noise Flow weights reproduce the reference vectors on the GPU (float32, TF32 off);
- every registered bijector case round-trips on the GPU in float32 with log-dets matching the CPU;
- the shared trainer trains a Wavelet Flow level and a Noise Flow on CUDA with bf16 autocast and torch.compile.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
DEV = torch.device("cuda")
results: list[tuple[str, bool, str]] = []


def check(name):
    def deco(fn):
        t0 = time.perf_counter()
        try:
            msg = fn() or ""
            results.append((name, True, msg))
        except Exception as err:  # report and continue
            traceback.print_exc()
            results.append((name, False, f"{type(err).__name__}: {err}"))
        print(f"[{'ok' if results[-1][1] else 'FAIL'}] {name} ({time.perf_counter() - t0:.1f} s) {results[-1][2]}",
              flush=True)
        return fn
    return deco


@check("official Noise Flow vectors on CUDA")
def _official():
    anchors = SHARED / "anchors" / "noiseflow_official"
    if not anchors.is_dir():  # a copy carried to the GPU machine (never committed: .git/info/exclude)
        anchors = ROOT / ".gpu_carry" / "noiseflow_official"
    from visionflows.noise import load_official

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    v = np.load(anchors / "test_vectors.npz")
    model = load_official(anchors).to(DEV).eval()
    t = {k: torch.from_numpy(v[k]).to(DEV) for k in ("clean", "noise", "z", "iso", "cam")}
    with torch.no_grad():
        nll = model.nll_per_dim(t["noise"], t["clean"], t["iso"], t["cam"]).double().cpu().numpy()
        sample = model.decode(t["z"], t["clean"], t["iso"], t["cam"]).cpu().numpy()
    err = float(np.abs(nll - v["nll_per_dim"]).max())
    assert err < 1e-4, err
    serr = float(np.abs(sample - v["noise_of_latent"]).max())
    assert np.allclose(sample, v["noise_of_latent"], rtol=1e-5, atol=1e-6), serr
    return f"max |NLL err| {err:.2e} nats/dim, max |sample err| {serr:.2e}"


def _to_device(ctx):
    """Move a context (None, a tensor or a dataclass of tensors) to the GPU."""
    import dataclasses

    if ctx is None or isinstance(ctx, torch.Tensor):
        return None if ctx is None else ctx.to(DEV)
    moved = {f.name: (v.to(DEV) if isinstance(v := getattr(ctx, f.name), torch.Tensor) else v)
             for f in dataclasses.fields(ctx)}
    return dataclasses.replace(ctx, **moved)


@check("every bijector case on CUDA (float32 round trip, log-det vs CPU)")
def _cases():
    from visionflows.testing import cases

    worst = 0.0
    for case in cases():
        torch.manual_seed(0)
        layer = case.make()
        layer.train()
        layer(case.x, case.context)
        layer.eval()
        z_cpu, ld_cpu = layer(case.x, case.context)
        g = layer.to(DEV)
        ctx = _to_device(case.context)
        with torch.no_grad():
            z, ld = g(case.x.to(DEV), ctx)
            x_back, ld_inv = g.inverse(z, ctx)
        rt = float((x_back.cpu() - case.x).abs().max() / case.x.abs().max().clamp_min(1e-12))
        assert rt < max(case.rtol32, 1e-4), (case.name, rt)
        dl = float((ld.cpu() - ld_cpu.detach()).abs().max() / ld_cpu.detach().abs().max().clamp_min(1.0))
        assert dl < 1e-3, (case.name, dl)
        worst = max(worst, rt)
    return f"worst round-trip rel. error {worst:.2e}"


@check("trainer on CUDA: Wavelet Flow level, bf16 + compile")
def _wavelet_train():
    from visionflows.wavelet.train import train_level

    with tempfile.TemporaryDirectory() as d:
        r = train_level("cpu_32", 5, Path(d) / "l5", steps=20, amp="bf16", compile=True, progress=False,
                        device="cuda", tensorboard=False)
    return f"step {r.step}, eval {r.eval_metrics}"


@check("trainer on CUDA: Noise Flow (fp32)")
def _noise_train():
    from visionflows.noise.simulator import make_simulated_dataset
    from visionflows.noise.train import NoiseFlowTask
    from visionflows.training import TrainConfig, train

    sim = make_simulated_dataset(16, 4, seed=0)
    task = NoiseFlowTask(sim["train"], sim["test"], batch_size=138, eval_batches=None)
    with tempfile.TemporaryDirectory() as d:
        r = train(task, TrainConfig(steps=50, batch_size=138, lr=5e-3, progress=False, tensorboard=False,
                                    device="cuda", checkpoint_every=50), Path(d) / "nf")
    return f"test NLL {r.eval_metrics.get('test_nll'):.4f} nats/dim after {r.step} steps"


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    failed = [n for n, ok, _ in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
