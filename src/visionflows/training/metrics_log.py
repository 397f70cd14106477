"""The training log of a run: ``RUN/metrics.jsonl`` rows (one JSON object per line), TensorBoard scalars under
``RUN/tb`` (when tensorboard is installed and enabled) and the evaluation rows of the task's ``evaluate``.
Used by :func:`visionflows.training.train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from visionflows.errors import OutputError
from visionflows.io import atomic_write_text


def _open_tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def _log_eval(task, model, ema, writer, run_dir: Path, step: int, history) -> dict[str, float]:
    evaluate = getattr(task, "evaluate", None)
    if evaluate is None:
        return {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metrics = dict(evaluate(model) or {})
        if ema is not None and metrics:
            metrics.update({f"ema_{k}": v for k, v in (evaluate(ema.shadow) or {}).items()})
    model.train(was_training)
    if metrics:
        row = {"step": step, **{f"eval_{k}": float(v) for k, v in metrics.items()}}
        _append_metrics(run_dir / "metrics.jsonl", row)
        history.append(row)
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"eval/{k}", float(v), step)
    return metrics


def _append_metrics(path: Path, row: dict) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    except OSError as err:
        raise OutputError(f"cannot append to {path}: {err.strerror or err}.",
                          "free disk space (or use another --run-dir), then rerun with --resume.") from err


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume, drop log rows written after the checkpoint we resume from."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= start:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
