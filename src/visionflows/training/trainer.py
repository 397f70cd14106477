"""One trainer for every model: single process or ``torchrun`` DDP, AMP, compile, EMA, atomic checkpoints.

A model-specific :class:`TrainTask` says how to build the model, draw a batch and compute the loss; the trainer
owns everything else. Batches are drawn from a generator seeded by ``(seed, rank, step)``, so a resumed run sees
exactly the batches an uninterrupted run would, and DDP ranks see different data.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from visionflows.errors import CheckpointError, ConfigError, InputError, OutputError, VisionflowsError
from visionflows.io import atomic_dir, atomic_write_text, read_model_file, save_model
from visionflows.training.distributed import DistInfo, cleanup_distributed, resolve_device, setup_distributed
from visionflows.training.ema import EMA
from visionflows.training.optim import build_optimizer, linear_warmup
from visionflows.training.rundir import RunDir, check_resume_flags, open_run_dir
from visionflows.validation import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    OPEN_UNIT,
    POSITIVE,
    POSITIVE_INT,
    Range,
    check_choice,
    check_device,
    check_number,
)

__all__ = [
    "TrainConfig", "TrainTask", "TrainResult", "train", "find_checkpoints", "CHECKPOINT_VERSION", "TRAIN_RULES",
]

CHECKPOINT_VERSION = 1

#: the accepted values of every numeric :class:`TrainConfig` field; the CLI's trainer flags use the same rules
TRAIN_RULES: dict[str, Range] = {
    "steps": NON_NEGATIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE_INT,
    "grad_clip": POSITIVE,
    "ema_decay": OPEN_UNIT,
    "seed": NON_NEGATIVE_INT,
    "checkpoint_every": POSITIVE_INT,
    "keep_checkpoints": NON_NEGATIVE_INT,
    "log_every": POSITIVE_INT,
    "eval_every": NON_NEGATIVE_INT,
    "num_threads": POSITIVE_INT,
    "max_minutes": POSITIVE,
}
_OPTIONAL = ("grad_clip", "ema_decay", "num_threads", "max_minutes")
_BOOLS = ("compile", "progress", "tensorboard")
_CHOICES: dict[str, tuple] = {"amp": (None, "bf16", "fp16"), "optimizer": ("adam", "adamw", "adamax_glow")}


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the task. Unknown keys are refused by :meth:`from_dict`."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    ema_decay: float | None = None
    amp: str | None = None
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int = 0
    device: str = "auto"
    num_threads: int | None = None
    progress: bool = True
    tensorboard: bool = True
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        """Every field is checked (type, finiteness, range); :class:`ConfigError` names the first bad one."""
        for name, rule in TRAIN_RULES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            setattr(self, name, check_number(value, f"training setting {name}", rule))
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"training setting {name} must be true or false, got {getattr(self, name)!r}.",
                                  f"set {name} to true or false.")
        for name, choices in _CHOICES.items():
            check_choice(getattr(self, name), f"training setting {name}", choices)
        check_device(self.device, "training setting device", require_available=False)
        if self.betas is not None:
            if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
                raise ConfigError(f"training setting betas must be two numbers, got {self.betas!r}.",
                                  "use e.g. [0.9, 0.999].")
            b = tuple(check_number(v, "training setting betas[i]", Range(low=0, high=1, high_open=True))
                      for v in self.betas)
            self.betas = (float(b[0]), float(b[1]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown training config key(s): {', '.join(unknown)}.", f"valid keys: {', '.join(sorted(known))}."
            )
        return cls(**d)


@runtime_checkable
class TrainTask(Protocol):
    """What a model brings to the trainer (see module docstring)."""

    name: str
    unit: str

    def build_model(self) -> nn.Module: ...

    def config(self) -> dict[str, Any]: ...

    def batch(self, step: int, generator: torch.Generator) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...


@dataclass
class TrainResult:
    model: nn.Module
    step: int
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    ema_model: nn.Module | None = None


class _LossModule(nn.Module):
    """Wraps ``task.loss(model, batch)`` as a ``forward`` so DDP and ``torch.compile`` see one call."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], tuple[Tensor, dict]]) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[Tensor, dict]:
        return self._loss_fn(self.model, batch)


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    mixed = (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 12_345) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


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


def _open_tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def _check_loss(loss: Tensor, step: int) -> None:
    if loss.dim() != 0:
        raise InputError(f"task.loss must return a scalar, got shape {tuple(loss.shape)}.")
    if not torch.isfinite(loss.detach()):
        raise VisionflowsError(
            f"the loss became {float(loss.detach())} at step {step}.",
            "check the data for NaN/Inf, or lower the learning rate / add warm-up or gradient clipping; then rerun "
            "(with --resume to continue from the last checkpoint, if there is one).",
        )


