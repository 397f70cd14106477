"""Checkpoints of a training run: ``RUN/checkpoints/step-NNNNNNNN/`` folders written atomically.

Each folder holds ``model.safetensors`` (and ``ema.safetensors`` with an EMA), and ``state.pt``: the format
version (:data:`CHECKPOINT_VERSION`), the step, the optimiser / scheduler / EMA / grad-scaler states and the RNG
states, so a resumed run continues exactly. Used by :func:`visionflows.training.train`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from visionflows.errors import CheckpointError, OutputError
from visionflows.io import atomic_dir, read_model_file, save_model
from visionflows.training.ema import EMA

__all__ = ["CHECKPOINT_VERSION", "find_checkpoints"]

CHECKPOINT_VERSION = 1


def find_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "state.pt").is_file())


def _checkpoint_step(path: Path, state: dict, steps: int) -> int:
    """The step a checkpoint claims, checked against its folder name and the run's length."""
    try:
        step = int(state["step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {path} has no valid step.",
                              f"delete {path} to resume from the previous checkpoint, or start again with "
                              "--overwrite.") from None
    named = path.name.removeprefix("step-")
    if named.isdigit() and int(named) != step:
        raise CheckpointError(f"checkpoint {path} claims step {step} but its folder says step {int(named)}.",
                              f"delete {path} to resume from the previous checkpoint, or start again with "
                              "--overwrite.")
    if step > steps:
        raise CheckpointError(f"checkpoint {path} is at step {step}, beyond this run's {steps} steps.",
                              f"resume with --steps {step} or more, or start again with --overwrite.")
    return step


def _load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, ema: EMA | None, scaler) -> dict:
    _, model_state = read_model_file(path / "model.safetensors")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt pickles
        raise CheckpointError(
            f"checkpoint {path / 'state.pt'} is corrupt or unreadable ({type(err).__name__}).",
            f"delete {path} to resume from the previous checkpoint, or start again with --overwrite.",
        ) from err
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this visionflows reads {CHECKPOINT_VERSION}.",
            "resume with the visionflows version that wrote it.",
        )
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"checkpoint {path} has no EMA weights but ema_decay is set.")
            ema.shadow.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} does not match this model/config: {str(err).splitlines()[0]}",
            "resume with the same preset and options, or start again with --overwrite.",
        ) from err
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state


def _save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, ema, scaler, keep: int) -> Path:
    target = run_dir / "checkpoints" / f"step-{step:08d}"
    state = {
        "format_version": CHECKPOINT_VERSION,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.shadow.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    with atomic_dir(target) as tmp:
        save_model(model, tmp / "model.safetensors", extra={"step": str(step)})
        if ema is not None:
            save_model(ema.shadow, tmp / "ema.safetensors", extra={"step": str(step), "ema": "1"})
        try:
            torch.save(state, tmp / "state.pt")
        except (RuntimeError, OSError) as err:  # torch reports a full disk as RuntimeError("... write failed")
            free = shutil.disk_usage(tmp).free
            raise OutputError(f"cannot write checkpoint {target}: {str(err).splitlines()[0]} ({free} bytes free).",
                              "free disk space (or use another --run-dir), then rerun with --resume.") from err
    for old in find_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target
