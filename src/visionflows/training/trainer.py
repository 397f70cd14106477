"""One trainer for every model: single process or ``torchrun`` DDP, AMP, compile, EMA, atomic checkpoints.

A model-specific :class:`TrainTask` says how to build the model, draw a batch and compute the loss; the trainer
owns everything else. Batches are drawn from a generator seeded by ``(seed, rank, step)``, so a resumed run sees
exactly the batches an uninterrupted run would, and DDP ranks see different data.

Pieces in their own modules, re-exported here: the settings, task protocol and result in
:mod:`visionflows.training.config`, the checkpoint files in :mod:`visionflows.training.checkpointing`, the
metrics log and TensorBoard scalars in :mod:`visionflows.training.metrics_log`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError, VisionflowsError
from visionflows.io import atomic_write_text
from visionflows.training.checkpointing import (
    CHECKPOINT_VERSION,
    _checkpoint_step,
    _load_checkpoint,
    _save_checkpoint,
    find_checkpoints,
)
from visionflows.training.config import TRAIN_RULES, TrainConfig, TrainResult, TrainTask
from visionflows.training.distributed import DistInfo, cleanup_distributed, resolve_device, setup_distributed
from visionflows.training.ema import EMA
from visionflows.training.metrics_log import _append_metrics, _log_eval, _open_tensorboard, _truncate_metrics
from visionflows.training.optim import build_optimizer, linear_warmup
from visionflows.training.rundir import RunDir, check_resume_flags, open_run_dir
from visionflows.validation import check_device

__all__ = [
    "TrainConfig", "TrainTask", "TrainResult", "train", "find_checkpoints", "CHECKPOINT_VERSION", "TRAIN_RULES",
]


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


def _check_loss(loss: Tensor, step: int) -> None:
    if loss.dim() != 0:
        raise InputError(f"task.loss must return a scalar, got shape {tuple(loss.shape)}.")
    if not torch.isfinite(loss.detach()):
        raise VisionflowsError(
            f"the loss became {float(loss.detach())} at step {step}.",
            "check the data for NaN/Inf, or lower the learning rate / add warm-up or gradient clipping; then rerun "
            "(with --resume to continue from the last checkpoint, if there is one).",
        )



def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX, as oneDNN sees it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an unusual build: assume it does (no warning)
        return True

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
    if amp_dtype is torch.bfloat16 and device.type == "cpu" and is_main and not cpu_has_native_bf16():
        warnings.warn("bf16 autocast on a CPU without native bf16 instructions (no AVX512-BF16/AMX) is emulated "
                      "and much slower than fp32 (a Wavelet Flow level: 13x slower on an AVX2 EPYC); train without "
                      "--amp on this machine.", RuntimeWarning, stacklevel=2)

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
            updated = True
            if scaler is not None:
                scale = scaler.get_scale()
                scaler.step(optimizer)
                scaler.update()
                # fp16: a step whose scaled gradients overflowed is skipped (and the scale lowered; the first
                # steps at the initial scale 2^16 often are). The schedule counts optimiser updates, so it waits
                # as well: stepping it anyway skips schedule values and makes PyTorch warn "lr_scheduler.step()
                # before optimizer.step()".
                updated = scaler.get_scale() >= scale
            else:
                optimizer.step()
            if updated:
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
