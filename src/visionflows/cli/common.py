"""Argument helpers shared by the training sub-commands (one set of trainer flags everywhere)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from visionflows.errors import ConfigError
from visionflows.training import TrainConfig

__all__ = ["add_trainer_args", "trainer_config", "print_table"]


def add_trainer_args(p: argparse.ArgumentParser, steps: int, lr: float, batch_size: int) -> None:
    """Flags mapping onto :class:`~visionflows.training.TrainConfig` (plus ``--config`` JSON, ``--resume``)."""
    g = p.add_argument_group("training")
    g.add_argument("--run-dir", required=True, help="output folder (refused if not empty, unless --resume/--overwrite)")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="delete what is in --run-dir and start again")
    g.add_argument("--config", help="JSON file of TrainConfig keys (flags given explicitly override it)")
    g.add_argument("--steps", type=int, default=None, help=f"optimiser steps (default {steps})")
    g.add_argument("--batch-size", type=int, default=None, help=f"batch size per process (default {batch_size})")
    g.add_argument("--lr", type=float, default=None, help=f"learning rate (default {lr})")
    g.add_argument("--warmup-steps", type=int, default=None, help="linear learning-rate warm-up")
    g.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm")
    g.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights with this decay")
    g.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="mixed precision (log-dets stay fp32)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this wall time")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_trainer_defaults={"steps": steps, "lr": lr, "batch_size": batch_size})


def trainer_config(args: argparse.Namespace, **task_defaults: Any) -> TrainConfig:
    """Resolve defaults < task defaults < ``--config`` file < explicit flags into a :class:`TrainConfig`."""
    values: dict[str, Any] = dict(getattr(args, "_trainer_defaults", {}))
    values.update(task_defaults)
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            loaded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"cannot read config file {path}: {err}.", "give a JSON object of TrainConfig keys."
            ) from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a JSON object.")
        TrainConfig.from_dict({**values, **loaded})  # validates keys
        values.update(loaded)
    flags = {
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
        "grad_clip": args.grad_clip, "ema_decay": args.ema_decay, "amp": args.amp, "compile": args.compile,
        "seed": args.seed, "device": args.device, "checkpoint_every": args.checkpoint_every,
        "max_minutes": args.max_minutes, "num_threads": args.threads,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.no_progress:
        values["progress"] = False
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
