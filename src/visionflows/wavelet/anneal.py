"""Annealed sampling of Wavelet Flow levels with MCMC, as the official ``mcmc_sample.py`` does (doc §8).

Per level ``L``, conditioned on the already sampled coarser image ``I_{L−1}``, the target is ``π(x) ∝ p(x)^γ``
with ``γ = 1/T²``. It is sampled in the level's latent space: with ``x = f⁻¹(ε)`` the level's inverse flow
(``ε`` its standard-normal latent),

    log π(ε) = γ·log N(ε; 0, I) + (γ − 1)·log|det ∂ε/∂x| = γ·log N(ε) + (1 − γ)·log|det ∂x/∂ε|,

evaluated through the inverse flow (autograd gives ``∇ log π``). For an affine level the log-det is constant, so
``π`` is exactly ``N(0, T²·I)`` in ``ε`` and the samples are those of direct sampling at temperature ``T``.

Two samplers (:class:`AnnealConfig` ``method``):

* ``"hmc"`` (default) / ``"mala"``: a batched Hamiltonian Monte Carlo of our own — one chain per image, every
  chain of a level advanced together in one batched forward/backward per leapfrog step, a per-chain step size
  adapted by dual averaging (Hoffman & Gelman 2014, Alg. 5, the schedule of TFP's
  ``DualAveragingStepSizeAdaptation``) during the first ``num_adaptation`` iterations and then frozen at its
  average, ``leapfrog_steps`` steps per proposal with a ±``jitter`` random step-size jitter. ``"mala"`` is the
  one-leapfrog-step case (Metropolis-adjusted Langevin).
* ``"nuts"``: Pyro's No-U-Turn sampler (``pyro-ppl``), one chain per image run one image after another, with the
  official settings available through :meth:`AnnealConfig.official` (initial step 0.01, max tree depth 10, step
  adaptation with target acceptance 0.6 over the first 10 of 40 iterations, no mass-matrix adaptation). Pyro
  starts its adaptation with its "reasonable step size" search from the given initial step.

Which to use, measured (``benchmarks/bench_anneal.py``, ``BENCHMARKS.md``): the batched HMC is the default
because one batched gradient serves every image of a level, while NUTS runs a Python tree per image.

Every chain starts at ``ε ~ N(0, T0²·I)`` (``T0`` = ``init_temperature``, default ``T`` as the official code)
and the kept sample is the chain's final state (the last accepted one). A chain that never accepts keeps its
initial state — nothing crashes (the official script does); :class:`LevelAnnealStats` counts such chains.
Non-finite densities or gradients on a trajectory reject that proposal. All randomness comes from the
``generator`` (drawn on the CPU), so results are reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from visionflows.errors import ConfigError, InputError

__all__ = [
    "AnnealConfig",
    "AnnealStats",
    "LevelAnnealStats",
    "anneal_latent",
    "as_anneal_config",
    "check_temperature",
]

METHODS = ("hmc", "mala", "nuts")
_LOG_2PI = math.log(2.0 * math.pi)


def check_temperature(temperature: Any, anneal: bool = False) -> float:
    """A finite sampling temperature (``> 0`` when annealing, ``≥ 0`` otherwise); :class:`InputError` if not."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"temperature must be a number, got {temperature!r}.", "pass e.g. 0.8.") from None
    if not math.isfinite(t):
        raise InputError(f"temperature must be finite, got {t}.", "pass a temperature like 0.8 or 1.0.")
    if anneal and t <= 0.0:
        raise InputError(
            f"annealed sampling needs a temperature T > 0 (it targets p^γ with γ = 1/T²), got {t}.",
            "pass a temperature in (0, 1], e.g. 0.97 (the paper's), or use T = 0 without annealing for the mode.",
        )
    if t < 0.0:
        raise InputError(f"temperature must be ≥ 0, got {t}.", "pass a temperature in [0, 1], e.g. 0.8.")
    return t


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


#: ``(ε [B, ...], rows) → (x [B, ...], log|det ∂x/∂ε| [B])``: a level's inverse flow from its standard-normal
#: latent; ``rows`` (a slice or ``None`` for all) selects the chains ``ε`` belongs to (their conditioning)
LatentMap = Callable[..., tuple[Tensor, Tensor]]


