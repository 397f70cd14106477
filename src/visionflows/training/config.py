"""What a training run is given and what it gives back: :class:`TrainConfig` (validated settings, with the
:data:`TRAIN_RULES` the CLI's trainer flags share), the :class:`TrainTask` protocol a model implements and the
:class:`TrainResult` of :func:`visionflows.training.train` (which lives in :mod:`visionflows.training.trainer`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from visionflows.errors import ConfigError
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

__all__ = ["TRAIN_RULES", "TrainConfig", "TrainResult", "TrainTask"]

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
