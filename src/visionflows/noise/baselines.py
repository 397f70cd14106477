"""Baseline noise models with the Noise Flow API (``log_prob``/``sample``/``encode``/``decode``).

All three are zero-mean Gaussians with a per-pixel std ``σ(y, ISO, camera)``; ``encode`` is ``z = n/σ``:

* :class:`GaussianNoise`: one variance for everything, the unbiased sample variance of the pooled training
  noise (the paper's "Gaussian" baseline, reference ``noiseflow.md`` §9).
* :class:`CameraNLF`: ``σ² = β1·y + β2`` from the camera's noise-level function (the SIDD table of
  :mod:`visionflows.noise.nlf`, or per-sample ``β1``/``β2`` from image metadata): the paper's "camera NLF".
* :class:`HeteroscedasticNoise`: the same form with ``β1``, ``β2`` fitted per (camera, ISO) by maximum
  likelihood on training data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows import sum_except_batch
from visionflows.io import register_model_kind
from visionflows.noise.context import NoiseContext
from visionflows.noise.model import resolve_context
from visionflows.noise.nlf import CAMERAS, ISOS, NLF_TABLE

__all__ = ["GaussianNoise", "CameraNLF", "HeteroscedasticNoise", "GaussianNoiseModel"]

_LOG_2PI = math.log(2 * math.pi)


def _batched(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}.", "use torch.as_tensor.")
    return x[None] if x.dim() == 3 else x


class GaussianNoiseModel(nn.Module):
    """Base: a zero-mean Gaussian with per-pixel std :meth:`std` ``[B, C, H, W]``."""

    continuous_iso = False

    def std(self, ctx: NoiseContext, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def _ref(self) -> Tensor:
        return next(iter(self.buffers()))

    def context(self, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
                noise: Tensor | None = None) -> NoiseContext:
        if isinstance(clean, Tensor):
            clean = clean.to(self._ref().device)
        return resolve_context(clean, iso, camera, noise=noise, continuous_iso=self.continuous_iso)

    def encode(self, noise: Tensor, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
               **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Noise → latent ``z = n/σ`` and ``log|det| = −Σ log σ`` ``[B]``."""
        noise = _batched(noise)
        ctx = self.context(clean, iso, camera, noise=noise)
        s = self.std(ctx, **kwargs).to(noise.dtype)
        return noise.to(s.device) / s, -sum_except_batch(torch.log(s))

    def decode(self, z: Tensor, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
               **kwargs: Any) -> Tensor:
        z = _batched(z)
        ctx = self.context(clean, iso, camera, noise=z)
        return z.to(ctx.clean.device) * self.std(ctx, **kwargs).to(z.dtype)

    def log_prob(self, noise: Tensor, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
                 **kwargs: Any) -> Tensor:
        """Log-density in nats per patch ``[B]``."""
        z, logdet = self.encode(noise, clean, iso, camera, **kwargs)
        return sum_except_batch(-0.5 * (z * z + _LOG_2PI)) + logdet

    def nll_per_dim(self, noise: Tensor, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
                    **kwargs: Any) -> Tensor:
        noise = _batched(noise)
        return -self.log_prob(noise, clean, iso, camera, **kwargs) / noise[0].numel()

    def forward(self, noise: Tensor, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None) -> Tensor:
        return self.log_prob(noise, clean, iso, camera)

    @torch.no_grad()
    def sample(self, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """``σ·temperature·ε`` with ``ε ~ N(0, I)`` of the clean batch's shape."""
        ctx = self.context(clean, iso, camera)
        s = self.std(ctx, **kwargs)
        eps = torch.randn(tuple(s.shape), generator=generator, dtype=s.dtype,
                          device=generator.device if generator is not None else s.device).to(s.device)
        return eps * temperature * s


class GaussianNoise(GaussianNoiseModel):
    """``n ~ N(0, σ²)`` with one variance (buffer ``variance``), independent of signal, ISO and camera."""

    kind = "gaussian_noise"
    continuous_iso = True  # ignores ISO

    def __init__(self, variance: float = 1e-4) -> None:
        super().__init__()
        self.register_buffer("variance", torch.tensor(float(variance), dtype=torch.float64))

    def model_config(self) -> dict[str, Any]:
        return {}

    @torch.no_grad()
    def fit(self, noise: Tensor, chunk: int = 4096) -> GaussianNoise:
        """Set the variance to the unbiased sample variance of all values of ``noise`` (any shape); returns self."""
        if not isinstance(noise, Tensor) or noise.numel() < 2:
            raise InputError("fit needs a tensor with at least 2 noise values.", "pass the training noise patches.")
        if not torch.isfinite(noise).all():
            raise InputError("training noise contains NaN/Inf.", "clean the data first.")
        flat = noise.reshape(-1)
        n = flat.numel()
        s1 = s2 = 0.0
        for i in range(0, n, chunk * 4096):
            part = flat[i : i + chunk * 4096].double()
            s1 += float(part.sum())
            s2 += float((part * part).sum())
        mean = s1 / n
        self.variance.fill_(max((s2 - n * mean * mean) / (n - 1), 1e-30))
        return self

    def std(self, ctx: NoiseContext, **kwargs: Any) -> Tensor:
        return torch.sqrt(self.variance).to(ctx.clean.dtype).expand_as(ctx.clean)


def _table_tensor(table: dict[tuple[str, int], tuple[float, float]]) -> Tensor:
    t = torch.full((len(CAMERAS), len(ISOS), 2), float("nan"), dtype=torch.float64)
    for (cam, iso), (b1, b2) in table.items():
        if cam in CAMERAS and iso in ISOS:
            t[CAMERAS.index(cam), ISOS.index(iso)] = torch.tensor([b1, b2], dtype=torch.float64)
    return t


def _iso_idx(iso: Tensor) -> Tensor:
    allowed = torch.tensor(ISOS, device=iso.device)
    return ((iso[:, None] == allowed[None]).long() * torch.arange(len(ISOS), device=iso.device)).sum(1)


class _PairTable(GaussianNoiseModel):
    """``σ² = β1·y + β2`` with (β1, β2) looked up per (camera, ISO) in a ``[5, 5, 2]`` table (NaN = no entry)."""

    def _betas(self, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _check_pairs(self, ctx: NoiseContext, have: Tensor, what: str) -> None:
        ok = have[ctx.camera, _iso_idx(ctx.iso)]
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            cam, iso = CAMERAS[int(ctx.camera[i])], int(ctx.iso[i])
            pairs = [f"{CAMERAS[c]}/{ISOS[k]}" for c, k in have.nonzero().tolist()]
            raise InputError(f"{what} has no entry for camera {cam} at ISO {iso}.",
                             f"use one of the pairs {', '.join(pairs)}.")

    def std(self, ctx: NoiseContext, nlf: tuple[Any, Any] | None = None, **kwargs: Any) -> Tensor:
        if nlf is not None:
            b = ctx.batch_size
            b1 = torch.as_tensor(nlf[0], dtype=torch.float64, device=ctx.clean.device).reshape(-1).expand(b)
            b2 = torch.as_tensor(nlf[1], dtype=torch.float64, device=ctx.clean.device).reshape(-1).expand(b)
            if not (torch.isfinite(b1).all() and torch.isfinite(b2).all()) or bool((b1 < 0).any()):
                raise InputError("per-sample NLF beta1/beta2 must be finite and beta1 >= 0.",
                                 "read them from the image metadata (NoiseProfile); values <= 0 become 1e-6.")
            b2 = torch.where(b2 <= 0, torch.full_like(b2, 1e-6), b2)
        else:
            b1, b2 = self._betas(ctx)
        var = b1.to(ctx.clean.dtype)[:, None, None, None] * ctx.clean + b2.to(ctx.clean.dtype)[:, None, None, None]
        return torch.sqrt(var)


class CameraNLF(_PairTable):
    """Camera noise-level function ``σ² = β1·y + β2`` (SIDD metadata NoiseProfile).

    (β1, β2) come from the (camera, ISO) table (default: the 22 SIDD rows of
    :data:`visionflows.noise.nlf.NLF_TABLE`) or, per call, from ``nlf=(beta1 [B], beta2 [B])`` (each image's
    metadata, as the official baseline does). Pairs without a table row raise InputError.
    """

    kind = "camera_nlf"

    def __init__(self, table: dict[tuple[str, int], tuple[float, float]] | None = None) -> None:
        super().__init__()
        self.register_buffer("table", _table_tensor(NLF_TABLE if table is None else table))

    def model_config(self) -> dict[str, Any]:
        return {}

    def _betas(self, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        have = torch.isfinite(self.table[..., 0])
        self._check_pairs(ctx, have, "the camera NLF table")
        row = self.table[ctx.camera, _iso_idx(ctx.iso)]
        return row[:, 0], row[:, 1]


class HeteroscedasticNoise(_PairTable):
    """``σ² = β1·y + β2`` with (β1, β2) per (camera, ISO) fitted by maximum likelihood (:meth:`fit`).

    Parameters ``log_beta1``, ``log_beta2`` ``[5, 5]`` (cameras × ISOs); buffer ``fitted`` marks the pairs seen
    in training; others raise InputError.
    """

    kind = "heteroscedastic_noise"

    def __init__(self) -> None:
        super().__init__()
        self.log_beta1 = nn.Parameter(torch.full((len(CAMERAS), len(ISOS)), math.log(1e-3), dtype=torch.float64))
        self.log_beta2 = nn.Parameter(torch.full((len(CAMERAS), len(ISOS)), math.log(1e-5), dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros(len(CAMERAS), len(ISOS), dtype=torch.bool))

    def model_config(self) -> dict[str, Any]:
        return {}

    def _betas(self, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        self._check_pairs(ctx, self.fitted, "the fitted heteroscedastic model")
        k = _iso_idx(ctx.iso)
        return self.log_beta1[ctx.camera, k].exp(), self.log_beta2[ctx.camera, k].exp()

    def fit(self, noise: Tensor, clean: Tensor, iso: Any, camera: Any, steps: int = 300, lr: float = 0.05,
            max_values: int = 200_000, generator: torch.Generator | None = None) -> HeteroscedasticNoise:
        """Maximum-likelihood (β1, β2) for every (camera, ISO) pair present (Newton on log β, float64).

        Starts from a least-squares fit of ``n²`` on ``y``; uses at most ``max_values`` random values per pair;
        ``steps`` bounds the Newton iterations.
        """
        ctx = NoiseContext.create(clean, iso, camera, noise=noise)
        gen = generator or torch.Generator().manual_seed(0)
        k = _iso_idx(ctx.iso).cpu()
        cam = ctx.camera.cpu()
        with torch.no_grad():
            for c, i in sorted(set(zip(cam.tolist(), k.tolist()))):
                sel = ((cam == c) & (k == i)).nonzero().squeeze(1)
                y = ctx.clean[sel.to(ctx.clean.device)].reshape(-1).double().cpu()
                n = noise[sel.to(noise.device)].reshape(-1).double().cpu()
                if y.numel() > max_values:
                    pick = torch.randperm(y.numel(), generator=gen)[:max_values]
                    y, n = y[pick], n[pick]
                b1, b2 = _fit_pair(y, n, steps, lr)
                self.log_beta1[c, i] = math.log(b1)
                self.log_beta2[c, i] = math.log(b2)
                self.fitted[c, i] = True
        return self


def _fit_pair(y: Tensor, n: Tensor, steps: int, lr: float) -> tuple[float, float]:
    """Maximum likelihood of ``n ~ N(0, β1·y + β2)``: least-squares start, then damped Newton on ``log β``.

    ``steps`` bounds the Newton iterations (it converges in a handful); ``lr`` is kept for API compatibility.
    """
    n2 = n * n
    a = torch.stack([y, torch.ones_like(y)], 1)
    sol = torch.linalg.lstsq(a, n2[:, None]).solution.squeeze(1)
    floor = max(float(n2.mean()) * 1e-4, 1e-12)
    theta = torch.tensor([math.log(max(float(sol[0]), floor)), math.log(max(float(sol[1]), floor))],
                         dtype=torch.float64)

    def nll(t: Tensor) -> float:
        var = t[0].exp() * y + t[1].exp()
        return float(0.5 * (torch.log(var) + n2 / var).mean())

    def grad_hess(t: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.stack([t[0].exp() * y, t[1].exp().expand_as(y)])  # ∂var/∂log β, [2, N]
        var = u.sum(0)
        d1 = 0.5 * (1.0 / var - n2 / var**2)  # ∂L/∂var per value
        d2 = 0.5 * (-1.0 / var**2 + 2.0 * n2 / var**3)
        grad = (d1 * u).mean(1)
        hess = (d2 * u) @ u.T / y.numel() + torch.diag(grad)
        return grad, hess

    current = nll(theta)
    for _ in range(max(1, min(steps, 50))):
        grad, hess = grad_hess(theta)
        try:
            step = torch.linalg.solve(hess + 1e-12 * torch.eye(2, dtype=hess.dtype), grad)
        except RuntimeError:
            step = grad
        if float(grad @ step) <= 0:  # not a descent direction: fall back to the gradient
            step = grad
        scale, value = 1.0, current
        while scale > 1e-6:
            cand = theta - scale * step
            value = nll(cand)
            if value < current:
                break
            scale *= 0.5
        else:
            break
        converged = current - value < 1e-13
        theta, current = cand, value
        if converged:
            break
    return float(theta[0].exp()), float(theta[1].exp())


@register_model_kind("gaussian_noise")
def _build_gaussian(config: dict[str, Any]) -> GaussianNoise:
    return GaussianNoise(**config)


@register_model_kind("camera_nlf")
def _build_nlf(config: dict[str, Any]) -> CameraNLF:
    return CameraNLF()


@register_model_kind("heteroscedastic_noise")
def _build_hetero(config: dict[str, Any]) -> HeteroscedasticNoise:
    return HeteroscedasticNoise()
