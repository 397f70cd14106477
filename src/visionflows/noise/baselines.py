"""Baseline noise models: flows too (:class:`~visionflows.noise.base.NoiseModel`), with the same API as Noise Flow.

All three are zero-mean Gaussians with a per-pixel std ``σ(y, ISO, camera)``: the flow is the fixed elementwise
scaling ``z = n/σ`` (:class:`~visionflows.flows.ContextScale`) over a standard-normal prior:

* :class:`GaussianNoise`: one variance for everything, the unbiased sample variance of the pooled training
  noise (the paper's "Gaussian" baseline, reference ``noiseflow.md`` §9).
* :class:`CameraNLF`: ``σ² = β1·y + β2`` from the camera's noise-level function (the SIDD table of
  :mod:`visionflows.cameras`, or per-sample ``β1``/``β2`` from image metadata): the paper's "camera NLF".
* :class:`HeteroscedasticNoise`: the same form with ``β1``, ``β2`` fitted per (camera, ISO) by maximum
  likelihood on training data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.cameras import CAMERAS, ISOS, NLF_TABLE
from visionflows.errors import InputError
from visionflows.flows import ContextScale, StandardNormal
from visionflows.noise.base import NoiseModel
from visionflows.noise.context import NoiseContext
from visionflows.registry import HarnessSpec, register_model

__all__ = ["GaussianNoise", "CameraNLF", "HeteroscedasticNoise", "GaussianNoiseModel"]

_LOG_2PI = math.log(2 * math.pi)


class GaussianNoiseModel(NoiseModel):
    """Base: a zero-mean Gaussian with per-pixel std :meth:`std` ``[B, C, H, W]``."""

    continuous_iso = False

    def __init__(self) -> None:
        super().__init__(ContextScale(self._scale), StandardNormal())

    def std(self, ctx: NoiseContext) -> Tensor:
        raise NotImplementedError

    def _scale(self, ctx: NoiseContext, x: Tensor) -> Tensor:
        return self.std(ctx)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None,
                       size: int = 8) -> tuple[Tensor, NoiseContext]:
        """Noise and a context on (camera, ISO) pairs this baseline has (the SIDD table's)."""
        gen = generator or torch.Generator().manual_seed(0)
        clean = torch.rand(batch_size, 4, size, size, generator=gen) * 0.9 + 0.05
        pairs = [(c, i) for (c, i) in sorted(NLF_TABLE)][:: max(1, len(NLF_TABLE) // 4)]
        cams = [CAMERAS.index(pairs[k % len(pairs)][0]) for k in range(batch_size)]
        isos = [pairs[k % len(pairs)][1] for k in range(batch_size)]
        noise = torch.randn(batch_size, 4, size, size, generator=gen) * 0.02
        return noise, NoiseContext.create(clean, isos, cams)


class GaussianNoise(GaussianNoiseModel):
    """``n ~ N(0, σ²)`` with one variance (buffer ``variance``), independent of signal, ISO and camera."""

    kind = "gaussian_noise"
    continuous_iso = True  # ignores ISO

    def __init__(self, variance: float = 1e-4) -> None:
        super().__init__()
        self.register_buffer("variance", torch.tensor(float(variance), dtype=torch.float64))

    def model_config(self) -> dict[str, Any]:
        return {}  # the variance is a buffer, saved with the weights

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

    def std(self, ctx: NoiseContext) -> Tensor:
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

    #: use a context's per-sample metadata NLF (``ctx.nlf``) when it carries one
    uses_metadata_nlf = False

    def std(self, ctx: NoiseContext) -> Tensor:
        if self.uses_metadata_nlf and ctx.nlf is not None:
            b1, b2 = ctx.nlf[:, 0], ctx.nlf[:, 1]
        else:
            b1, b2 = self._betas(ctx)
        var = b1.to(ctx.clean.dtype)[:, None, None, None] * ctx.clean + b2.to(ctx.clean.dtype)[:, None, None, None]
        return torch.sqrt(var)


class CameraNLF(_PairTable):
    """Camera noise-level function ``σ² = β1·y + β2`` (SIDD metadata NoiseProfile).

    (β1, β2) come from the (camera, ISO) table (default: the 22 SIDD rows of
    :data:`visionflows.cameras.NLF_TABLE`) or, per call, from ``nlf=(beta1 [B], beta2 [B])`` (each image's
    metadata, as the official baseline does; or a context whose ``nlf`` is set). Pairs without a table row raise
    InputError.
    """

    kind = "camera_nlf"
    uses_metadata_nlf = True

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


@register_model("gaussian_noise", family="noise")
def gaussian_noise(**overrides: Any) -> GaussianNoise:
    """Gaussian baseline: one variance for all noise (fit it with ``.fit(noise)``)."""
    return GaussianNoise(**overrides)


@register_model("camera_nlf", family="noise")
def camera_nlf(**overrides: Any) -> CameraNLF:
    """Camera NLF baseline: sigma^2 = beta1*y + beta2 from the SIDD (camera, ISO) table."""
    return CameraNLF(**overrides)


def _fit_on_example(model: HeteroscedasticNoise, noise: Tensor, ctx: NoiseContext) -> None:
    model.fit(noise, ctx.clean, ctx.iso, ctx.camera)


@register_model("heteroscedastic_noise", family="noise", harness=HarnessSpec(setup=_fit_on_example))
def heteroscedastic_noise(**overrides: Any) -> HeteroscedasticNoise:
    """Heteroscedastic Gaussian baseline: beta1, beta2 per (camera, ISO) fitted by maximum likelihood."""
    return HeteroscedasticNoise(**overrides)
