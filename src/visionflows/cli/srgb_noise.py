"""``visionflows srgb-noise info|train|eval|adapt|cameras|experiment``: sRGB Noise Flow on real 8-bit pairs.

``--data`` is a dataset as published (SIDD sRGB, PolyU, Nam, ``*_noisy``/``*_clean``; PNG or JPEG; ``--layout``
names it when auto-detection cannot) or a CSV manifest. ``--holdout-camera NAME`` trains on / evaluates the
other cameras against that one; ``adapt`` fits a trained flow's camera-specific part from k pairs of a new
camera (:mod:`visionflows.noise.srgb.adapt`); ``cameras`` runs the whole leave-one-camera-out study
(:mod:`visionflows.experiments.srgb_cameras`); ``experiment --holdout-camera NAME|all`` trains DnCNNs on Gaussian,
sRGB Noise Flow and real noise of the other cameras and scores them on that camera's photos
(:mod:`visionflows.experiments.srgb_denoise`).

A skin over :mod:`visionflows.noise.srgb` (the model and its training task on the shared trainer),
:mod:`visionflows.noise.fitting` (the baselines) and :mod:`visionflows.data.srgb_pairs`; every input is checked
before any work starts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visionflows.cli.common import add_trainer_args, check_train_args
from visionflows.data.srgb_layouts import LAYOUTS
from visionflows.errors import ConfigError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    OPEN_UNIT,
    POSITIVE,
    POSITIVE_INT,
    Range,
    check_input_dir,
    check_input_file,
    check_model_file,
    check_output_dir,
    check_output_file,
    number_arg,
)

__all__ = ["register"]

_INT1 = number_arg(POSITIVE_INT)
_PATCH = number_arg(Range(integer=True, low=2))



#: the sRGB Noise Flow presets of `srgb-noise train` / `cameras`
SRGB_PRESETS = ["srgb_noiseflow", "srgb_noiseflow_spatial", "srgb_noiseflow_sdl"]

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("srgb-noise", help="sRGB Noise Flow: train, evaluate (NLL/KL), experiment")
    sub = p.add_subparsers(dest="srgb_command", metavar="SUBCOMMAND")

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", required=True, help="folder of noisy/clean pairs, searched recursively (SIDD sRGB "
                       "*_NOISY_SRGB_*/*_GT_SRGB_*, PolyU/Nam *_real/*_mean, *_noisy/*_clean; PNG or JPEG), or a "
                       "CSV manifest (columns noisy, clean, camera, iso)")
        q.add_argument("--layout", choices=["auto", *LAYOUTS], default="auto",
                       help="the dataset's layout (default: detected)")
        q.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                       help="unreadable, differently sized, misaligned or unpaired files: stop (default) or skip "
                            "them with a warning")

    def common(q: argparse.ArgumentParser, seed: bool = True, holdout: bool = True) -> None:
        data_args(q)
        q.add_argument("--patch", type=_PATCH, default=32, help="patch side in pixels")
        q.add_argument("--test-fraction", type=number_arg(OPEN_UNIT), default=0.25,
                       help="held-out fraction of images (ignored with --holdout-camera)")
        if holdout:
            q.add_argument("--holdout-camera", metavar="NAME",
                           help="leave this camera out: train on the other cameras, test on its pairs (experiment: "
                                "'all' holds out each camera in turn)")
        if seed:
            q.add_argument("--seed", type=number_arg(NON_NEGATIVE_INT), default=0)

    def adapt_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--tile", type=number_arg(NON_NEGATIVE_INT), default=256,
                       help="cut the camera's pairs into tiles of this side first; a 'pair' is then one tile "
                            "(0 = whole pairs; default 256)")
        q.add_argument("--adapt-steps", type=number_arg(NON_NEGATIVE_INT), default=200,
                       help="adaptation steps (default 200)")
        q.add_argument("--adapt-lr", type=number_arg(Range(low=0, low_open=True)), default=0.01)

    i = sub.add_parser("info", help="the pairs a --data path holds: layout, count, cameras, ISOs")
    data_args(i)
    i.set_defaults(func=_info)

    t = sub.add_parser("train", help="train an sRGB Noise Flow on the training split (shared trainer)")
    common(t, seed=False)
    t.add_argument("--width", type=_INT1, default=4, help="coupling-network width")
    t.add_argument("--preset", choices=SRGB_PRESETS, default="srgb_noiseflow",
                   help="architecture: the paper's released model (default), with spatial couplings and ActNorm, or "
                        "those plus a per-camera signal-dependent scale (SDL)")
    t.add_argument("--unknown-prob", type=number_arg(Range(low=0, high=1, high_open=True)), default=0.0,
                   help="train the 'unknown' camera/ISO entries: replace each patch's camera (and ISO) by unknown "
                        "with this probability (what an unseen camera gets; default 0)")
    add_trainer_args(t, steps=2000, lr=1e-3, batch_size=32,
                     seed_help="seed of the training and of the train/test split (default 0)",
                     device_help="cpu (the default, and the only device this command runs on)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="NLL/dim and marginal KL on held-out pairs, with Gaussian baselines")
    common(e)
    e.add_argument("--model", action="append", default=[], help="sRGB noise-model file or run dir (repeatable)")
    e.add_argument("--out", required=True)
    e.add_argument("--max-patches", type=_INT1, default=1024)
    e.add_argument("--no-baselines", action="store_true", help="skip the baselines fitted on the training split")
    e.add_argument("--k", type=_INT1, action="append", default=[],
                   help="with --holdout-camera: also adapt each flow on k pairs of the camera, and fit the "
                        "heteroscedastic baseline on them (repeatable, e.g. --k 1 --k 4)")
    e.add_argument("--folds", type=_INT1, default=3, help="with --k: adaptation folds over the camera's images")
    adapt_args(e)
    e.set_defaults(func=_eval)

    a = sub.add_parser("adapt", help="fit a trained sRGB flow's camera-specific part from k pairs of a new camera")
    data_args(a)
    a.add_argument("--model", required=True, help="trained sRGB Noise Flow (file or run dir)")
    a.add_argument("--camera", required=True, help="the camera's name (as in the data; may be new to the model)")
    a.add_argument("--k", type=_INT1, required=True, help="number of pairs of the camera to adapt on")
    a.add_argument("--out", required=True, help="adapted model file (.safetensors)")
    a.add_argument("--patch", type=_PATCH, default=32, help="patch side in pixels")
    a.add_argument("--batch-size", type=_INT1, default=32)
    a.add_argument("--seed", type=number_arg(NON_NEGATIVE_INT), default=0)
    adapt_args(a)
    a.set_defaults(func=_adapt)

    c = sub.add_parser("cameras", help="leave-one-camera-out study: train per held-out camera, zero-shot and "
                       "adapted NLL/KL vs k, table and figure (run_camera_study)")
    data_args(c)
    c.add_argument("--out", required=True)
    c.add_argument("--camera", action="append", default=[], help="held-out camera (repeatable; default: all)")
    c.add_argument("--k", type=_INT1, action="append", default=[], help="pairs to adapt on (default 1 and 4)")
    c.add_argument("--flow-steps", type=_INT1, default=600)
    c.add_argument("--folds", type=_INT1, default=3)
    c.add_argument("--preset", choices=SRGB_PRESETS, default="srgb_noiseflow_sdl",
                   help="the flow trained without each camera (default: with the per-camera signal-dependent scale, "
                        "measured better on unseen cameras than srgb_noiseflow_spatial; docs/denoising.md)")
    c.add_argument("--unknown-prob", type=number_arg(Range(low=0, high=1, high_open=True)), default=0.2)
    c.add_argument("--patch", type=_PATCH, default=32)
    c.add_argument("--seed", type=number_arg(NON_NEGATIVE_INT), default=0)
    adapt_args(c)
    c.set_defaults(func=_cameras)

    x = sub.add_parser("experiment", help="denoisers trained on sRGB Noise Flow / Gaussian / real noise; with "
                       "--holdout-camera: scored on a camera nobody saw (run_srgb_denoise_study)")
    common(x)
    x.add_argument("--out", required=True)
    x.add_argument("--flow-steps", type=_INT1, default=None,
                   help="sRGB Noise Flow steps (default 600 with --holdout-camera, else 1000)")
    x.add_argument("--denoise-steps", type=_INT1, default=None,
                   help="steps of every DnCNN (default 3000 with --holdout-camera, else 300)")
    x.add_argument("--batch-size", type=_INT1, default=32)
    x.add_argument("--lr", type=number_arg(POSITIVE), default=1e-3, help="DnCNN learning rate (--holdout-camera)")
    x.add_argument("--max-minutes", type=number_arg(POSITIVE), default=10.0,
                   help="with --holdout-camera: wall-time cap of each trained model (the flow and every denoiser "
                        "separately; default 10)")
    x.add_argument("--noise-flow", default=None,
                   help="with --holdout-camera NAME: an sRGB Noise Flow trained without that camera (file or run "
                        "dir; default: train one here)")
    x.add_argument("--ema-decay", type=number_arg(Range(low=0, high=1, high_open=True)), default=0.0,
                   help="with --holdout-camera: score each denoiser with the moving average of its weights "
                        "(default 0 = the last weights; 0.999 measured worse at 1000-2000 steps)")
    x.add_argument("--preset", choices=SRGB_PRESETS, default="srgb_noiseflow_spatial",
                   help="with --holdout-camera: the flow trained on the other cameras (default srgb_noiseflow_spatial)")
    x.add_argument("--threads", type=_INT1, default=None, help="torch CPU threads")
    x.add_argument("--no-progress", action="store_true", help="no progress bars")
    x.set_defaults(func=_experiment)


def _check_srgb_model(path: str, flag: str = "--model") -> str:
    return check_model_file(path, flag, families=("srgb-noise",),
                            fix="pass an sRGB noise model (from `visionflows srgb-noise train`); raw models: "
                                "`visionflows noise eval`.")["path"]


def _train(args: argparse.Namespace) -> int:
    from visionflows.noise.srgb import SRGBNoiseTask
    from visionflows.training import train

    cfg = check_train_args(args, device="cpu", tensorboard=False)
    if cfg.device not in ("cpu", "auto"):
        raise ConfigError(f"srgb-noise train runs on the CPU only (got --device {cfg.device}).",
                          "drop --device or pass --device cpu.")
    cfg.device = "cpu"
    from visionflows.registry import create_model

    train_pairs, test_pairs = _split(args, _load(args), cfg.seed)
    train_pairs.check_patch(args.patch, "--patch")
    proto = create_model(args.preset)
    task = SRGBNoiseTask(train_pairs, cfg.batch_size, args.patch, test_pairs, arch=proto.arch, width=args.width,
                         seed=cfg.seed, norm=proto.norm, unknown_prob=args.unknown_prob)
    result = train(task, cfg, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"step": result.step, "run_dir": str(result.run_dir), **result.eval_metrics}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.denoise.evaluate import model_name, write_table
    from visionflows.io import load_model
    from visionflows.noise.fitting import fit_srgb_baselines
    from visionflows.noise.srgb import evaluate_srgb_noise_models

    check_output_dir(args.out, "--out")
    _check_data(args)
    if args.k and not args.holdout_camera:
        raise ConfigError("--k adapts to a held-out camera.", "pass --holdout-camera NAME with --k, or drop --k.")
    if args.no_baselines and not args.model:
        raise ConfigError("nothing to evaluate: --no-baselines and no --model.",
                          "pass --model FILE or drop --no-baselines.")
    paths = [_check_srgb_model(path) for path in args.model]
    models = {model_name(path): load_model(path) for path in paths}
    if args.holdout_camera:
        return _eval_holdout(args, models)
    train_pairs, test_pairs = _split(args, _load(args), args.seed)
    if not args.no_baselines:
        gauss, hetero = fit_srgb_baselines(train_pairs, args.patch, args.seed)
        models = {"gaussian": gauss, "heteroscedastic": hetero, **models}
    patches = test_pairs.grid_patches(args.patch, args.max_patches, args.seed)
    scores = evaluate_srgb_noise_models(models, patches, args.seed)
    rows = [{"model": k, "nll_per_dim": v["nll_per_dim"], "marginal_kl": v["kl"]} for k, v in scores.items()]
    write_table(rows, args.out, "noise_models",
                f"{patches['noisy'].shape[0]} held-out patches of {len(test_pairs)} images")
    print((Path(args.out) / "noise_models.txt").read_text(), end="")
    return 0


def _check_data(args: argparse.Namespace) -> None:
    from visionflows.errors import DataError

    if str(args.data).lower().endswith(".csv") or args.layout == "manifest" and Path(args.data).is_file():
        check_input_file(args.data, "--data", "CSV manifest", error=DataError)
    else:
        check_input_dir(args.data, "--data", "folder of sRGB pairs (or a .csv manifest)")


def _load(args: argparse.Namespace):  # noqa: ANN202
    from visionflows.data.srgb_pairs import load_pairs

    _check_data(args)
    return load_pairs(args.data, layout=args.layout, on_error=args.on_error)


def _split(args: argparse.Namespace, pairs, seed: int):  # noqa: ANN001, ANN202
    """(train, test): the other cameras / the held-out camera, or the split by image."""
    if getattr(args, "holdout_camera", None):
        return pairs.camera_split(args.holdout_camera)
    return pairs.split(args.test_fraction, seed)


def _info(args: argparse.Namespace) -> int:
    s = _load(args).summary()
    fmt = lambda d: ", ".join(f"{k} ({v})" for k, v in d.items())  # noqa: E731
    print(f"{args.data}: layout {s['layout']}, {s['pairs']} pairs, {s['pixels'] / 1e6:.1f} Mpixel")
    print(f"  cameras: {fmt(s['cameras'])}")
    print(f"  ISOs:    {fmt(s['isos'])}")
    return 0


#: the flags that set the arguments of visionflows.experiments.srgb_cameras' checks
_STUDY_FLAGS = {"cameras": "--camera", "k": "--k", "tile": "--tile", "patch": "--patch"}


def _eval_holdout(args: argparse.Namespace, models: dict) -> int:
    from visionflows.denoise.evaluate import write_table
    from visionflows.experiments.srgb_cameras import check_adaptation_ks, score_held_camera

    rest, held = _split(args, _load(args), args.seed)
    check_adaptation_ks(held, args.holdout_camera.lower(), tuple(args.k), args.tile or None, args.folds, args.seed,
                        args.patch, names=_STUDY_FLAGS)
    rows = score_held_camera(models, rest, held, args.holdout_camera.lower(), tuple(args.k), args.folds,
                             args.tile or None, args.adapt_steps, args.adapt_lr, args.patch, args.max_patches,
                             args.seed, baselines=not args.no_baselines)
    write_table([{k: v for k, v in r.items() if k != "per_fold"} for r in rows], args.out, "noise_models",
                f"held-out camera {args.holdout_camera} ({len(held)} pairs); models trained on the other "
                f"cameras; k = pairs of the camera adapted on")
    print((Path(args.out) / "noise_models.txt").read_text(), end="")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from visionflows.errors import DataError
    from visionflows.experiments.srgb_cameras import adaptation_pool
    from visionflows.io import load_model, save_model
    from visionflows.noise.srgb import SRGBNoiseFlow, adapt_srgb_flow

    check_output_file(args.out, "--out", suffixes=[".safetensors"])
    model = load_model(_check_srgb_model(args.model))
    if not isinstance(model, SRGBNoiseFlow):
        raise ConfigError(f"--model {args.model} is a {type(model).__name__}, which has no camera entries to adapt.",
                          "pass a trained sRGB Noise Flow (visionflows srgb-noise train).")
    pairs = _load(args)
    cam = args.camera.lower()
    mine = [i for i, c in enumerate(pairs.cameras) if c == cam]
    if not mine:
        raise DataError(f"no pairs of camera {args.camera!r} under {args.data} (cameras: "
                        f"{', '.join(sorted({c for c in pairs.cameras if c})) or 'none known'}).",
                        "pass a camera listed by `visionflows srgb-noise info`.")
    pool = adaptation_pool(pairs.subset(mine), args.tile or None, args.seed)
    if args.k > len(pool):
        raise DataError(f"--k {args.k} but camera {args.camera} has {len(pool)} pair(s)"
                        + (f" (cut into tiles of at most {args.tile}x{args.tile})" if args.tile else "") + ".",
                        "pass a smaller --k (or a smaller --tile).")
    kp = pool.subset(range(args.k))
    kp.check_patch(args.patch, "--patch")
    adapted, hist = adapt_srgb_flow(model, kp, cam, args.adapt_steps, args.batch_size, args.patch, args.adapt_lr,
                                    args.seed)
    save_model(adapted, args.out)
    first, last = (hist[0]["nll_per_dim"], hist[-1]["nll_per_dim"]) if hist else (None, None)  # --adapt-steps 0
    print(json.dumps({"out": str(args.out), "camera": cam, "k": args.k, "pairs": kp.names,
                      "train_nll_per_dim_first": first, "train_nll_per_dim_last": last}))
    return 0


def _cameras(args: argparse.Namespace) -> int:
    from visionflows.experiments.srgb_cameras import check_camera_study, run_camera_study

    check_output_dir(args.out, "--out")
    pairs = _load(args)
    ks = tuple(args.k or (1, 4))
    cameras = check_camera_study(pairs, args.camera or None, ks, args.tile or None, args.folds, args.patch,
                                 args.seed, names=_STUDY_FLAGS)
    r = run_camera_study(pairs, args.out, cameras, ks, args.flow_steps, args.adapt_steps, args.folds,
                         args.tile or None, args.preset, args.unknown_prob, patch=args.patch, seed=args.seed,
                         layout=args.layout)
    print((Path(args.out) / "cameras.txt").read_text(), end="")
    print(f"figure: {Path(args.out) / 'cameras.png'} ({r['seconds']:.0f} s)")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    _check_data(args)
    if args.holdout_camera:
        return _experiment_holdout(args)
    if args.noise_flow is not None:
        raise ConfigError("--noise-flow is for the held-out-camera study.",
                          "pass --holdout-camera NAME with it, or drop --noise-flow.")
    from visionflows.experiments.denoising import run_srgb_experiment

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pairs = _load(args)
    _split(args, pairs, args.seed)[0].check_patch(args.patch, "--patch")
    r = run_srgb_experiment(pairs, args.out, args.flow_steps or 1000, args.denoise_steps or 300, args.batch_size,
                            args.patch, args.test_fraction, seed=args.seed)
    print(json.dumps({"noise_models": r["noise_models"], "denoisers": r["denoisers"]}, indent=2))
    return 0


def _experiment_holdout(args: argparse.Namespace) -> int:
    """``--holdout-camera NAME|all``: the leave-one-camera-out denoising study."""
    from visionflows.experiments.srgb_denoise import run_srgb_denoise_study

    pairs = _load(args)
    known = pairs.require_cameras()
    cams = known if args.holdout_camera.lower() == "all" else [args.holdout_camera.lower()]
    for cam in cams:
        pairs.camera_split(cam)[0].check_patch(args.patch, "--patch")  # DataError if unknown, alone or too small
    flow = None
    if args.noise_flow is not None:
        if len(cams) != 1:
            raise ConfigError("--noise-flow is for one held-out camera, not --holdout-camera all.",
                              "pass --holdout-camera NAME, or drop --noise-flow.")
        flow = _check_srgb_model(args.noise_flow, "--noise-flow")
    run_srgb_denoise_study(args.data, args.out, cams, args.denoise_steps or 3000, args.max_minutes,
                           args.flow_steps or 600, flow, args.batch_size, args.patch, args.lr, seed=args.seed,
                           threads=args.threads, layout=args.layout, ema_decay=args.ema_decay,
                           progress=not args.no_progress, preset=args.preset)
    print((Path(args.out) / "denoise.txt").read_text(), end="")
    print(f"figure: {Path(args.out) / 'denoise_examples.png'}")
    return 0
