"""Argument helpers shared by the sub-commands: ONE set of trainer flags for every train command, and the checks
every command runs on its inputs before any work starts (see :mod:`visionflows.validation`)."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from visionflows.errors import ConfigError
from visionflows.training import TRAIN_RULES, TrainConfig
from visionflows.validation import check_device, load_config_file, number_arg

__all__ = [
    "add_trainer_args", "check_image_data", "check_train_args", "trainer_config", "trainer_settings", "device_arg",
    "print_table", "TRAINER_FLAGS",
]

#: trainer flag → TrainConfig field (the flags every train command takes)
TRAINER_FLAGS = {
    "--steps": "steps", "--batch-size": "batch_size", "--lr": "lr", "--warmup-steps": "warmup_steps",
    "--grad-clip": "grad_clip", "--ema-decay": "ema_decay", "--amp": "amp", "--compile": "compile",
    "--seed": "seed", "--device": "device", "--checkpoint-every": "checkpoint_every",
    "--max-minutes": "max_minutes", "--threads": "num_threads",
}


def device_arg(text: str) -> str:
    """``argparse`` type of ``--device``: a known device that this machine has (see :func:`check_device`)."""
    from visionflows.errors import VisionflowsError

    try:
        return check_device(text, "device")
    except VisionflowsError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _DeprecatedAlias(argparse.Action):
    """A hidden old spelling of a flag: stores into the new flag's ``dest`` and warns."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs) -> None:  # noqa: ANN001
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        warnings.warn(f"{option_string} is deprecated; use {self.new}.", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_trainer_args(
    p: argparse.ArgumentParser,
    steps: int | str,
    lr: float | str,
    batch_size: int | str,
    run_dir_default: str | None = None,
    warmup_steps: int | str = 0,
    run_dir_required: bool | None = None,
    run_dir_help: str | None = None,
    seed_help: str | None = None,
    legacy_warmup: bool = False,
    device_help: str = "auto (default), cpu, cuda, cuda:1",
) -> None:
    """The trainer flags of every train command, mapping onto :class:`~visionflows.training.TrainConfig`.

    ``steps``/``lr``/``batch_size``/``warmup_steps`` are the defaults shown in ``--help`` (a number, or a
    description such as ``"the preset's"``); ``run_dir_default`` (or ``run_dir_required=False``) makes
    ``--run-dir`` optional, ``run_dir_help`` describes it, ``device_help`` ``--device``. Every numeric
    flag is checked at parse time with the same rule as the config field (:data:`TRAIN_RULES`)."""
    r = TRAIN_RULES
    g = p.add_argument_group("training (the same flags for every train command)")
    required = run_dir_default is None if run_dir_required is None else run_dir_required
    g.add_argument("--run-dir", required=required, default=run_dir_default,
                   help=(run_dir_help or "output folder") + " (must be new or empty, unless --resume or --overwrite)"
                   + (f"; default {run_dir_default}" if run_dir_default else ""))
    ro = g.add_mutually_exclusive_group()
    ro.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint "
                    "(an error if there is none)")
    ro.add_argument("--overwrite", action="store_true", help="delete what is in --run-dir and start again")
    g.add_argument("--config", help="JSON file of TrainConfig settings (flags given explicitly override it)")
    g.add_argument("--steps", type=number_arg(r["steps"]), default=None, help=f"optimiser steps (default {steps})")
    g.add_argument("--batch-size", type=number_arg(r["batch_size"]), default=None,
                   help=f"batch size per process (default {batch_size})")
    g.add_argument("--lr", type=number_arg(r["lr"]), default=None, help=f"learning rate (default {lr})")
    g.add_argument("--warmup-steps", type=number_arg(r["warmup_steps"]), default=None,
                   help=f"linear learning-rate warm-up steps (default {warmup_steps})")
    if legacy_warmup:
        g.add_argument("--warmup", dest="warmup_steps", type=number_arg(r["warmup_steps"]), action=_DeprecatedAlias,
                       new="--warmup-steps", help=argparse.SUPPRESS)
    g.add_argument("--grad-clip", type=number_arg(r["grad_clip"]), default=None,
                   help="clip the gradient norm to this value (default: no clipping)")
    g.add_argument("--ema-decay", type=number_arg(r["ema_decay"]), default=None,
                   help="keep an EMA of the weights with this decay")
    g.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision (log-dets stay fp32)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    g.add_argument("--seed", type=number_arg(r["seed"]), default=None, help=seed_help or "random seed (default 0)")
    g.add_argument("--device", type=device_arg, default=None, help=device_help)
    g.add_argument("--checkpoint-every", type=number_arg(r["checkpoint_every"]), default=None,
                   help="steps between checkpoints")
    g.add_argument("--max-minutes", type=number_arg(r["max_minutes"]), default=None,
                   help="stop (with a checkpoint) after this wall time")
    g.add_argument("--threads", type=number_arg(r["num_threads"]), default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = {k: v for k, v in (("steps", steps), ("lr", lr), ("batch_size", batch_size),
                                  ("warmup_steps", warmup_steps)) if not isinstance(v, str)}
    p.set_defaults(_trainer_defaults=defaults)


def check_image_data(spec: str | None) -> None:
    """``--data`` of the image commands: 'builtin' (or None), else a path that exists (folder, .npz or image)."""
    from pathlib import Path

    if spec is None or spec == "builtin":
        return
    if not Path(spec).exists():
        raise ConfigError(f"--data {spec} does not exist.",
                          "give 'builtin', a folder of PNG/JPEG images, a downsampled-ImageNet .npz or an image file.")


def trainer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave explicitly: the ``--config`` file (checked: a JSON object of known keys with
    valid values), overridden by the trainer flags given on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = load_config_file(args.config)
        try:
            TrainConfig.from_dict(loaded)
        except ConfigError as err:
            raise ConfigError(f"config file {args.config}: {err.problem}",
                              f"edit {args.config}: {err.fix}" if err.fix else None) from err
        values.update(loaded)
    flags = {field: getattr(args, field if field != "num_threads" else "threads", None)
             for field in TRAINER_FLAGS.values()}
    values.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return values


def check_train_args(args: argparse.Namespace, run_dir: str | None = None, **task_defaults: Any) -> TrainConfig:
    """Everything a train command checks before any work: the trainer settings (flags and ``--config``) and the
    run directory against ``--resume`` / ``--overwrite`` (nothing is created). Returns the resolved config."""
    from visionflows.training.rundir import check_run_dir

    cfg = trainer_config(args, **task_defaults)
    check_device(cfg.device, "--device")
    check_run_dir(run_dir if run_dir is not None else args.run_dir, args.resume, args.overwrite)
    return cfg


def trainer_config(args: argparse.Namespace, **task_defaults: Any) -> TrainConfig:
    """Resolve defaults < task defaults < ``--config`` file < explicit flags into a :class:`TrainConfig`."""
    values: dict[str, Any] = dict(getattr(args, "_trainer_defaults", {}))
    values.update(task_defaults)
    values.update(trainer_settings(args))
    return TrainConfig.from_dict(values)


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    """Format ``rows`` as an aligned plain-text table (returned and printed)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    cells = [[(format(r.get(c), floatfmt) if isinstance(r.get(c), float) else str(r.get(c, ""))) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text)
    return text

