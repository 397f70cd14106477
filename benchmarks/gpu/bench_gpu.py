"""GPU benchmark in one script (≤ 10 minutes on one H100/H200): Noise Flow training and sampling, the official
``imagenet_64`` Wavelet Flow level, each fast path checked against the plain one before it is timed.

(1) Noise Flow training (released architecture, official weights when ``--official`` exists), batch ``--nf-batch``
    of 32×32×4: one step = NLL forward + backward + Adam step. Rows: ``eager``, ``compiled``
    (``torch.compile``), ``compiled_cudagraphs`` (``mode="reduce-overhead"``). Check: each row's first loss and
    gradients against eager.
(2) Noise Flow sampling at temperature 1: ``--nf-sample-batch`` (a list) × 4×32×32 (raw values/s). Rows: ``eager`` (the
    public ``sample``), ``eager_graph`` (latent → noise captured in one CUDA graph), ``compiled``,
    ``compiled_cudagraphs``. Check: each row decodes the same latent as eager (max abs difference).
(3) Wavelet Flow ``imagenet_64`` level(s) ``--wf-levels`` (default the top level 6: K=16, width 256, 3 residual
    blocks) at the preset's crop and batch: training step images/s and peak memory of a step
    (``torch.cuda.max_memory_allocated`` above what stays allocated between steps: weights, optimiser state) in fp32
    and bf16 autocast, eager and compiled. Check: each row's loss against the plain chain's fp32 loss (1e-4
    relative; bf16 2e-2).

All eager rows run first, then the compiled ones; no row starts once ``--budget-s`` would be exceeded (recorded as
skipped). Prints one line per row and
writes ``benchmarks/results/gpu.json`` (or ``--out``). ``--cpu`` runs everything on the CPU at toy sizes (a smoke
test of the script itself, no CUDA graphs), e.g. ``python benchmarks/gpu/bench_gpu.py --cpu``.

usage: python benchmarks/gpu/bench_gpu.py [--cpu] [--budget-s 480] [--nf-batch 138] [--nf-sample-batch 8192,32768]
       [--wf-levels 6] [--sections nf_train,nf_sample,wavelet] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "8")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine  # noqa: E402
from visionflows.cameras import ISOS  # noqa: E402
from visionflows.io import atomic_write_text  # noqa: E402
from visionflows.noise import NoiseContext, create_model  # noqa: E402

T0 = time.perf_counter()


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - T0)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device, min_time: float, warmup: int = 3, min_reps: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync(dev)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}


PHASE = {"compiled": False}  # two passes: every eager row first, then the (slow to compile) compiled rows


def row(results: dict, section: str, name: str, budget: Budget, need_s: float, fn) -> None:
    """Run one row of the current phase unless the budget is spent; record its dict (or the error) under
    results[section][name]."""
    if ("compiled" in name) != PHASE["compiled"]:
        return
    out = results.setdefault(section, {})
    if budget.left() < need_s:
        out[name] = {"skipped": f"budget: {budget.left():.0f} s left, row needs ~{need_s:.0f} s"}
        print(f"[skip] {section}/{name}: {out[name]['skipped']}", flush=True)
        return
    t = time.perf_counter()
    try:
        out[name] = fn()
        out[name]["wall_s"] = time.perf_counter() - t
        print(f"[ok]   {section}/{name} ({out[name]['wall_s']:.0f} s): "
              + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in out[name].items()
                          if k not in ("wall_s",)), flush=True)
    except Exception as err:  # report and continue with the next row
        traceback.print_exc()
        out[name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"[FAIL] {section}/{name}: {out[name]['error']}", flush=True)


# ------------------------------------------------------------------------------------------------ Noise Flow
def nf_model(official: Path):
    if (official / "model.ckpt.best.index").exists():
        from visionflows.noise.official import load_official

        return load_official(official), f"official ({official})"
    return create_model("noiseflow"), "create_model('noiseflow') (random init)"


def nf_batch(batch: int, side: int, dev: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 4, side, side, generator=g)
    iso = torch.tensor(ISOS)[torch.randint(0, len(ISOS), (batch,), generator=g)]
    cam = torch.randint(0, 5, (batch,), generator=g)
    noise = torch.sqrt(1e-3 * clean * (iso[:, None, None, None] / 800.0) + 1e-6) * torch.randn(clean.shape, generator=g)
    return noise.to(dev), NoiseContext.create(clean, iso, cam).to(device=dev)


def nf_train(args, dev, model, budget, results) -> None:
    noise, ctx = nf_batch(args.nf_batch, 32, dev)
    values = noise[0].numel()

    def loss_of(m):
        def f(x, c):  # the trainer's loss, without the per-call input validation of the public API
            z, logdet = m.transform(x, c)
            return -(m.prior.log_prob(z) + logdet).mean() / values
        return f

    ref = copy.deepcopy(model).train()
    ref_loss = loss_of(ref)(noise, ctx)
    ref_loss.backward()
    # the biases before a training-mode BatchNorm get a gradient that is 0 up to rounding noise: not compared
    names = [n for n, _ in ref.named_parameters()]
    skip = [n.endswith(("l_1.bias", "l_2.bias")) for n in names]
    ref_grads = [p.grad.detach().clone() for p in ref.parameters()]

    def make(mode: str):
        def run() -> dict:
            m = copy.deepcopy(model).train()
            f = loss_of(m)
            if mode == "compiled":
                f = torch.compile(f)
            elif mode == "compiled_cudagraphs":
                f = torch.compile(f, mode="reduce-overhead")
            t = time.perf_counter()
            loss = f(noise, ctx)
            loss.backward()
            sync(dev)
            first = time.perf_counter() - t
            gerr = max(float((p.grad - g).abs().max() / g.abs().max().clamp_min(1e-12))
                       for p, g, sk in zip(m.parameters(), ref_grads, skip) if not sk)
            assert gerr < 1e-3, f"gradients differ from eager by {gerr:.3g} (relative, worst parameter)"
            lv, rv = float(loss.detach()), float(ref_loss.detach())
            lerr = abs(lv - rv)
            assert lerr < 1e-4 * max(1.0, abs(rv)), f"loss {lv} vs eager {rv}"
            opt = torch.optim.Adam(m.parameters(), lr=1e-6)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                f(noise, ctx).backward()
                opt.step()

            r = timed(step, dev, args.min_time)
            return {"patches_per_s": args.nf_batch / r["median_s"], **r, "first_step_s": first,
                    "loss_abs_err_vs_eager": lerr, "max_grad_rel_err_vs_eager": gerr}
        return run

    for mode, need in (("eager", 10), ("compiled", 90), ("compiled_cudagraphs", 90)):
        if mode == "eager" or not (args.no_compile or (mode == "compiled_cudagraphs" and dev.type != "cuda")):
            row(results, f"noiseflow_train@{args.nf_batch}x32x32", mode, budget, need, make(mode))


def nf_sample(args, dev, model, budget, results, batch: int) -> None:
    model = copy.deepcopy(model).eval()
    _, ctx = nf_batch(batch, 32, dev, seed=1)
    eps = torch.randn(ctx.clean.shape, generator=torch.Generator().manual_seed(2)).to(dev)
    per_call = ctx.clean.numel()
    with torch.no_grad():
        ref = model.transform.inverse(eps, ctx)[0]

    def decode(e, clean, iso, cam):
        return model.transform.inverse(e, NoiseContext(clean, iso, cam))[0]

    def finish(fn, out: torch.Tensor, first: float) -> dict:
        err = float((out - ref).abs().max())
        assert err <= 1e-4 * float(ref.abs().max()) + 1e-6, f"max |diff| {err:.3g} vs eager"
        r = timed(fn, dev, args.min_time)
        return {"values_per_s": per_call / r["median_s"], **r, "first_call_s": first, "max_abs_diff_vs_eager": err}

    def eager() -> dict:
        def fn():
            return model.sample(ctx, temperature=1.0)
        return finish(fn, ref, 0.0)

    def eager_graph() -> dict:
        static = [eps.clone(), ctx.clean, ctx.iso, ctx.camera]
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up on a side stream (cached weights, allocator) before capture
                    decode(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            t = time.perf_counter()
            with torch.cuda.graph(graph):
                out = decode(*static)
            graph.replay()
            sync(dev)
            first = time.perf_counter() - t

        def fn():
            static[0].normal_()  # a fresh latent each call, as sampling draws one
            graph.replay()
            return out

        graph.replay()
        sync(dev)
        res = out.clone()
        return finish(fn, res, first)

    def compiled(mode: str | None):
        def run() -> dict:
            f = torch.compile(decode, dynamic=False, **({"mode": mode} if mode else {}))
            t = time.perf_counter()
            with torch.no_grad():
                out = f(eps, ctx.clean, ctx.iso, ctx.camera).clone()
            sync(dev)
            first = time.perf_counter() - t

            def fn():
                with torch.no_grad():
                    return f(torch.randn_like(eps), ctx.clean, ctx.iso, ctx.camera)
            return finish(fn, out, first)
        return run

    rows = [("eager", 10, eager)] + ([] if args.no_compile else [("compiled", 90, compiled(None))])
    if dev.type == "cuda":
        rows.append(("eager_graph", 20, eager_graph))
        if not args.no_compile:
            rows.append(("compiled_cudagraphs", 90, compiled("reduce-overhead")))
    for name, need, fn in rows:
        row(results, f"noiseflow_sample@{batch}x32x32", name, budget, need, fn)


# ---------------------------------------------------------------------------------------------- Wavelet Flow
def wavelet(args, dev, budget, results) -> None:
    from visionflows.training.optim import GlowAdamax
    from visionflows.wavelet import WaveletLevel, get_preset

    try:
        from visionflows.wavelet import set_fused
    except ImportError:
        from visionflows.wavelet.nets import set_fused

    p = get_preset("imagenet_64")
    for lv in [int(v) for v in args.wf_levels.split(",") if v]:
        wavelet_level(args, dev, budget, results, p, lv, WaveletLevel, set_fused, GlowAdamax)


def wavelet_level(args, dev, budget, results, p, lv: int, WaveletLevel, set_fused, GlowAdamax) -> None:  # noqa: N803
    """One level of preset ``p``: fp32/bf16 × eager/compiled training rows (see the module docstring)."""
    n = p.resolution.bit_length() - 1
    side = p.resolution // p.crops[lv]
    batch = args.wf_batch or p.batch_size
    width = args.wf_width or p.widths[lv]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, side, side), generator=g, dtype=torch.uint8).to(dev)
    spec = dict(level=lv, n_levels=n, channels=p.channels, steps=p.steps[lv], width=width,
                res_blocks=p.res_blocks)
    torch.manual_seed(0)
    base = WaveletLevel(**spec).to(dev).train()
    with torch.no_grad():
        base.bits_per_dim_level(images, torch.Generator().manual_seed(0))  # ActNorm DDI once
    section = f"wavelet_imagenet_64_level{lv}"
    results.setdefault(section, {})["config"] = {**spec, "batch": batch, "crop_side": side,
                                                 "parameters": sum(q.numel() for q in base.parameters())}

    def loss_fn(level):
        def f(imgs):
            return level.bits_per_dim_level(imgs, torch.Generator().manual_seed(1)).mean()
        return f

    with torch.no_grad():
        ref32 = float(loss_fn(set_fused(copy.deepcopy(base), False))(images))

    def make(amp: str | None, compile_: bool):
        def run() -> dict:
            level = copy.deepcopy(base)
            f = loss_fn(level)
            if compile_:
                f = torch.compile(f)
            dtype = torch.bfloat16 if amp == "bf16" else None
            with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                check = float(f(images))
            tol = 2e-2 if amp else 1e-4
            assert abs(check - ref32) <= tol * max(1.0, abs(ref32)), f"loss {check} vs plain fp32 {ref32}"
            opt = GlowAdamax(level.parameters(), lr=1e-6)

            def step() -> None:
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    loss = f(images)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t = time.perf_counter()
            step()
            sync(dev)
            first = time.perf_counter() - t
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            r = timed(step, dev, args.min_time, warmup=1, min_reps=3)
            out = {"images_per_s": batch / r["median_s"], **r, "first_step_s": first,
                   "loss_vs_plain_fp32": check - ref32}
            if dev.type == "cuda":
                out["peak_mib_above_model"] = (torch.cuda.max_memory_allocated() - before) / 2**20
            return out
        return run

    for name, amp, comp, need in (("fp32_eager", None, False, 15), ("bf16_eager", "bf16", False, 15),
                                  ("fp32_compiled", None, True, 120), ("bf16_compiled", "bf16", True, 120)):
        if not (comp and args.no_compile):
            row(results, section, name, budget, need, make(amp, comp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", "--dry", action="store_true", help="CPU smoke test at toy sizes")
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting rows after this many seconds")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timed calls per row")
    ap.add_argument("--nf-batch", type=int, default=None)
    ap.add_argument("--nf-sample-batch", default=None, help="comma list of sampling batches (default 8192,32768)")
    ap.add_argument("--wf-levels", default=None, help="comma list of imagenet_64 levels (default 6; --cpu: 1)")
    ap.add_argument("--wf-batch", type=int, default=None, help="default: the preset's (64)")
    ap.add_argument("--wf-width", type=int, default=None, help="override the level width (smoke tests)")
    ap.add_argument("--sections", default="nf_train,nf_sample,wavelet")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (default with --cpu)")
    ap.add_argument("--compile", action="store_true", help="with --cpu: time the compiled rows too")
    ap.add_argument("--official", type=Path, default=ROOT.parent / "shared" / "anchors" / "noiseflow_official")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = ap.parse_args()
    if args.cpu:
        dev = torch.device("cpu")
        defaults = dict(min_time=0.2, nf_batch=8, nf_sample_batch="16", wf_levels="1", wf_batch=4, wf_width=16)
        args.no_compile = args.no_compile or not args.compile
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device (use --cpu for a CPU smoke test)")
        dev = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the checks compare against it)
        torch.backends.cudnn.allow_tf32 = False
        defaults = dict(min_time=2.0, nf_batch=138, nf_sample_batch="8192,32768", wf_levels="6", wf_batch=None,
                        wf_width=None)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    budget = Budget(args.budget_s)
    sections = set(args.sections.split(","))
    model, source = nf_model(args.official)
    model = model.to(dev)
    results: dict = {"machine": machine(), "config": {k: str(v) for k, v in vars(args).items()},
                     "noiseflow_model": source}
    print(f"{torch.__version__} on {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}; "
          f"Noise Flow: {source}", flush=True)
    for compiled in (False, True):
        if compiled and args.no_compile:
            break
        PHASE["compiled"] = compiled
        if "nf_train" in sections:
            nf_train(args, dev, model, budget, results)
        if "nf_sample" in sections:
            for batch in [int(b) for b in str(args.nf_sample_batch).split(",") if b]:
                nf_sample(args, dev, model, budget, results, batch)
        if "wavelet" in sections:
            wavelet(args, dev, budget, results)
    results["total_s"] = time.perf_counter() - T0
    failed = [f"{s}/{k}" for s, rows in results.items() if isinstance(rows, dict)
              for k, v in rows.items() if isinstance(v, dict) and "error" in v]
    results["failed"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {results['total_s']:.0f} s; {len(failed)} failed {failed}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
