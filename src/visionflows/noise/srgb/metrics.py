"""Metrics of the sRGB noise models: dequantised NLL per dimension and the marginal KL of integer noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.noise.srgb.context import dequantize_noise, integer_noise, quantize_noisy

__all__ = ["nll_per_dim", "marginal_kl", "evaluate_srgb_noise_models"]


@torch.no_grad()
def nll_per_dim(model: nn.Module, patches: dict, seed: int = 0, batch_size: int = 256) -> float:
    """Mean NLL (nats/dim) of 8-bit ``patches`` (dict of uint8 ``noisy``/``clean``, ``iso``, ``camera``) under
    ``model``, with the dequantisation noise ``u`` drawn from ``seed`` (the same ``u`` for every model)."""
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    n = patches["noisy"].shape[0]
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        noise = dequantize_noise(patches["noisy"][sl], patches["clean"][sl], gen)
        lp = model.log_prob(noise, patches["clean"][sl], patches["iso"][sl], patches["camera"][sl])
        total += float(-lp.double().sum())
        count += noise.numel()
    model.train(was)
    return total / count


def _hist(x: Tensor) -> Tensor:
    """Counts of integer values −255…255 per row of ``x [N, D]`` → ``[N, 511]``."""
    idx = (x.long() + 255).clamp(0, 510)
    out = torch.zeros(x.shape[0], 511, dtype=torch.float64)
    return out.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def marginal_kl(real: Tensor, model: Tensor) -> float:
    """Mean over patches of ``KL(p‖q)`` between the histograms of integer noise (one bin per level) of the real
    patches ``p`` and the model's ``q`` (``[N, ...]`` each); bins where ``p`` or ``q`` is empty are dropped, as in
    the official Noise Flow protocol (``docs/noiseflow.md`` §8)."""
    if real.shape[0] != model.shape[0]:
        raise InputError(f"marginal_kl needs the same number of patches, got {real.shape[0]} and {model.shape[0]}.")
    p = _hist(real.reshape(real.shape[0], -1))
    q = _hist(model.reshape(model.shape[0], -1))
    p = p / p.sum(1, keepdim=True)
    q = q / q.sum(1, keepdim=True)
    mask = (p > 0) & (q > 0)
    kl = torch.where(mask, p * torch.log(torch.where(mask, p / q, torch.ones_like(p))), torch.zeros_like(p))
    return float(kl.sum(1).mean())


@torch.no_grad()
def evaluate_srgb_noise_models(models: dict[str, nn.Module], patches: dict, seed: int = 0,
                               batch_size: int = 256) -> dict[str, dict[str, float]]:
    """NLL/dim and marginal KL of every model on held-out 8-bit ``patches``; samples at T = 1 (eval mode),
    quantised with :func:`quantize_noisy`. Returns ``{name: {"nll_per_dim", "kl"}}``."""
    real = integer_noise(patches["noisy"], patches["clean"])
    out = {}
    for name, model in models.items():
        was = model.training
        model.eval()
        gen = torch.Generator().manual_seed(seed + 1)
        fake = []
        for i in range(0, real.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            n = model.sample(patches["clean"][sl], patches["iso"][sl], patches["camera"][sl], 1.0, gen)
            fake.append(integer_noise(quantize_noisy(patches["clean"][sl], n.cpu()), patches["clean"][sl]))
        model.train(was)
        out[name] = {"nll_per_dim": nll_per_dim(model, patches, seed, batch_size),
                     "kl": marginal_kl(real, torch.cat(fake))}
    return out
