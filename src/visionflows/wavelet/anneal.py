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

The settings and statistics live in :mod:`visionflows.wavelet.anneal_config`, the samplers (target, step-size
adaptation, HMC/MALA, NUTS) in :mod:`visionflows.wavelet.anneal_kernels`; both are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from visionflows.wavelet.anneal_config import (
    METHODS,  # noqa: F401  (importable here as before)
    AnnealConfig,
    AnnealStats,
    LevelAnnealStats,
    as_anneal_config,
    check_temperature,
)
from visionflows.wavelet.anneal_kernels import LatentMap, _hmc, _nuts, _randn, _Target

__all__ = [
    "AnnealConfig",
    "AnnealStats",
    "LevelAnnealStats",
    "anneal_latent",
    "as_anneal_config",
    "check_temperature",
]


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
