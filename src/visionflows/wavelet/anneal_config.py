"""Settings and statistics of annealed sampling: :class:`AnnealConfig` (validated, with the official
``mcmc_sample.py`` settings in :meth:`AnnealConfig.official`), :func:`as_anneal_config`, :func:`check_temperature`
and the per-level / per-call reports :class:`LevelAnnealStats` and :class:`AnnealStats`. The sampler itself and
the method's description are in :mod:`visionflows.wavelet.anneal`, which re-exports these names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from visionflows.errors import ConfigError
from visionflows.flows.model import check_temperature  # shared by every family's sample(); re-exported here

__all__ = [
    "METHODS",
    "AnnealConfig",
    "AnnealStats",
    "LevelAnnealStats",
    "as_anneal_config",
    "check_temperature",
]

METHODS = ("hmc", "mala", "nuts")


@dataclass(frozen=True)
class AnnealConfig:
    """Settings of the annealed sampler (see the module doc). Validated on construction.

    Args:
        method: ``"hmc"`` (batched, default), ``"mala"`` (batched, one leapfrog step) or ``"nuts"`` (Pyro).
        num_results: MCMC iterations per level, adaptation included (official: 40); the last state is kept.
        num_adaptation: leading iterations that adapt the step size (official: 10); ``0`` keeps ``step_size``.
        target_accept: the acceptance rate dual averaging aims for (official: 0.6).
        step_size: the initial leapfrog step size in latent units (official: 0.01).
        leapfrog_steps: leapfrog steps per HMC proposal (``"hmc"`` only).
        max_tree_depth: NUTS's maximum tree depth, up to ``2^depth`` leapfrog steps (official: 10).
        jitter: HMC step sizes are multiplied by ``U(1 − jitter, 1 + jitter)`` per proposal (breaks periodicity).
        init_temperature: chains start at ``ε ~ N(0, T0²·I)``; ``None`` means the sampling temperature (official).
        progress: show a tqdm progress bar.
    """

    method: str = "hmc"
    num_results: int = 40
    num_adaptation: int = 10
    target_accept: float = 0.6
    step_size: float = 0.01
    leapfrog_steps: int = 8
    max_tree_depth: int = 10
    jitter: float = 0.2
    init_temperature: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown annealing method {self.method!r}.", f"use one of {', '.join(METHODS)}.")
        for name in ("num_results", "leapfrog_steps", "max_tree_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"annealing {name} must be an integer ≥ 1, got {v!r}.",
                                  f"pass {name}=40 (official) or another positive count." if name == "num_results"
                                  else f"pass a positive {name}.")
        if isinstance(self.num_adaptation, bool) or not isinstance(self.num_adaptation, int) or not (
                0 <= self.num_adaptation < self.num_results):
            raise ConfigError(
                f"annealing num_adaptation must be an integer in 0..num_results − 1 ({self.num_results - 1}), got "
                f"{self.num_adaptation!r}.", "pass num_adaptation=10 with num_results=40 (official), or 0 to keep "
                "the initial step size.")
        for name, lo, hi in (("target_accept", 0.0, 1.0), ("jitter", -1e-12, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not lo < v < hi:
                raise ConfigError(f"annealing {name} must be in ({max(lo, 0.0):g}, {hi:g}), got {v!r}.",
                                  "pass target_accept=0.6 (official)." if name == "target_accept" else
                                  "pass a jitter in [0, 1), e.g. 0.2.")
        if not isinstance(self.step_size, (int, float)) or not math.isfinite(self.step_size) or self.step_size <= 0:
            raise ConfigError(f"annealing step_size must be a finite number > 0, got {self.step_size!r}.",
                              "pass step_size=0.01 (official).")
        if self.init_temperature is not None:
            check_temperature(self.init_temperature, anneal=True)

    @classmethod
    def official(cls, **overrides: Any) -> AnnealConfig:
        """The official ``mcmc_sample.py`` settings: NUTS, 40 iterations, step adaptation over the first 10
        (target 0.6) from step 0.01, max tree depth 10 (use with ``temperature=0.97`` for the README's run)."""
        base = {"method": "nuts", "num_results": 40, "num_adaptation": 10, "target_accept": 0.6, "step_size": 0.01,
                "max_tree_depth": 10}
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_anneal_config(anneal: Any) -> AnnealConfig | None:
    """``None``/``False`` → no annealing; ``True`` → defaults; ``"official"`` → :meth:`AnnealConfig.official`;
    a dict → ``AnnealConfig(**dict)``; an :class:`AnnealConfig` as is."""
    if anneal is None or anneal is False:
        return None
    if anneal is True:
        return AnnealConfig()
    if isinstance(anneal, AnnealConfig):
        return anneal
    if isinstance(anneal, str):
        if anneal == "official":
            return AnnealConfig.official()
        if anneal in METHODS:
            return AnnealConfig(method=anneal)
        raise ConfigError(f"unknown annealing setting {anneal!r}.", f"use 'official' or one of {', '.join(METHODS)}.")
    if isinstance(anneal, dict):
        try:
            return AnnealConfig(**anneal)
        except TypeError as err:
            raise ConfigError(f"bad annealing settings {anneal}: {err}.",
                              "use the fields of visionflows.wavelet.AnnealConfig.") from None
    raise ConfigError(f"anneal must be an AnnealConfig, a dict, True or 'official', got {type(anneal).__name__}.")


@dataclass
class LevelAnnealStats:
    """What the sampler did on one level (means over chains).

    ``accept_rate``: mean Metropolis acceptance probability after adaptation (NUTS: Pyro's mean tree acceptance);
    ``accepted``: fraction of post-adaptation proposals accepted (HMC/MALA); ``step_size``: the final step size
    (mean over chains, with ``step_size_range``); ``never_accepted``: chains that kept their initial state;
    ``grad_evals``: gradient evaluations per chain; ``seconds``: wall time of the level.
    """

    level: int
    method: str
    chains: int
    dims: int
    iterations: int
    accept_rate: float
    accepted: float
    step_size: float
    step_size_range: tuple[float, float]
    never_accepted: int
    grad_evals: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AnnealStats:
    """One annealed sampling call: the temperature, ``γ``, the config and one :class:`LevelAnnealStats` per level."""

    temperature: float
    gamma: float
    config: AnnealConfig
    images: int
    levels: list[LevelAnnealStats] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.levels)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.images)

    @property
    def accept_rate(self) -> float:
        """Mean post-adaptation acceptance over levels, weighted by their dimensions."""
        w = sum(s.dims for s in self.levels)
        return sum(s.accept_rate * s.dims for s in self.levels) / max(1, w)

    def summary(self) -> str:
        lines = [f"annealed sampling ({self.config.method}), T = {self.temperature:g} (γ = {self.gamma:.4f}), "
                 f"{self.images} image(s), {self.seconds:.1f} s ({self.seconds_per_image:.2f} s/image)"]
        for s in self.levels:
            lines.append(f"  level {s.level}: {s.dims} dims, acceptance {s.accept_rate:.3f} (accepted "
                         f"{s.accepted:.2f}), step {s.step_size:.4g} [{s.step_size_range[0]:.3g}, "
                         f"{s.step_size_range[1]:.3g}], {s.grad_evals:.0f} gradients/chain, "
                         f"{s.never_accepted} chain(s) never accepted, {s.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gamma": self.gamma, "config": self.config.to_dict(),
                "images": self.images, "seconds": self.seconds, "seconds_per_image": self.seconds_per_image,
                "accept_rate": self.accept_rate, "levels": [s.to_dict() for s in self.levels]}
