"""The MCMC kernels behind :func:`visionflows.wavelet.anneal.anneal_latent` (see that module for the method):
the annealed target ``log π(ε)`` with its gradient, per-chain dual-averaging step-size adaptation, the batched
HMC / MALA sampler and the per-image Pyro NUTS sampler. Randomness is drawn on the CPU from the caller's
``generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from visionflows.errors import ConfigError
from visionflows.wavelet.anneal_config import AnnealConfig

__all__ = ["LatentMap"]

_LOG_2PI = math.log(2.0 * math.pi)

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
    except ImportError as err:  # pragma: no cover - pyro-ppl is the optional `mcmc` extra (in `test`)
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
            seen = {"acc": float("nan")}

            def hook(kern, _samples, stage, _i, seen=seen):  # Pyro resets the kernel's statistics after run()
                if stage.startswith("Sample"):
                    seen["acc"] = float(kern._mean_accept_prob)

            mcmc = MCMC(kernel, num_samples=cfg.num_results - cfg.num_adaptation, warmup_steps=cfg.num_adaptation,
                        initial_params={"z": eps[k : k + 1].detach().clone()}, disable_progbar=True, hook_fn=hook)
            with torch.enable_grad():
                mcmc.run()
            chain = mcmc.get_samples()["z"].to(eps.dtype)  # the post-adaptation states
            out.append(chain[-1])
            if callback is not None:
                chains.append(chain.reshape(chain.shape[0], *eps.shape[1:]))
            accs.append(seen["acc"])
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
