"""``visionflows glow train|eval``: the multi-scale Glow baseline on images, on the shared trainer.

A skin over :mod:`visionflows.glow` and :mod:`visionflows.data.images`; every input is checked before any work.
"""

from __future__ import annotations

import argparse
import json

import torch

from visionflows.cli.common import add_trainer_args, check_image_data, check_train_args
from visionflows.errors import ConfigError
from visionflows.validation import NON_NEGATIVE_INT, POSITIVE_INT, Range, check_model_file, number_arg

__all__ = ["register"]

_INT1 = number_arg(POSITIVE_INT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("glow", help="multi-scale Glow baseline (train / eval) on images")
    s = p.add_subparsers(dest="glow_command", metavar="ACTION", required=True)
    t = s.add_parser("train", help="train a Glow on an image folder, ImageNet npz or the built-in photos")
    t.add_argument("--data", default="builtin", help="'builtin', an image folder or a downsampled-ImageNet .npz")
    t.add_argument("--resolution", type=number_arg(Range(integer=True, low=2)), default=32,
                   help="image side (divisible by 2^levels)")
    t.add_argument("--levels", type=_INT1, default=3, help="multi-scale levels")
    t.add_argument("--flow-steps", type=_INT1, default=8, help="Glow steps per level (K)")
    t.add_argument("--width", type=_INT1, default=128)
    t.add_argument("--channels", type=int, choices=[1, 3], default=3)
    t.add_argument("--flip", action="store_true")
    add_trainer_args(t, steps=2000, lr=1e-3, batch_size=16, warmup_steps=200)
    t.set_defaults(func=_train)
    e = s.add_parser("eval", help="bits/dim of a trained Glow on held-out images")
    e.add_argument("--model", required=True, help="model file or run directory")
    e.add_argument("--data", default="builtin")
    e.add_argument("--seed", type=number_arg(NON_NEGATIVE_INT), default=0)
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from visionflows.data.images import open_images
    from visionflows.glow import GlowImageTask
    from visionflows.training import train

    cfg = check_train_args(args, warmup_steps=200, optimizer="adamax_glow")
    if args.resolution % (2 ** args.levels):
        raise ConfigError(f"--resolution {args.resolution} is not divisible by 2^levels = {2 ** args.levels}.",
                          f"use a resolution that is a multiple of {2 ** args.levels}, or fewer --levels.")
    check_image_data(args.data)
    pool = open_images(args.data, args.resolution, args.channels, "train")
    task = GlowImageTask(pool, args.resolution, args.levels, args.flow_steps, args.width, cfg.batch_size,
                         flip=args.flip)
    result = train(task, cfg, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"step": result.step, **result.eval_metrics}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.data.images import open_images
    from visionflows.io import load_model

    path = check_model_file(args.model, "--model", families=("glow",),
                            fix="pass a Glow model file or run dir (from `visionflows glow train`).")["path"]
    check_image_data(args.data)
    model = load_model(path)
    pool = open_images(args.data, model.resolution, model.channels, "test")
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        bpd = torch.cat([model.bits_per_dim(b, gen) for b in pool.eval_images.split(64)])
    print(json.dumps({"bits_per_dim": float(bpd.mean()), "images": int(bpd.numel())}))
    return 0
