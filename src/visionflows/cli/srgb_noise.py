"""``visionflows srgb-noise train|eval|experiment``: sRGB Noise Flow on real 8-bit noisy/clean pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("srgb-noise", help="sRGB Noise Flow: train, evaluate (NLL/KL), experiment")
    sub = p.add_subparsers(dest="srgb_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", required=True, help="folder of *_noisy.png / *_clean.png pairs (searched recursively)")
        q.add_argument("--patch", type=int, default=32)
        q.add_argument("--test-fraction", type=float, default=0.25, help="held-out fraction of images")
        q.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train an sRGB Noise Flow on the training split")
    common(t)
    t.add_argument("--run-dir", required=True)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=int, default=4)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="NLL/dim and marginal KL on held-out pairs, with Gaussian baselines")
    common(e)
    e.add_argument("--model", action="append", default=[], help="sRGB noise-model file (repeatable)")
    e.add_argument("--out", required=True)
    e.add_argument("--max-patches", type=int, default=1024)
    e.add_argument("--no-baselines", action="store_true", help="skip the baselines fitted on the training split")
    e.set_defaults(func=_eval)

    x = sub.add_parser("experiment", help="noise models + denoisers trained with their noise (run_srgb_experiment)")
    common(x)
    x.add_argument("--out", required=True)
    x.add_argument("--flow-steps", type=int, default=1000)
    x.add_argument("--denoise-steps", type=int, default=300)
    x.add_argument("--batch-size", type=int, default=32)
    x.set_defaults(func=_experiment)


def _train(args: argparse.Namespace) -> int:
    from visionflows.data.srgb_pairs import load_pairs
    from visionflows.noise.srgb import fit_srgb_noise_flow

    train, test = load_pairs(args.data).split(args.test_fraction, args.seed)
    fit_srgb_noise_flow(train, args.run_dir, args.steps, args.batch_size, args.patch, args.lr, test, args.seed,
                        args.width, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    print(f"trained into {args.run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.data.srgb_pairs import load_pairs
    from visionflows.denoise.evaluate import model_name, write_table
    from visionflows.denoise.train import load_noise_model
    from visionflows.errors import CheckpointError, ConfigError
    from visionflows.noise.srgb import (
        SRGBGaussianNoise,
        SRGBHeteroscedasticNoise,
        dequantize_noise,
        evaluate_srgb_noise_models,
    )

    models = {}
    for path in args.model:
        m, domain = load_noise_model(path)
        if domain != "srgb":
            raise CheckpointError(f"noise model {path} is for the {domain} domain, not sRGB.",
                                  "pass an sRGB noise model (visionflows srgb-noise train).")
        models[model_name(path)] = m
    train, test = load_pairs(args.data).split(args.test_fraction, args.seed)
    if not args.no_baselines:
        import torch

        fp = train.grid_patches(args.patch, 4096, args.seed)
        n = dequantize_noise(fp["noisy"], fp["clean"], torch.Generator().manual_seed(args.seed))
        models = {"gaussian": SRGBGaussianNoise.fit(n), "heteroscedastic": SRGBHeteroscedasticNoise.fit(n, fp["clean"]),
                  **models}
    if not models:
        raise ConfigError("nothing to evaluate.", "pass --model FILE or drop --no-baselines.")
    patches = test.grid_patches(args.patch, args.max_patches, args.seed)
    scores = evaluate_srgb_noise_models(models, patches, args.seed)
    rows = [{"model": k, "nll_per_dim": v["nll_per_dim"], "marginal_kl": v["kl"]} for k, v in scores.items()]
    write_table(rows, args.out, "noise_models", f"{patches['noisy'].shape[0]} held-out patches of {len(test)} images")
    print((Path(args.out) / "noise_models.txt").read_text(), end="")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from visionflows.denoise.experiments import run_srgb_experiment

    r = run_srgb_experiment(args.data, args.out, args.flow_steps, args.denoise_steps, args.batch_size, args.patch,
                            args.test_fraction, seed=args.seed)
    print(json.dumps({"noise_models": r["noise_models"], "denoisers": r["denoisers"]}, indent=2))
    return 0
