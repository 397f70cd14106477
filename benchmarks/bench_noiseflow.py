"""Noise Flow throughput on the released architecture: training, NLL evaluation and sampling, eager vs compiled.

* train: patches/s of one step = forward NLL (train-mode BN) + backward + Adam step, at ``--batch``;
* nll: patches/s of ``log_prob`` in eval mode under ``no_grad``, at ``--batch`` and ``--big-batch``;
* sample: raw values/s (``B·4·H·W`` per call) of ``sample(temperature=1)`` in eval mode, same batches.

Uses the official weights if ``../shared/anchors/noiseflow_official`` (or ``--official DIR``) exists, else
``create_model("noiseflow")``. Inputs go through the public API (tensors + ISO + camera, validated each call).
Medians over ``--reps`` timed calls (at least ``--min-time`` s each). Compilation uses
``TORCHINDUCTOR_COMPILE_THREADS=1`` (set before importing torch) and static shapes (one graph per batch).

usage: python benchmarks/bench_noiseflow.py [--device cpu] [--batch 138] [--big-batch 1024] [--reps 20]
       [--threads N] [--no-compile] [--name noiseflow]
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import time_call, write_result  # noqa: E402
from visionflows.cameras import ISOS  # noqa: E402
from visionflows.noise import create_model  # noqa: E402

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "noiseflow_official"
SIZE = 32
CHANNELS = 4


def load_model(official: Path) -> tuple[torch.nn.Module, str]:
    if (official / "model.ckpt.best.index").exists():
        from visionflows.noise.official import load_official

        return load_official(official), f"official ({official})"
    return create_model("noiseflow"), "create_model('noiseflow') (random init)"


def make_batch(batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Clean patches in [0, 1], heteroscedastic noise, random ISO levels and cameras."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, CHANNELS, SIZE, SIZE, generator=g)
    iso = torch.tensor(ISOS)[torch.randint(0, len(ISOS), (batch,), generator=g)]
    camera = torch.randint(0, 5, (batch,), generator=g)
    std = torch.sqrt(1e-3 * clean * (iso[:, None, None, None] / 800.0) + 1e-6)
    noise = std * torch.randn(clean.shape, generator=g)
    return noise.to(device), clean.to(device), iso.to(device), camera.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=138)
    ap.add_argument("--big-batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--min-time", type=float, default=2.0, help="keep timing each case at least this long (s)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only", default="train,nll,sample", help="comma-separated subset of train,nll,sample")
    ap.add_argument("--official", type=Path, default=OFFICIAL)
    ap.add_argument("--name", default="noiseflow", help="results/<name>.json")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model, source = load_model(args.official)
    model = model.to(dev).eval()
    only = set(args.only.split(","))
    values = CHANNELS * SIZE * SIZE
    results: dict = {
        "config": {**vars(args), "official": str(args.official)},
        "model": source,
        "parameters_official_count": model.num_parameters(official=True),
        "env": {k: os.environ.get(k) for k in ("LD_PRELOAD", "MALLOC_ARENA_MAX", "MALLOC_TOP_PAD_",
                                              "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                              "OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS") if k in os.environ},
        "cases": {},
    }
    modes = ["eager"] + ([] if args.no_compile else ["compiled"])

    def record(key: str, mode: str, t: dict, per_call: int, unit: str) -> None:
        rate = per_call / t["median_s"]
        results["cases"].setdefault(key, {})[mode] = {**t, unit: rate}
        print(f"{key:<16} {mode:<9} {t['median_s'] * 1e3:9.2f} ms/call  {rate:14,.0f} {unit}"
              f"  (best {per_call / t['min_s']:,.0f}, n={t['reps']})", flush=True)

    if "train" in only:
        noise, clean, iso, cam = make_batch(args.batch, dev)
        for mode in modes:
            m = copy.deepcopy(model).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-5)
            f = torch.compile(m, dynamic=False) if mode == "compiled" else m

            def train_step(f=f, opt=opt) -> None:
                opt.zero_grad(set_to_none=True)
                loss = -f(noise, clean, iso, cam).mean() / values
                loss.backward()
                opt.step()

            t = time_call(train_step, warmup=3, reps=args.reps, device=args.device, min_time=args.min_time)
            record(f"train@{args.batch}", mode, t, args.batch, "patches_per_s")

    for batch in (args.batch, args.big_batch):
        data = make_batch(batch, dev)
        for mode in modes:
            if "nll" in only:
                f = torch.compile(model, dynamic=False) if mode == "compiled" else model

                def nll(f=f, data=data) -> None:
                    with torch.no_grad():
                        f(*data)

                t = time_call(nll, warmup=3, reps=args.reps, device=args.device, min_time=args.min_time)
                record(f"nll@{batch}", mode, t, batch, "patches_per_s")
            if "sample" in only:
                s = torch.compile(model.sample, dynamic=False) if mode == "compiled" else model.sample

                def sample(s=s, data=data) -> None:
                    with torch.no_grad():
                        s(*data[1:], temperature=1.0)

                t = time_call(sample, warmup=3, reps=args.reps, device=args.device, min_time=args.min_time)
                record(f"sample@{batch}", mode, t, batch * values, "values_per_s")
    suffix = "" if dev.type == "cpu" else f"_{dev.type}"
    print("wrote", write_result(f"{args.name}{suffix}", results))


if __name__ == "__main__":
    main()
