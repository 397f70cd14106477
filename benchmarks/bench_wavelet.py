"""Wavelet Flow throughput and memory: training per level, the fused fast path vs the plain chain, eager vs
compiled, sampling, peak memory. Writes ``benchmarks/results/wavelet.json`` (``wavelet_cuda.json`` on CUDA).

(a) the reference level: 16×16×9 details given 16×16×3 (level 5 of a 32×32 model), K=8, width 128, 3 residual
    blocks (4.05 M parameters), one training step = loss forward + backward + GlowAdamax step, batch ``--batch``;
    rows: the plain eager reference (``wavelet_reference.py``, same weights, checked to compute the same function),
    visionflows' plain chain, fused with direct convolutions, fused with Winograd 3×3 convolutions (the CPU
    default), fused + torch.compile, fused + bf16 autocast; all arms timed in interleaved rounds in one process.
(b) every level of ``--preset`` (and ``--imagenet-levels`` of imagenet_32) at the preset's batch and crop.
(c) sampling the full model (eager), images/s for each resolution 2…res.
(d) peak memory of two training steps: CPU peak-RSS (``VmHWM``, else ``ru_maxrss``) growth in a fresh
    subprocess per measurement, from after the model is built (the delta covers activations, grads and optimiser
    state); CUDA ``torch.cuda.max_memory_allocated`` above the model's own allocation.

usage: python benchmarks/bench_wavelet.py [--device cpu] [--preset cpu_32] [--reps 5] [--no-compile]
       [--threads N] [--batch 16] [--imagenet-levels 0,1,2,3,4]
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import sync, time_call, write_result  # noqa: E402
from visionflows.flows.pixels import dequantize  # noqa: E402
from visionflows.training.optim import GlowAdamax  # noqa: E402
from visionflows.wavelet.level import LN2, CouplingNet, WaveletLevel, set_fused  # noqa: E402
from visionflows.wavelet.model import WaveletFlow  # noqa: E402
from visionflows.wavelet.presets import get_preset  # noqa: E402
from wavelet_reference import ReferenceLevel  # noqa: E402

REF = dict(level=5, n_levels=5, channels=3, steps=8, width=128, res_blocks=3)  # 16x16x9 given 16x16x3


def _train_step(level: WaveletLevel, images: torch.Tensor, compile_: bool = False, amp: str | None = None):
    """A closure running one training step (the trainer's path: loss → backward → GlowAdamax step)."""
    level.train()
    with torch.no_grad():  # ActNorm DDI, as the trainer does before compiling
        level.bits_per_dim_level(images, torch.Generator().manual_seed(0))
    opt = GlowAdamax(level.parameters())

    def loss_fn(imgs: torch.Tensor, seed: int) -> torch.Tensor:
        return level.bits_per_dim_level(imgs, torch.Generator().manual_seed(seed)).mean()

    fn = torch.compile(loss_fn) if compile_ else loss_fn
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    dev_type = images.device.type

    def step() -> float:
        with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            loss = fn(images, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _images(batch: int, side: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, side, side), generator=g, dtype=torch.uint8).to(device)


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _measure(step, batch: int, reps: int, device: str, warmup: int = 2) -> dict[str, float]:
    t = time_call(step, warmup=warmup, reps=reps, device=device)
    return {**t, "images_per_s": batch / t["median_s"], "images_per_s_best": batch / t["min_s"]}


def _set_winograd(module: torch.nn.Module, on: bool) -> torch.nn.Module:
    for m in module.modules():
        if isinstance(m, CouplingNet):
            m.winograd = bool(on)
    return module


def _reference_step(level: WaveletLevel, images: torch.Tensor):
    """One training step of the plain eager reference (``wavelet_reference.py``) with ``level``'s weights; the
    input pipeline (dequantise, Haar split) is the library's, so both arms see the same coefficients."""
    ref = ReferenceLevel.from_level(level).to(images.device)
    opt = GlowAdamax(ref.parameters())
    dims = level.dims_for(images)

    def step() -> float:
        x = level.downsample(dequantize(images, torch.Generator().manual_seed(0)))
        data, cond = level.split(x)
        lp = ref(data, cond) + level.haar_logdet(data[0].numel())
        loss = (-lp / (dims * LN2) + 8.0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return ref, step


def _same_function(level: WaveletLevel, images: torch.Tensor) -> dict[str, float]:
    """Max |Δ log p| (nats per image) of the level's paths against the reference on one batch, after moving the
    zero-initialised output convolutions off zero (so every coupling acts)."""
    level = copy.deepcopy(level)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in level.modules():
            if isinstance(m, CouplingNet):
                m.out.conv.weight.copy_(0.003 * torch.randn(m.out.conv.weight.shape, generator=gen))
        x = level.downsample(dequantize(images.cpu(), torch.Generator().manual_seed(1)).to(images.device))
        data, cond = level.split(x)
        ref = ReferenceLevel.from_level(level).to(images.device)(data, cond)
        out = {"reference_logp_mean": float(ref.mean())}
        for name, fused, wino in (("plain", False, False), ("fused", True, False), ("fused_winograd", True, True)):
            lp = _set_winograd(set_fused(level, fused), wino).flow_log_prob(data, cond)
            out[f"{name}_max_abs_diff_nats"] = float((lp - ref).abs().max())
    return out


def reference_level(args) -> dict:
    """Every variant's training step of the reference level, timed in interleaved rounds (one step of each arm per
    round, so drift of the machine hits all arms alike); ratios against the plain eager reference."""
    dev = args.device
    res: dict = {"config": {**REF, "batch": args.batch, "image_side": 32, "rounds": args.reps}}
    images = _images(args.batch, 32, dev)
    rows = [("plain_eager", False, False, False, None), ("fused_eager", True, False, False, None)]
    if dev == "cpu":
        rows.append(("fused_winograd", True, True, False, None))
    if not args.no_compile:
        rows.append(("fused_compiled", True, False, True, None))
    rows.append(("fused_eager_bf16", True, False, False, "bf16"))
    steps, first = {}, {}
    torch.manual_seed(0)
    base = WaveletLevel(**REF).to(dev)
    with torch.no_grad():  # DDI once; every arm starts from these weights
        base.train()
        base.bits_per_dim_level(images, torch.Generator().manual_seed(0))
    res["parameters"] = _params(base)
    res["same_function"] = _same_function(base, images)
    print(f"(a) same function as the reference: {res['same_function']}", flush=True)
    t0 = time.perf_counter()
    keep = {}
    keep["reference_eager"], steps["reference_eager"] = _reference_step(base, images)
    steps["reference_eager"]()
    first["reference_eager"] = time.perf_counter() - t0
    for name, fused, wino, comp, amp in rows:
        level = _set_winograd(set_fused(copy.deepcopy(base), fused), wino)
        keep[name] = level
        t0 = time.perf_counter()
        steps[name] = _train_step(level, images, comp, amp)
        steps[name]()  # compile happens here
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(2):  # warm-up round
        for fn in steps.values():
            fn()
    for _ in range(args.reps):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            sync(dev)
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        med = statistics.median(ts)
        r = {"median_s": med, "min_s": min(ts), "reps": len(ts), "images_per_s": args.batch / med,
             "images_per_s_best": args.batch / min(ts), "first_step_s": first[name]}
        res[name] = r
        print(f"(a) reference level {name:18s} {med * 1e3:8.1f} ms/step {r['images_per_s']:7.1f} images/s "
              f"(best {r['images_per_s_best']:.1f}; first step {first[name]:.1f} s)", flush=True)
    ref_ips = res["reference_eager"]["images_per_s"]
    res["speedup_vs_reference"] = {k: res[k]["images_per_s"] / ref_ips for k in times}
    res["speedup_vs_plain"] = {k: res[k]["images_per_s"] / res["plain_eager"]["images_per_s"] for k in times}
    print("(a) speed-up vs the eager reference: " + ", ".join(f"{k} {v:.2f}x" for k, v in
                                                            res["speedup_vs_reference"].items()), flush=True)
    return res


def preset_levels(name: str, args, levels: list[int] | None = None, batch: int | None = None) -> list[dict]:
    p = get_preset(name)
    n = p.resolution.bit_length() - 1
    out = []
    for lv in levels if levels is not None else range(n + 1):
        bsz = int(batch or p.batch_size)
        side = p.resolution // p.crops[lv]
        torch.manual_seed(0)
        level = WaveletLevel(lv, n, p.channels, p.steps[lv], p.widths[lv], p.res_blocks).to(args.device)
        step = _train_step(level, _images(bsz, side, args.device))
        reps = args.reps if p.widths[lv] <= 128 else max(2, args.reps // 2)
        r = _measure(step, bsz, reps, args.device, warmup=1)
        s = side // 2 ** (n - lv)
        row = {"preset": name, "level": lv, "steps": p.steps[lv], "width": p.widths[lv], "batch": bsz,
               "crop_side": side, "level_side": s, "parameters": _params(level), **r}
        out.append(row)
        print(f"(b) {name} level {lv} ({s}x{s}, K={p.steps[lv]}, W={p.widths[lv]}, {row['parameters'] / 1e6:.2f} M, "
              f"batch {bsz}): {r['median_s'] * 1e3:8.1f} ms/step {r['images_per_s']:8.1f} images/s", flush=True)
    return out


def sampling(args) -> dict:
    p = get_preset(args.preset)
    torch.manual_seed(0)
    model = WaveletFlow(**p.model_kwargs()).to(args.device).eval()
    n = args.sample_n
    out = {"preset": p.name, "n": n, "per_resolution": []}
    for lv in range(1, model.n_levels + 1):
        r = 2**lv
        t = time_call(lambda r=r: model.sample(n, resolution=r, generator=torch.Generator().manual_seed(0)),
                      warmup=1, reps=args.reps, device=args.device)
        row = {"resolution": r, **t, "images_per_s": n / t["median_s"]}
        out["per_resolution"].append(row)
        print(f"(c) sampling {p.name} at {r:3d}x{r:<3d} (all levels up to {lv}): {t['median_s'] * 1e3:8.1f} ms "
              f"per {n}  {row['images_per_s']:8.1f} images/s", flush=True)
    return out


def _memprobe(spec: dict) -> dict:
    """Run in a fresh process: peak memory growth of training steps (or sampling) of one configuration."""
    dev = spec["device"]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    if spec["what"] == "sample":
        model = WaveletFlow(**get_preset(spec["preset"]).model_kwargs()).to(dev).eval()
        run = lambda: model.sample(spec["batch"], generator=torch.Generator().manual_seed(0))  # noqa: E731
    else:
        level = set_fused(WaveletLevel(**spec["level"]).to(dev), spec.get("fused", True))
        _set_winograd(level, spec.get("winograd", True))
        images = _images(spec["batch"], spec["side"], dev)
        run = _train_step(level, images, spec.get("compile", False))
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        run()
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "method": "cuda.max_memory_allocated"}
    before = _peak_rss_kib()
    run()
    run()
    after = _peak_rss_kib()
    return {"peak_mb": (after - before) / 1024.0, "method": "peak RSS (VmHWM) growth in a fresh process"}


def _peak_rss_kib() -> int:
    """This process's peak resident set size in KiB: ``VmHWM`` (``ru_maxrss`` is inherited from the parent across
    fork + exec on Linux, so a large parent would hide the child's growth)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory(args) -> list[dict]:
    p = get_preset(args.preset)
    n = p.resolution.bit_length() - 1
    specs = [
        {"name": "reference level, plain", "what": "train", "level": REF, "batch": args.batch, "side": 32,
         "fused": False},
        {"name": "reference level, fused (direct convs)", "what": "train", "level": REF, "batch": args.batch,
         "side": 32, "winograd": False},
        {"name": "reference level, fused + Winograd", "what": "train", "level": REF, "batch": args.batch, "side": 32},
    ]
    top = dict(level=n, n_levels=n, channels=p.channels, steps=p.steps[n], width=p.widths[n], res_blocks=p.res_blocks)
    specs.append({"name": f"{p.name} level {n}", "what": "train", "level": top, "batch": p.batch_size,
                  "side": p.resolution // p.crops[n]})
    specs.append({"name": f"{p.name} sampling {args.sample_n}", "what": "sample", "preset": p.name,
                  "batch": args.sample_n})
    out = []
    for spec in specs:
        spec = {**spec, "device": args.device, "threads": args.threads}
        proc = subprocess.run([sys.executable, __file__, "--_memprobe", json.dumps(spec)], capture_output=True,
                              text=True, env=dict(os.environ), timeout=600)
        if proc.returncode != 0:
            print(f"(d) memory probe {spec['name']} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append({"name": spec["name"], **r})
        print(f"(d) peak memory {spec['name']:32s} {r['peak_mb']:8.1f} MiB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="cpu_32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16, help="batch of the reference level")
    ap.add_argument("--sample-n", type=int, default=16)
    ap.add_argument("--imagenet-levels", default="0,1,2,3,4", help="imagenet_32 levels to time ('' for none)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: ref,levels,sample,memory")
    ap.add_argument("--_memprobe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memprobe:
        print(json.dumps(_memprobe(json.loads(args._memprobe))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results: dict = {"config": vars(args), "loadavg_start": load}
    if "ref" not in skip:
        results["reference_level"] = reference_level(args)
    if "levels" not in skip:
        results["levels"] = preset_levels(args.preset, args)
        if args.imagenet_levels:
            lv = [int(v) for v in args.imagenet_levels.split(",")]
            results["levels_imagenet_32"] = preset_levels("imagenet_32", args, lv, batch=args.batch)
    if "sample" not in skip:
        results["sampling"] = sampling(args)
    if "memory" not in skip:
        results["memory"] = memory(args)
    results["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    suffix = "" if torch.device(args.device).type == "cpu" else f"_{torch.device(args.device).type}"
    print("wrote", write_result(f"wavelet{suffix}", results))


if __name__ == "__main__":
    main()
