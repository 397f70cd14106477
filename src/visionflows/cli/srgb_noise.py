"""``visionflows srgb-noise train|eval|experiment``: sRGB Noise Flow on real 8-bit noisy/clean pairs.

A skin over :mod:`visionflows.noise.srgb` (the model and its training task on the shared trainer),
:mod:`visionflows.noise.fitting` (the baselines) and :mod:`visionflows.data.srgb_pairs`; every input is checked
before any work starts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visionflows.cli.common import add_trainer_args, check_train_args
from visionflows.errors import ConfigError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    OPEN_UNIT,
    POSITIVE_INT,
    Range,
    check_input_dir,
    check_model_file,
    check_output_dir,
    number_arg,
)

__all__ = ["register"]

_INT1 = number_arg(POSITIVE_INT)
_PATCH = number_arg(Range(integer=True, low=2))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("srgb-noise", help="sRGB Noise Flow: train, evaluate (NLL/KL), experiment")
    sub = p.add_subparsers(dest="srgb_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser, seed: bool = True) -> None:
        q.add_argument("--data", required=True, help="folder of *_noisy.png / *_clean.png pairs (searched recursively)")
        q.add_argument("--patch", type=_PATCH, default=32, help="patch side in pixels")
        q.add_argument("--test-fraction", type=number_arg(OPEN_UNIT), default=0.25,
                       help="held-out fraction of images, in (0, 1)")
        if seed:
            q.add_argument("--seed", type=number_arg(NON_NEGATIVE_INT), default=0)

    t = sub.add_parser("train", help="train an sRGB Noise Flow on the training split (shared trainer)")
    common(t, seed=False)
    t.add_argument("--width", type=_INT1, default=4, help="coupling-network width")
    add_trainer_args(t, steps=2000, lr=1e-3, batch_size=32,
                     seed_help="seed of the training and of the train/test split (default 0)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="NLL/dim and marginal KL on held-out pairs, with Gaussian baselines")
    common(e)
    e.add_argument("--model", action="append", default=[], help="sRGB noise-model file or run dir (repeatable)")
    e.add_argument("--out", required=True)
    e.add_argument("--max-patches", type=_INT1, default=1024)
    e.add_argument("--no-baselines", action="store_true", help="skip the baselines fitted on the training split")
    e.set_defaults(func=_eval)

    x = sub.add_parser("experiment", help="noise models + denoisers trained with their noise (run_srgb_experiment)")
    common(x)
    x.add_argument("--out", required=True)
    x.add_argument("--flow-steps", type=_INT1, default=1000)
    x.add_argument("--denoise-steps", type=_INT1, default=300)
    x.add_argument("--batch-size", type=_INT1, default=32)
    x.set_defaults(func=_experiment)


def _check_srgb_model(path: str) -> str:
    return check_model_file(path, "--model", families=("srgb-noise",),
                            fix="pass an sRGB noise model (from `visionflows srgb-noise train`); raw models: "
                                "`visionflows noise eval`.")["path"]


def _train(args: argparse.Namespace) -> int:
    from visionflows.data.srgb_pairs import load_pairs
    from visionflows.noise.srgb import SRGBNoiseTask
    from visionflows.training import train

    cfg = check_train_args(args, device="cpu", tensorboard=False)
    if cfg.device not in ("cpu", "auto"):
        raise ConfigError(f"srgb-noise train runs on the CPU only (got --device {cfg.device}).",
                          "drop --device or pass --device cpu.")
    cfg.device = "cpu"
    check_input_dir(args.data, "--data", "folder of sRGB pairs")
    train_pairs, test_pairs = load_pairs(args.data).split(args.test_fraction, cfg.seed)
    task = SRGBNoiseTask(train_pairs, cfg.batch_size, args.patch, test_pairs, width=args.width, seed=cfg.seed)
    result = train(task, cfg, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"step": result.step, "run_dir": str(result.run_dir), **result.eval_metrics}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.data.srgb_pairs import load_pairs
    from visionflows.denoise.evaluate import model_name, write_table
    from visionflows.io import load_model
    from visionflows.noise.fitting import fit_srgb_baselines
    from visionflows.noise.srgb import evaluate_srgb_noise_models

    check_output_dir(args.out, "--out")
    check_input_dir(args.data, "--data", "folder of sRGB pairs")
    if args.no_baselines and not args.model:
        raise ConfigError("nothing to evaluate: --no-baselines and no --model.",
                          "pass --model FILE or drop --no-baselines.")
    paths = [_check_srgb_model(path) for path in args.model]
    models = {model_name(path): load_model(path) for path in paths}
    train_pairs, test_pairs = load_pairs(args.data).split(args.test_fraction, args.seed)
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


def _experiment(args: argparse.Namespace) -> int:
    from visionflows.experiments.denoising import run_srgb_experiment

    check_output_dir(args.out, "--out")
    check_input_dir(args.data, "--data", "folder of sRGB pairs")
    r = run_srgb_experiment(args.data, args.out, args.flow_steps, args.denoise_steps, args.batch_size, args.patch,
                            args.test_fraction, seed=args.seed)
    print(json.dumps({"noise_models": r["noise_models"], "denoisers": r["denoisers"]}, indent=2))
    return 0
