"""The one trainer shared by every model (see :mod:`visionflows.training.trainer`)."""

from visionflows.training.ema import EMA
from visionflows.training.optim import GlowAdamax, build_optimizer, linear_warmup
from visionflows.training.rundir import RunDirBusyError, open_run_dir
from visionflows.training.trainer import (
    CHECKPOINT_VERSION,
    TRAIN_RULES,
    TrainConfig,
    TrainResult,
    TrainTask,
    find_checkpoints,
    train,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "EMA",
    "RunDirBusyError",
    "TRAIN_RULES",
    "GlowAdamax",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "build_optimizer",
    "find_checkpoints",
    "linear_warmup",
    "open_run_dir",
    "train",
]