class _Target:
    """``log π(ε)`` and its gradient for a batch of independent chains (non-finite values → ``−inf``, grad 0)."""

    def __init__(self, latent_map: LatentMap, gamma: float) -> None:
        self.f, self.gamma = latent_map, float(gamma)
        self.grad_evals = 0

    def log_prob(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """``(log π(ε) [B], ∇ log π(ε))``."""
        self.grad_evals += 1
        with torch.enable_grad():
            e = eps.detach().requires_grad_(True)
            _, ld = self.f(e)
            lp = self.gamma * (-0.5 * e.flatten(1).pow(2).sum(1)) + (1.0 - self.gamma) * ld
            (grad,) = torch.autograd.grad(lp.sum(), e)
        lp, grad = lp.detach(), grad.detach()
        bad = ~torch.isfinite(lp) | ~torch.isfinite(grad.flatten(1)).all(1)
        if bad.any():
            lp = torch.where(bad, torch.full_like(lp, -math.inf), lp)
            grad = torch.where(bad.view(-1, *[1] * (grad.dim() - 1)), torch.zeros_like(grad), grad)
        return lp, grad


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


class _DualAveraging:
    """Per-chain dual averaging of ``log step`` (Hoffman & Gelman 2014 Alg. 5; TFP's defaults:
    shrinkage 0.05, ``t0 = 10``, decay 0.75, shrinkage target ``log(10·ε0)``)."""

    def __init__(self, step: Tensor, target: float) -> None:
        self.mu = torch.log(10.0 * step)
        self.target = float(target)
        self.h_bar = torch.zeros_like(step)
        self.log_bar = torch.log(step)  # before the first update the average is the initial step
        self.m = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        """One adaptation step with this iteration's acceptance probabilities; returns the next step sizes."""
        self.m += 1
        m, t0, gamma, kappa = self.m, 10.0, 0.05, 0.75
        self.h_bar = (1.0 - 1.0 / (m + t0)) * self.h_bar + (self.target - accept_prob) / (m + t0)
        log_step = self.mu - math.sqrt(m) / gamma * self.h_bar
        w = m ** (-kappa)
        self.log_bar = w * log_step + (1.0 - w) * self.log_bar
        return torch.exp(log_step)

    def final(self) -> Tensor:
        return torch.exp(self.log_bar)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def _rand(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, disable=not enabled, leave=False)


def _hmc(target: _Target, eps: Tensor, cfg: AnnealConfig, generator, desc: str,
         callback: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, dict[str, Any]]:
    b = eps.shape[0]
    n_leap = 1 if cfg.method == "mala" else cfg.leapfrog_steps
    step = torch.full((b,), float(cfg.step_size), device=eps.device, dtype=eps.dtype)
    adapt = _DualAveraging(step, cfg.target_accept)
    lp, grad = target.log_prob(eps)
    ever = torch.zeros(b, dtype=torch.bool, device=eps.device)
    acc_sum = torch.zeros(b, device=eps.device, dtype=torch.float64)
    accepted_sum = torch.zeros(b, device=eps.device, dtype=torch.float64)
    n_post = 0
    with _progress(cfg.num_results, desc, cfg.progress) as bar:
        for it in range(cfg.num_results):
            p0 = _randn(eps.shape, generator, eps)
            jit = 1.0 + cfg.jitter * (2.0 * _rand(b, generator, eps) - 1.0) if cfg.jitter > 0 else 1.0
            h = _bcast(step * jit, eps)
            e, p, g = eps, p0 + 0.5 * h * grad, grad
            ok = torch.isfinite(lp)
            for k in range(n_leap):
                e = e + h * p
                lp_new, g = target.log_prob(e)
                ok = ok & torch.isfinite(lp_new)
                p = p + (h if k < n_leap - 1 else 0.5 * h) * g
            kin0 = 0.5 * p0.flatten(1).pow(2).sum(1)
            kin1 = 0.5 * p.flatten(1).pow(2).sum(1)
            log_ratio = (lp_new - kin1) - (lp - kin0)
            log_ratio = torch.where(ok & torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
            accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
            u = _rand(b, generator, eps)
            take = torch.log(u) < log_ratio
            eps = torch.where(_bcast(take, eps), e, eps)
            lp = torch.where(take, lp_new, lp)
            grad = torch.where(_bcast(take, grad), g, grad)
            ever |= take
            if callback is not None:
                callback(it, eps)
            if it < cfg.num_adaptation:
                step = adapt.update(accept_prob)
                if it == cfg.num_adaptation - 1:
                    step = adapt.final()
            else:
                n_post += 1
                acc_sum += accept_prob.double()
                accepted_sum += take.double()
            if cfg.progress:
                bar.set_postfix(acc=f"{float(accept_prob.mean()):.2f}", step=f"{float(step.mean()):.3g}")
                bar.update(1)
    info = {
        "accept_rate": float(acc_sum.mean() / n_post),
        "accepted": float(accepted_sum.mean() / n_post),
        "step": step,
        "never_accepted": int((~ever).sum()),
    }
    return eps, info


def _nuts(target: _Target, eps: Tensor, cfg: AnnealConfig, generator, desc: str,
          callback: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, dict[str, Any]]:
    try:
        from pyro.infer import MCMC, NUTS
    except ImportError as err:  # pragma: no cover - pyro-ppl is a dependency
        raise ConfigError("annealing method 'nuts' needs Pyro (pyro-ppl).",
                          "pip install pyro-ppl, or use method='hmc'.") from err
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    out, accs, steps, chains = [], [], [], []
    devices = [eps.device] if eps.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _progress(eps.shape[0], desc, cfg.progress) as bar:
        torch.manual_seed(seed)
        for k in range(eps.shape[0]):

            def potential(params: dict[str, Tensor]) -> Tensor:
                z = params["z"]
                ld = target.f(z, slice(k, k + 1))[1].sum()  # noqa: B023 - called within this iteration only
                energy = -(target.gamma * (-0.5 * z.pow(2).sum()) + (1.0 - target.gamma) * ld)
                target.grad_evals += 1
                return torch.where(torch.isfinite(energy), energy, energy.new_tensor(math.inf))  # inf: divergent

            kernel = NUTS(potential_fn=potential, step_size=float(cfg.step_size),
                          adapt_step_size=cfg.num_adaptation > 0, adapt_mass_matrix=False,
                          target_accept_prob=float(cfg.target_accept),
                          max_tree_depth=int(cfg.max_tree_depth), jit_compile=False)
            mcmc = MCMC(kernel, num_samples=cfg.num_results - cfg.num_adaptation, warmup_steps=cfg.num_adaptation,
                        initial_params={"z": eps[k : k + 1].detach().clone()}, disable_progbar=True)
            with torch.enable_grad():
                mcmc.run()
            chain = mcmc.get_samples()["z"].to(eps.dtype)  # the post-adaptation states
            out.append(chain[-1])
            if callback is not None:
                chains.append(chain.reshape(chain.shape[0], *eps.shape[1:]))
            accs.append(float(kernel._mean_accept_prob))
            steps.append(float(kernel.step_size))
            if cfg.progress:
                bar.set_postfix(acc=f"{accs[-1]:.2f}", step=f"{steps[-1]:.3g}")
                bar.update(1)
    new = torch.cat(out).reshape(eps.shape)
    if callback is not None:  # NUTS runs chain by chain: replay the post-adaptation iterations
        for i in range(chains[0].shape[0]):
            callback(cfg.num_adaptation + i, torch.stack([c[i] for c in chains]))
    moved = (new != eps).flatten(1).any(1)
    info = {"accept_rate": sum(accs) / len(accs), "accepted": float(moved.double().mean()),
            "step": torch.tensor(steps), "never_accepted": int((~moved).sum())}
    return new, info


def anneal_latent(
    latent_map: LatentMap,
    shape: Sequence[int],
    temperature: float,
    config: AnnealConfig | None = None,
    generator: torch.Generator | None = None,
    like: Tensor | None = None,
    level: int = 0,
    desc: str | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, LevelAnnealStats]:
    """Sample ``ε`` from ``π(ε) ∝ N(ε)^γ · |det ∂x/∂ε|^(1−γ)`` (``γ = 1/T²``), one chain per row of ``shape``.

    ``latent_map(ε, rows=None) → (x, log|det ∂x/∂ε|)`` is the level's inverse flow (differentiable in ``ε``;
    ``rows`` selects the chains a partial ``ε`` belongs to), ``like`` a
    tensor with the device and dtype to work in. Returns ``(ε, x, stats)`` with ``x = latent_map(ε)[0]``.
    ``callback(iteration, ε)`` sees every chain's state after each iteration (NUTS: the post-adaptation ones,
    after all chains ran) — for diagnostics such as effective sample sizes.
    """
    cfg = config or AnnealConfig()
    t = check_temperature(temperature, anneal=True)
    gamma = 1.0 / (t * t)
    like = like if like is not None else torch.zeros(())
    t0 = t if cfg.init_temperature is None else float(cfg.init_temperature)
    eps = _randn(shape, generator, like) * t0
    target = _Target(latent_map, gamma)
    start = time.perf_counter()
    run = _nuts if cfg.method == "nuts" else _hmc
    eps, info = run(target, eps, cfg, generator, desc or f"anneal level {level}", callback)
    with torch.no_grad():
        x = latent_map(eps)[0]
    if like.device.type == "cuda":
        torch.cuda.synchronize(like.device)
    step = info["step"].float()
    stats = LevelAnnealStats(
        level=int(level), method=cfg.method, chains=int(shape[0]), dims=int(math.prod(shape[1:])),
        iterations=cfg.num_results, accept_rate=info["accept_rate"], accepted=info["accepted"],
        step_size=float(step.mean()), step_size_range=(float(step.min()), float(step.max())),
        never_accepted=info["never_accepted"], grad_evals=target.grad_evals / (shape[0] if cfg.method == "nuts" else 1),
        seconds=time.perf_counter() - start,
    )
    return eps.detach(), x.detach(), stats