def train(
    task: TrainTask,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``task``'s model under ``config`` into ``run_dir``; see the module docstring.

    The run directory's life cycle (lock, resume, cleanup) is :func:`visionflows.training.rundir.open_run_dir`'s:
    ``resume`` needs a checkpoint to continue from, ``resume`` with ``overwrite`` is refused, a training that fails
    before its first checkpoint leaves nothing behind.
    """
    check_resume_flags(resume, overwrite)
    check_device(config.device, "training setting device")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    run_dir = Path(run_dir)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist_info: DistInfo = setup_distributed(device)
    try:
        return _train(task, config, run_dir, resume, overwrite, device, dist_info)
    finally:
        cleanup_distributed()


def _train(task, config, run_dir, resume, overwrite, device, dist_info) -> TrainResult:
    import torch.distributed as dist

    run: RunDir | None = None
    if dist_info.is_main:
        run = open_run_dir(run_dir, resume, overwrite)
    if dist_info.enabled:
        dist.barrier()
    try:
        return _train_locked(task, config, run_dir, resume, device, dist_info)
    except BaseException:
        if run is not None:
            run.discard_if_not_a_run()
        raise
    finally:
        if run is not None:
            run.release()


def _train_locked(task, config, run_dir, resume, device, dist_info) -> TrainResult:  # noqa: C901
    import torch.distributed as dist

    is_main = dist_info.is_main
    torch.manual_seed(config.seed)
    model = task.build_model().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(config.optimizer, params, config.lr, config.betas, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(config.warmup_steps))
    scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp or "")

    checkpoints = find_checkpoints(run_dir) if resume else []
    start = 0
    ema: EMA | None = None
    if checkpoints:
        ema = EMA(model, config.ema_decay) if config.ema_decay else None
        state = _load_checkpoint(checkpoints[-1], model, optimizer, scheduler, ema, scaler)
        start = _checkpoint_step(checkpoints[-1], state, config.steps)
    else:
        # data-dependent initialisation (ActNorm) on the first batch; all-reduced across ranks.
        model.train()
        with torch.no_grad():
            task.loss(model, task.batch(0, _step_generator(config.seed, dist_info.rank, -1)))
        ema = EMA(model, config.ema_decay) if config.ema_decay else None

    resolved = {
        "task_name": task.name,
        "task": task.config(),
        "train": asdict(config),
        "world_size": dist_info.world_size,
        "resumed_from_step": start if checkpoints else None,
        "torch": torch.__version__,
    }
    if is_main:
        atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2, default=str) + "\n")
        _truncate_metrics(run_dir / "metrics.jsonl", start)

    loss_module: nn.Module = _LossModule(model, task.loss)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loss_module = DDP(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        loss_module = torch.compile(loss_module)

    writer = _open_tensorboard(run_dir, config.tensorboard) if is_main else None
    history: list[dict[str, float]] = []
    bar = None
    if config.progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc=task.name, unit="it", dynamic_ncols=True)
    t0 = time.monotonic()
    step = start
    model.train()
    try:
        for step in range(start, config.steps):
            batch = task.batch(step, _step_generator(config.seed, dist_info.rank, step))
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with autocast:
                loss, metrics = loss_module(batch)
            _check_loss(loss, step)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            done = step + 1
            row = {"step": done, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0]}
            row.update({k: float(v) for k, v in metrics.items()})
            if bar is not None:
                bar.update(1)
                if done % max(1, config.log_every) == 0 or done == config.steps:
                    post = {"loss": f"{row['loss']:.4f}"}
                    if "per_dim" in row:
                        post[task.unit] = f"{row['per_dim']:.4f}"
                    bar.set_postfix(post)
            if is_main and (done % max(1, config.log_every) == 0 or done == config.steps):
                history.append(row)
                _append_metrics(run_dir / "metrics.jsonl", row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "step" and isinstance(v, float) and math.isfinite(v):
                            writer.add_scalar(f"train/{k}", v, done)
            if config.eval_every and done % config.eval_every == 0 and is_main:
                _log_eval(task, model, ema, writer, run_dir, done, history)
            out_of_time = config.max_minutes is not None and (time.monotonic() - t0) / 60.0 >= config.max_minutes
            if done % max(1, config.checkpoint_every) == 0 or done == config.steps or out_of_time:
                if is_main:
                    _save_checkpoint(run_dir, done, model, optimizer, scheduler, ema, scaler, config.keep_checkpoints)
                if dist_info.enabled:
                    dist.barrier()
            step = done
            if out_of_time:
                break
        else:
            step = config.steps if config.steps > start else start
    finally:
        if bar is not None:
            bar.close()
    if start >= config.steps and is_main and not find_checkpoints(run_dir):
        _save_checkpoint(run_dir, step, model, optimizer, scheduler, ema, scaler, config.keep_checkpoints)
    eval_metrics: dict[str, float] = {}
    if is_main:
        eval_metrics = _log_eval(task, model, ema, writer, run_dir, step, history)
        if writer is not None:
            writer.close()
    model.eval()
    return TrainResult(model, step, run_dir, history, eval_metrics, ema.shadow if ema is not None else None)


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
