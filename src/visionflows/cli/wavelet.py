"""``visionflows wavelet train | eval | sample | superres | presets`` — a thin layer over :mod:`visionflows.wavelet`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("wavelet", help="Wavelet Flow: per-level training, evaluation, sampling, super-res")
    sub = p.add_subparsers(dest="wavelet_command", metavar="ACTION")

    t = sub.add_parser("train", help="train one level (or all levels, in parallel processes)")
    t.add_argument("--preset", required=True, help="preset name (see `visionflows wavelet presets`)")
    t.add_argument("--level", required=True, help="level index L, or 'all'")
    t.add_argument("--parallel", type=int, default=None,
                   help="with --level all: worker processes training levels at a time (default: one per GPU when "
                        "there are several, else 1)")
    t.add_argument("--data", default=None, help="image folder, ImageNet .npz, or 'builtin' (default)")
    t.add_argument("--run-dir", default=None, help="run root; level L goes to RUN_DIR/level_L")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: the preset's)")
    t.add_argument("--seed", type=int, default=0, help="base seed (level L uses seed + L)")
    t.add_argument("--channels", type=int, default=None, help="override the preset's colour channels")
    t.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    t.add_argument("--compile", action="store_true")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--threads", type=int, default=None, help="torch threads per level job")
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this wall time; with --level all: the whole run's budget, "
                        "shared over the levels by their cost")
    t.add_argument("--on-error", choices=["skip", "stop"], default="skip", help="corrupt images: warn+skip or stop")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    for name, help_ in (("eval", "bits/dim per level and total"), ("sample", "sample PNG grids per resolution"),
                        ("superres", "super-resolve an image, with PSNR/SSIM")):
        q = sub.add_parser(name, help=help_)
        src = q.add_mutually_exclusive_group(required=True)
        src.add_argument("--run-dir", help="a wavelet run root, its levels/ folder, one level's run dir, or the "
                                           "run dir of `visionflows demo` (newest checkpoint of each level)")
        src.add_argument("--model", help="a saved full Wavelet Flow model file")
        q.add_argument("--seed", type=int, default=0)
        if name == "eval":
            q.add_argument("--data", default=None, help="image folder, ImageNet .npz, or 'builtin' (held-out photos)")
            q.add_argument("--max-images", type=int, default=256)
            q.add_argument("--batch-size", type=int, default=32)
            q.add_argument("--json", default=None, help="also write the results to this JSON file")
            q.add_argument("--save-model", default=None, help="save the assembled model to this file")
            q.set_defaults(func=_eval)
        else:
            q.add_argument("--out", required=True, help="output folder")
            q.add_argument("--temperature", type=float, default=1.0)
        if name == "sample":
            q.add_argument("--n", type=int, default=16)
            q.set_defaults(func=_sample)
        if name == "superres":
            q.add_argument("--image", required=True, help="ground-truth image (square, power-of-two side)")
            q.add_argument("--factor", type=int, default=4)
            q.add_argument("--n-samples", type=int, default=4)
            q.add_argument("--center-crop", action="store_true", help="centre-crop and resize any image")
            q.set_defaults(func=_superres)

    pr = sub.add_parser("presets", help="list the named presets")
    pr.set_defaults(func=_presets)


def _load(args: argparse.Namespace, require=None):
    from visionflows.errors import CheckpointError
    from visionflows.wavelet import WaveletFlow
    from visionflows.wavelet.train import assemble

    if args.run_dir:
        return assemble(args.run_dir, require=require)
    from visionflows.wavelet.train import load_wavelet

    model = load_wavelet(args.model)
    if not isinstance(model, WaveletFlow):
        raise CheckpointError(
            f"{args.model} holds a {getattr(model, 'kind', '?')} model, not a full Wavelet Flow.",
            "pass the run root with --run-dir (levels are assembled) or a file written by `wavelet eval --save-model`.",
        )
    model.level_sources = {lv: f"{args.model}" for lv in range(model.n_levels + 1)}
    return model


def _train(args: argparse.Namespace) -> int:
    from visionflows.errors import ConfigError
    from visionflows.wavelet import get_preset
    from visionflows.wavelet.train import level_run_dir, train_level

    preset = get_preset(args.preset)
    root = Path(args.run_dir or f"runs/wavelet-{preset.name}")
    overrides = {"channels": args.channels} if args.channels else {}
    if args.level == "all":
        return _train_all(args, preset, root, overrides)
    try:
        level = int(args.level)
    except ValueError:
        raise ConfigError(f"--level must be an integer or 'all', got {args.level!r}.") from None
    data = args.data
    if data is not None and args.on_error == "stop" and Path(data).is_dir():
        from visionflows.data.images import load_folder

        load_folder(data, get_preset(preset, **overrides).channels, on_error="stop")  # fail fast on corrupt files
    result = train_level(
        preset, level, level_run_dir(root, level), data=data, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, warmup_steps=args.warmup, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
        amp=args.amp, compile=args.compile, num_threads=args.threads, progress=not args.no_progress,
        checkpoint_every=args.checkpoint_every, max_minutes=args.max_minutes, **overrides,
    )
    ev = result.eval_metrics
    msg = f"level {level}: step {result.step}, run dir {result.run_dir}"
    if ev:
        msg += f", held-out {ev.get('bpd', float('nan')):.4f} bits/dim (contribution {ev.get('contrib_bpd', 0):.4f})"
    print(msg)
    return 0


def _train_all(args: argparse.Namespace, preset, root: Path, overrides: dict) -> int:
    """``--level all``: every level on long-lived library workers (:func:`visionflows.wavelet.train_all_levels`)."""
    from visionflows.wavelet.train import train_all_levels

    outcomes = train_all_levels(
        preset.name, root, parallel=args.parallel, data=args.data, steps=args.steps, max_minutes=args.max_minutes,
        threads=args.threads, log=lambda m: print(m, flush=True), batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup, seed=args.seed, resume=args.resume, overwrite=args.overwrite, amp=args.amp,
        compile=bool(args.compile), checkpoint_every=args.checkpoint_every, on_error=args.on_error, **overrides,
    )
    wall = max((o.started_s + o.wall_s for o in outcomes.values()), default=0.0)
    total = sum(o.eval.get("contrib_bpd", float("nan")) for o in outcomes.values())
    print(f"trained levels {sorted(outcomes)} into {root} in {wall:.0f} s "
          f"(steps {', '.join(f'{lv}: {o.step}' for lv, o in outcomes.items())}); "
          f"held-out bits/dim (sum of level contributions) {total:.4f}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.data.images import open_images
    from visionflows.io import save_model
    from visionflows.wavelet.sample import evaluate_model

    model = _load(args)
    pool = open_images(args.data, model.resolution, model.channels, "train")
    images = pool.eval_images[: args.max_images]
    res = evaluate_model(model, images, args.batch_size, args.seed)
    res["level_sources"] = {str(k): v for k, v in model.level_sources.items()}
    res["data"] = repr(pool)
    print(f"Wavelet Flow {model.name or ''} {model.resolution}x{model.resolution}x{model.channels}, "
          f"{res['n_images']} images from {pool.source}")
    print(f"{'level':>5} {'dims':>7} {'bits/dim':>9} {'contrib':>9}  checkpoint")
    for lv, (c, b) in enumerate(zip(res["levels"], res["level_bpd"])):
        print(f"{lv:>5} {model.level_dims()[lv]:>7} {b:>9.4f} {c:>9.4f}  {model.level_sources.get(lv, '-')}")
    print(f"total bits/dim: {res['total']:.4f}")
    if args.json:
        from visionflows.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    if args.save_model:
        save_model(model, args.save_model, extra={"level_sources": json.dumps(res["level_sources"])})
        print(f"saved the assembled model to {args.save_model}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from visionflows.wavelet.sample import save_sample_grids

    model = _load(args, require=())
    paths = save_sample_grids(model, args.out, args.n, args.temperature, args.seed)
    for p in paths:
        print(p)
    return 0


def _superres(args: argparse.Namespace) -> int:
    from visionflows.data.images import load_image
    from visionflows.errors import InputError
    from visionflows.wavelet import n_levels_for
    from visionflows.wavelet.sample import prepare_ground_truth, super_resolution_report

    image = load_image(args.image, channels=None)
    n_levels_for(args.factor, "--factor")
    model = _load(args, require=())
    if image.shape[0] != model.channels:
        raise InputError(
            f"{args.image} has {image.shape[0]} channel(s) but the model expects {model.channels}.",
            "convert the image (RGB ↔ greyscale) or use a model with the matching channel count.",
        )
    gt = prepare_ground_truth(image, model.resolution, args.center_crop)
    rep = super_resolution_report(model, gt, args.factor, args.out, args.n_samples, args.temperature, args.seed)
    print(f"super-resolution x{rep['factor']}: {rep['low_res']}² → {rep['resolution']}², T = {rep['temperature']}")
    print(f"{'method':<12} {'PSNR (dB)':>10} {'SSIM':>8}")
    for k, m in enumerate(rep["samples"]):
        print(f"{'sample ' + str(k):<12} {m['psnr']:>10.3f} {m['ssim']:>8.4f}")
    for k in ("sample_mean", "bicubic", "box"):
        print(f"{k:<12} {rep[k]['psnr']:>10.3f} {rep[k]['ssim']:>8.4f}")
    print(f"wrote {Path(args.out) / 'superres.png'} and {Path(args.out) / 'metrics.json'}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from visionflows.wavelet import get_preset, list_models

    for name in list_models():
        p = get_preset(name)
        print(f"{name:<18} {p.resolution:>5}px  {p.param_count() / 1e6:7.2f} M params  {p.description}")
    sys.stdout.flush()
    return 0
