"""``visionflows wavelet train | eval | sample | superres | presets`` — a thin layer over :mod:`visionflows.wavelet`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionflows.cli.anneal_args import add_anneal_args as _add_anneal_args
from visionflows.cli.anneal_args import anneal_config as _anneal_config
from visionflows.cli.anneal_args import print_anneal_stats as _print_anneal_stats
from visionflows.cli.common import (
    add_trainer_args,
    check_image_data,
    check_train_args,
    trainer_config,
    trainer_settings,
)
from visionflows.errors import CheckpointError, ConfigError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    TEMPERATURE,
    check_finite_weights,
    check_input_dir,
    check_model_file,
    check_output_dir,
    check_output_file,
    number_arg,
)

__all__ = ["register"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)


def _level_arg(text: str) -> int | str:
    """``--level``: a level index (integer >= 0) or ``all``."""
    if text == "all":
        return text
    try:
        return _INT0(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a level index (an integer >= 0) or 'all', got {text!r}") from None


def _factor_arg(text: str) -> int:
    """``--factor``: a power of two >= 2."""
    v = _INT1(text)
    if v < 2 or v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two >= 2 (2, 4, 8, ...), got {text}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("wavelet", help="Wavelet Flow: per-level training, evaluation, sampling, super-res")
    sub = p.add_subparsers(dest="wavelet_command", metavar="ACTION")

    t = sub.add_parser("train", help="train one level (or all levels, in parallel processes)")
    t.add_argument("--preset", required=True, help="preset name (see `visionflows wavelet presets`)")
    t.add_argument("--level", required=True, type=_level_arg, help="level index L, or 'all'")
    t.add_argument("--parallel", type=_INT1, default=None,
                   help="with --level all only: worker processes training levels at a time (default: one per GPU when "
                        "there are several, else 1)")
    t.add_argument("--data", default=None, help="image folder, ImageNet .npz, or 'builtin' (default)")
    t.add_argument("--channels", type=int, choices=[1, 3], default=None, help="override the preset's colour channels")
    t.add_argument("--on-error", choices=["skip", "stop"], default="skip", help="corrupt images: warn+skip or stop")
    add_trainer_args(t, steps="the preset's max_steps", lr="the preset's", batch_size="the preset's",
                     warmup_steps="the preset's", run_dir_required=False,
                     run_dir_help="run root, level L goes to RUN_DIR/level_L (default runs/wavelet-PRESET)",
                     seed_help="base seed (level L uses seed + L; default 0)", legacy_warmup=True)
    for action in t._actions:  # the wavelet meaning of two shared flags
        if action.option_strings == ["--threads"]:
            action.help = "torch threads per level job"
        if action.option_strings == ["--max-minutes"]:
            action.help = ("stop (with a checkpoint) after this wall time; with --level all: the whole run's budget, "
                           "shared over the levels by their cost")
    t.set_defaults(func=_train)

    for name, help_ in (("eval", "bits/dim per level and total"), ("sample", "sample PNG grids per resolution"),
                        ("superres", "super-resolve an image, with PSNR/SSIM")):
        q = sub.add_parser(name, help=help_)
        src = q.add_mutually_exclusive_group(required=True)
        src.add_argument("--run-dir", help="a wavelet run root, its levels/ folder, one level's run dir, or the "
                                           "run dir of `visionflows demo` (newest checkpoint of each level)")
        src.add_argument("--model", help="a saved full Wavelet Flow model file")
        q.add_argument("--seed", type=_INT0, default=0)
        if name == "eval":
            q.add_argument("--data", default=None, help="image folder, ImageNet .npz, or 'builtin' (held-out photos)")
            q.add_argument("--max-images", type=_INT1, default=256)
            q.add_argument("--batch-size", type=_INT1, default=32)
            q.add_argument("--json", default=None, help="also write the results to this JSON file")
            q.add_argument("--save-model", default=None, help="save the assembled model to this .safetensors file")
            q.add_argument("--no-codecs", action="store_true", help="skip the lossless-codec reference (PNG and "
                           "WebP-lossless bits/dim of the same pixels)")
            q.set_defaults(func=_eval)
        else:
            q.add_argument("--out", required=True, help="output folder")
            q.add_argument("--temperature", type=number_arg(TEMPERATURE), default=1.0,
                           help="sampling temperature (1 = the model)")
        if name == "sample":
            q.add_argument("--n", type=_INT1, default=16, help="samples per resolution")
            _add_anneal_args(q)
            q.set_defaults(func=_sample)
        if name == "superres":
            what = q.add_mutually_exclusive_group(required=True)
            what.add_argument("--image", help="one ground-truth image (square, power-of-two side; or --center-crop)")
            what.add_argument("--images", help="a folder of held-out photos: centre squares at the model's "
                                               "resolution, a PSNR/SSIM table at every --factors against bicubic/box")
            q.add_argument("--factor", type=_factor_arg, default=None, help="with --image: a power of two >= 2, "
                           "below the model's resolution (default 4)")
            q.add_argument("--factors", type=_factors_arg, default=None, help="with --images: comma-separated "
                           "powers of two (default 2,4)")
            q.add_argument("--n-samples", type=_INT1, default=None, help="with --image: samples drawn (default 4; "
                           "1 at T = 0)")
            q.add_argument("--mean", action="store_true", default=None, help="with --image: output the mean of the "
                           "--n-samples samples (the conditional-mean estimate)")
            q.add_argument("--mean-of", type=_INT1, default=None, help="with --images: samples averaged by the "
                           "mean-of-n method (T = 1; default 8)")
            q.add_argument("--max-images", type=_INT1, default=None, help="with --images: photos used (default 64)")
            q.add_argument("--anneal-images", type=_INT1, default=None, help="with --images and --anneal: annealed "
                           "on the first N photos only (it is slow; default all)")
            q.add_argument("--center-crop", action="store_true", help="centre-crop and resize any image")
            _add_anneal_args(q)
            q.set_defaults(func=_superres)

    pr = sub.add_parser("presets", help="list the named presets")
    pr.set_defaults(func=_presets)


def _factors_arg(text: str) -> tuple[int, ...]:
    """``--factors``: comma-separated powers of two >= 2."""
    parts = [t for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("must name at least one factor, e.g. 2,4")
    return tuple(sorted({_factor_arg(t.strip()) for t in parts}))


def _check_source(args: argparse.Namespace) -> None:
    """``--run-dir`` (an existing folder) or ``--model`` (a full Wavelet Flow file with finite weights)."""
    if args.run_dir:
        check_input_dir(args.run_dir, "--run-dir", "wavelet run folder", error=CheckpointError,
                        fix="give the run root of `visionflows wavelet train` (or the demo's run dir), or a model "
                            "file with --model.")
    else:
        check_model_file(args.model, "--model", families=("wavelet",),
                         fix="pass the run root with --run-dir (levels are assembled) or a file written by `wavelet "
                             "eval --save-model`.")


def _load(args: argparse.Namespace, require=None):
    from visionflows.wavelet import WaveletFlow
    from visionflows.wavelet.train import assemble

    _check_source(args)
    if args.run_dir:
        return check_finite_weights(assemble(args.run_dir, require=require), f"--run-dir {args.run_dir}")
    from visionflows.wavelet.train import load_wavelet

    model = load_wavelet(args.model)
    if not isinstance(model, WaveletFlow):
        raise CheckpointError(
            f"{args.model} holds a {getattr(model, 'kind', '?')} model, not a full Wavelet Flow.",
            "pass the run root with --run-dir (levels are assembled) or a file written by `wavelet eval --save-model`.",
        )
    model.level_sources = {lv: f"{args.model}" for lv in range(model.n_levels + 1)}
    return model


#: settings train_level takes as its own arguments (the rest go to it as ``train_overrides``)
_LEVEL_ARGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup_steps": "warmup_steps",
               "seed": "seed", "amp": "amp", "compile": "compile", "num_threads": "num_threads",
               "checkpoint_every": "checkpoint_every", "device": "device", "max_minutes": "max_minutes",
               "progress": "progress", "tensorboard": "tensorboard", "eval_every": "eval_every"}


def _train(args: argparse.Namespace) -> int:
    from visionflows.wavelet import get_preset, n_levels_for
    from visionflows.wavelet.train import level_run_dir, train_level

    preset = get_preset(args.preset)
    root = Path(args.run_dir or f"runs/wavelet-{preset.name}")
    overrides = {"channels": args.channels} if args.channels else {}
    n = n_levels_for(get_preset(preset, **overrides).resolution, "preset resolution")
    if args.level != "all" and args.level > n:
        raise ConfigError(f"--level {args.level} is outside 0..{n} for preset {preset.name}.",
                          f"use a level in 0..{n}, or --level all.")
    if args.level != "all" and args.parallel is not None:
        raise ConfigError(f"--parallel {args.parallel} sets how many levels train at a time, but --level "
                          f"{args.level} trains one level: it would be ignored.",
                          "drop --parallel, or train every level with --level all --parallel N.")
    check_image_data(args.data)
    if args.level == "all":
        return _train_all(args, preset, root, overrides)
    level = args.level
    check_train_args(args, run_dir=level_run_dir(root, level), steps=preset.max_steps, lr=preset.lr,
                     batch_size=get_preset(preset, **overrides).batch_size, warmup_steps=preset.warmup_steps,
                     optimizer="adamax_glow")
    settings = trainer_settings(args)
    own = {arg: settings.pop(key) for key, arg in _LEVEL_ARGS.items() if key in settings}
    data = args.data
    if data is not None and args.on_error == "stop" and Path(data).is_dir():
        from visionflows.data.images import load_folder

        load_folder(data, get_preset(preset, **overrides).channels, on_error="stop")  # fail fast on corrupt files
    result = train_level(preset, level, level_run_dir(root, level), data=data, resume=args.resume,
                         overwrite=args.overwrite, train_overrides=settings, **own, **overrides)
    ev = result.eval_metrics
    msg = f"level {level}: step {result.step}, run dir {result.run_dir}"
    if ev:
        msg += f", held-out {ev.get('bpd', float('nan')):.4f} bits/dim (contribution {ev.get('contrib_bpd', 0):.4f})"
    print(msg)
    return 0


#: trainer settings that train_all_levels takes as its own arguments (``max_minutes``: the whole run's budget;
#: ``num_threads``: per worker); the rest go to every level as ``train_overrides``
_ALL_ARGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup_steps": "warmup_steps",
             "seed": "seed", "amp": "amp", "compile": "compile", "num_threads": "threads",
             "checkpoint_every": "checkpoint_every", "device": "device", "max_minutes": "max_minutes",
             "tensorboard": "tensorboard"}


def _train_all(args: argparse.Namespace, preset, root: Path, overrides: dict) -> int:
    """``--level all``: every level on long-lived library workers (:func:`visionflows.wavelet.train_all_levels`)."""
    from visionflows.wavelet import get_preset
    from visionflows.wavelet.train import train_all_levels

    p = get_preset(preset, **overrides)
    # the settings are checked here; the run root is not a run itself: train_all_levels checks each level's dir
    trainer_config(args, steps=p.max_steps, lr=p.lr, batch_size=p.batch_size, warmup_steps=p.warmup_steps,
                   optimizer="adamax_glow")
    settings = trainer_settings(args)
    settings.pop("progress", None)  # workers never draw progress bars: each level's start and end is printed
    own = {arg: settings.pop(key) for key, arg in _ALL_ARGS.items() if key in settings}
    outcomes = train_all_levels(
        preset.name, root, parallel=args.parallel, data=args.data, log=lambda m: print(m, flush=True),
        resume=args.resume, overwrite=args.overwrite, on_error=args.on_error, train_overrides=settings, **own,
        **overrides,
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

    for flag, path, suffix in (("--json", args.json, None), ("--save-model", args.save_model, ".safetensors")):
        if path:
            check_output_file(path, flag, suffixes=[suffix] if suffix else None)
    check_image_data(args.data)
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
    if not args.no_codecs:
        from visionflows.wavelet.codecs import codec_bits_per_dim

        res["codecs"] = codec_bits_per_dim(images)
        ref = ", ".join(f"{name} {bpd:.4f}" for name, bpd in res["codecs"].items())
        best = min(res["codecs"].values())
        verdict = "below" if res["total"] < best else "above"
        print(f"lossless codecs on the same {res['n_images']} images (Pillow): {ref} bits/dim; the model is "
              f"{abs(res['total'] - best):.4f} bits/dim {verdict} the best codec")
    if args.json:
        from visionflows.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    if args.save_model:
        save_model(model, args.save_model, extra={"level_sources": json.dumps(res["level_sources"])})
        print(f"saved the assembled model to {args.save_model}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from visionflows.wavelet.sample import save_sample_grids

    check_output_dir(args.out, "--out")
    anneal = _anneal_config(args)
    model = _load(args, require=())
    paths = save_sample_grids(model, args.out, args.n, args.temperature, args.seed, anneal=anneal)
    for p in paths:
        print(p)
    _print_anneal_stats(model)
    return 0


def _superres(args: argparse.Namespace) -> int:
    from visionflows.cli.wavelet_superres import superres

    return superres(args)


def _presets(args: argparse.Namespace) -> int:
    from visionflows.wavelet import get_preset, list_models

    for name in list_models():
        p = get_preset(name)
        print(f"{name:<18} {p.resolution:>5}px  {p.param_count() / 1e6:7.2f} M params  {p.description}")
    sys.stdout.flush()
    return 0
