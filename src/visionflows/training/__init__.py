"""The one trainer shared by every model (see :mod:`visionflows.training.trainer`)."""

from visionflows.training.ema import EMA
from visionflows.training.optim import GlowAdamax, build_optimizer, linear_warmup
from visionflows.training.trainer import (
    CHECKPOINT_VERSION,
    TrainConfig,
    TrainResult,
    TrainTask,
    find_checkpoints,
    train,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "EMA",
    "GlowAdamax",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "build_optimizer",
    "find_checkpoints",
    "linear_warmup",
    "train",
]
