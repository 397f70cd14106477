"""Noise Flow throughput on the released architecture, side by side in one process: the plain eager reference
(``noiseflow_reference.py``), visionflows' plain PyTorch path (``use_kernels=False``) and visionflows' default path
(the native kernels of ``visionflows.noise.fused`` when they build), optionally ``torch.compile`` of the plain path.

* train: patches/s of one step = forward NLL (train-mode BN) + backward + Adam step, at ``--batch``;
* nll: patches/s of the log-density in eval mode under ``no_grad``, at ``--batch`` and ``--big-batch``;
* sample: raw values/s (``B·4·H·W`` per call) of sampling at temperature 1 in eval mode, at ``--batch``,
  ``--big-batch`` (32×32 patches) and 16 × 4×256×256 (``--image``).

Ratios are against the reference of the same run. The modes are timed in alternating rounds (``--rounds``): each
round times every mode for ``--min-time`` s; the reported time is the median of all calls of a mode. Exactness:
the largest difference of each mode's log-density / samples (same latent) / first training loss from the
reference is printed and stored. Uses the official weights if ``../shared/anchors/noiseflow_official`` (or
``--official DIR``) exists, else ``create_model("noiseflow")``. visionflows inputs go through the public API
(tensors + ISO + camera, validated each call).

usage: python benchmarks/bench_noiseflow.py [--threads 2] [--batch 138] [--big-batch 1024] [--image 256]
       [--rounds 2] [--min-time 2] [--compile] [--only train,nll,sample] [--name noiseflow]
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import write_result  # noqa: E402
from noiseflow_reference import ReferenceNoiseFlow  # noqa: E402
from visionflows import kernels  # noqa: E402
from visionflows.cameras import ISOS  # noqa: E402
from visionflows.noise import create_model  # noqa: E402

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "noiseflow_official"
CHANNELS = 4


def load_model(official: Path) -> tuple[torch.nn.Module, str]:
    if (official / "model.ckpt.best.index").exists():
        from visionflows.noise.official import load_official

        return load_official(official), f"official ({official})"
    return create_model("noiseflow"), "create_model('noiseflow') (random init)"


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Clean patches in [0, 1], heteroscedastic noise, random ISO levels and cameras."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, CHANNELS, size, size, generator=g)
    iso = torch.tensor(ISOS)[torch.randint(0, len(ISOS), (batch,), generator=g)]
    camera = torch.randint(0, 5, (batch,), generator=g)
    std = torch.sqrt(1e-3 * clean * (iso[:, None, None, None] / 800.0) + 1e-6)
    noise = std * torch.randn(clean.shape, generator=g)
    return noise, clean, iso, camera


def timed(fns: dict[str, callable], rounds: int, min_time: float, warmup: int = 2) -> dict[str, dict]:
    """Alternating rounds over the modes; per mode the median / min of all timed calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k, fn in fns.items():
            t_start = time.perf_counter()
            while len(times[k]) < 3 * (r + 1) or time.perf_counter() - t_start < min_time:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "reps": len(v)} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=138)
    ap.add_argument("--big-batch", type=int, default=1024)
    ap.add_argument("--image", type=int, default=256, help="side of the 16-image sampling case (0: skip)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls per mode and round")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the plain path")
    ap.add_argument("--only", default="train,nll,sample", help="comma-separated subset of train,nll,sample")
    ap.add_argument("--official", type=Path, default=OFFICIAL)
    ap.add_argument("--name", default="noiseflow", help="results/<name>.json")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, source = load_model(args.official)
    model = model.eval()
    probe = make_batch(1, 8)
    fast_ok = model.transform.fast_path(probe[0], model.context(*probe[1:]))
    plain = copy.deepcopy(model)
    plain.transform.use_kernels = False
    reference = ReferenceNoiseFlow.from_model(model).eval()
    only = set(args.only.split(","))
    results: dict = {
        "config": {**vars(args), "official": str(args.official)},
        "model": source,
        "parameters_official_count": model.num_parameters(official=True),
        "kernels": {"used": fast_ok, "compiler": kernels.compiler(), "build_error": kernels.build_error("noiseflow")},
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS",
                                              "VISIONFLOWS_KERNELS") if k in os.environ},
        "cases": {},
        "loadavg_start": os.getloadavg(),
    }
    print(f"model: {source}; kernels used: {fast_ok}; threads {torch.get_num_threads()}; "
          f"load {results['loadavg_start']}", flush=True)

    def report(key: str, t: dict, per_call: int, unit: str, errors: dict[str, float]) -> None:
        ref_rate = per_call / t["reference"]["median_s"]
        case = results["cases"].setdefault(key, {})
        for mode, tm in t.items():
            rate = per_call / tm["median_s"]
            case[mode] = {**tm, unit: rate, "ratio_vs_reference": rate / ref_rate,
                          "max_abs_diff_vs_reference": errors.get(mode, 0.0)}
            print(f"{key:<18} {mode:<10} {tm['median_s'] * 1e3:9.2f} ms/call {rate:14,.0f} {unit:<14}"
                  f" x{rate / ref_rate:6.2f}   max|diff| {errors.get(mode, 0.0):.2e}  (n={tm['reps']})", flush=True)

    modes = {"reference": reference, "plain": plain, "visionflows": model}
    if args.compile:
        modes["compiled"] = plain

    if "train" in only:
        data = make_batch(args.batch, 32)
        values = CHANNELS * 32 * 32
        fns, losses = {}, {}
        for mode, m0 in modes.items():
            m = copy.deepcopy(m0).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-5)
            f = torch.compile(m, dynamic=False) if mode == "compiled" else m
            losses[mode] = float(-f(*data).mean() / values)  # the first loss, before any step

            def step(f=f, opt=opt) -> None:
                opt.zero_grad(set_to_none=True)
                loss = -f(*data).mean() / values
                loss.backward()
                opt.step()

            fns[mode] = step
        errors = {k: abs(v - losses["reference"]) for k, v in losses.items()}
        report(f"train@{args.batch}", timed(fns, args.rounds, args.min_time), args.batch, "patches_per_s", errors)

    sample_cases = [(args.batch, 32), (args.big_batch, 32)] + ([(16, args.image)] if args.image else [])
    for batch, size in [(args.batch, 32), (args.big_batch, 32)]:
        if "nll" not in only:
            break
        data = make_batch(batch, size)
        fns, outs = {}, {}
        for mode, m in modes.items():
            f = torch.compile(m, dynamic=False) if mode == "compiled" else m

            def nll(f=f, data=data) -> torch.Tensor:
                with torch.no_grad():
                    return f(*data)

            fns[mode] = nll
            outs[mode] = nll()
        errors = {k: float((v - outs["reference"]).abs().max()) for k, v in outs.items()}
        report(f"nll@{batch}", timed(fns, args.rounds, args.min_time), batch, "patches_per_s", errors)
    for batch, size in sample_cases:
        if "sample" not in only:
            break
        _, clean, iso, cam = make_batch(batch, size)
        eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
        ref_sample = reference.sample(clean, iso, cam, eps=eps)
        fns, errors = {}, {}
        for mode, m in modes.items():
            if mode == "reference":
                fns[mode] = lambda c=(clean, iso, cam): reference.sample(*c)
                continue
            s = torch.compile(m.sample, dynamic=False) if mode == "compiled" else m.sample
            fns[mode] = lambda s=s, c=(clean, iso, cam): s(*c, temperature=1.0)
            with torch.no_grad():
                errors[mode] = float((m.decode(eps, clean, iso, cam) - ref_sample).abs().max())
        report(f"sample@{batch}x{size}x{size}", timed(fns, args.rounds, args.min_time), batch * CHANNELS * size * size,
               "values_per_s", errors)
    results["loadavg_end"] = os.getloadavg()
    print("wrote", write_result(args.name, results), "load", results["loadavg_end"])


if __name__ == "__main__":
    main()
