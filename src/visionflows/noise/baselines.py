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
    num_cameras = None  # and the camera

    def __init__(self, variance: float = 1e-4) -> None:
        try:
            v = float(variance)
        except (TypeError, ValueError):
            v = math.nan
        if isinstance(variance, bool) or not math.isfinite(v) or v <= 0:
            raise InputError(f"variance must be a finite number > 0 (normalised raw units²), got {variance!r}.",
                             "fit it on training noise with GaussianNoise().fit(noise), or pass e.g. 1e-4.")
        super().__init__()
        self.register_buffer("variance", torch.tensor(v, dtype=torch.float64))

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


def _iso_idx(iso: Tensor, isos: tuple[int, ...] = ISOS) -> Tensor:
    allowed = torch.tensor(isos, device=iso.device)
    return ((iso[:, None] == allowed[None]).long() * torch.arange(len(isos), device=iso.device)).sum(1)


class _PairTable(GaussianNoiseModel):
    """``σ² = β1·y + β2`` with (β1, β2) looked up per (camera, ISO) in a ``[cameras, ISOs, 2]`` table (NaN = no
    entry); the SIDD phones and ISOs unless a subclass sets ``table_isos`` / ``num_cameras``."""

    #: the ISO levels of the table's second axis
    table_isos: tuple[int, ...] = ISOS
    #: saved tensors in which NaN marks a missing entry, not damage (``check_model_file`` accepts them)
    nan_sentinel_tensors: tuple[str, ...] = ("table",)

    def _betas(self, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _cam_name(self, c: int) -> str:
        return CAMERAS[c] if self.table_isos == ISOS and c < len(CAMERAS) else f"camera {c}"

    def _check_pairs(self, ctx: NoiseContext, have: Tensor, what: str) -> None:
        allowed = torch.tensor(self.table_isos, device=ctx.iso.device)
        listed = (ctx.iso[:, None] == allowed[None]).any(1)
        known = ctx.camera < have.shape[0]
        ok = listed & known
        ok[ok.clone()] = have[ctx.camera[ok], _iso_idx(ctx.iso[ok], self.table_isos)]
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            cam, iso = self._cam_name(int(ctx.camera[i])), int(ctx.iso[i])
            pairs = [f"{self._cam_name(c)}/{self.table_isos[k]}" for c, k in have.nonzero().tolist()]
            raise InputError(f"{what} has no entry for camera {cam} at ISO {iso}.",
                             f"use one of the pairs {', '.join(pairs)}.")

    #: use a context's per-sample metadata NLF (``ctx.nlf``) when it carries one
    uses_metadata_nlf = False

    def std(self, ctx: NoiseContext) -> Tensor:
        if self.uses_metadata_nlf and ctx.nlf is not None and ctx.nlf.dim() == 3:  # one (β1, β2) per channel
            nlf = ctx.nlf.to(ctx.clean.dtype)[:, :, :, None, None]
            return torch.sqrt(nlf[:, :, 0] * ctx.clean + nlf[:, :, 1])
        if self.uses_metadata_nlf and ctx.nlf is not None:
            b1, b2 = ctx.nlf[:, 0], ctx.nlf[:, 1]
        else:
            b1, b2 = self._betas(ctx)
        shape = (b1.shape[0], -1, 1, 1)  # [B] (one pair) or [B, C] (one pair per channel)
        var = b1.to(ctx.clean.dtype).reshape(shape) * ctx.clean + b2.to(ctx.clean.dtype).reshape(shape)
        return torch.sqrt(var)


class CameraNLF(_PairTable):
    """Camera noise-level function ``σ² = β1·y + β2`` (SIDD metadata NoiseProfile).

    (β1, β2) come from the (camera, ISO) table (default: the 22 SIDD rows of
    :data:`visionflows.cameras.NLF_TABLE`) or, per call, from ``nlf=(beta1 [B], beta2 [B])`` (each image's
    metadata, as the official baseline does; or a context whose ``nlf`` is set, also per channel ``[B, C, 2]``,
    e.g. a darktable profile mapped into packed units). Pairs without a table row raise InputError.
    """

    kind = "camera_nlf"
    uses_metadata_nlf = True
    num_cameras = None  # with per-sample metadata the camera does not matter; the table checks its own rows
    continuous_iso = True  # likewise the ISO: any ISO with measured parameters; without, the table's own rows

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

    Parameters ``log_beta1``, ``log_beta2`` ``[cameras, ISOs]`` (default 5 × 5: the SIDD phones and ISOs), or
    ``[cameras, ISOs, channels]`` with ``per_channel=True`` (one pair per packed channel, for cameras whose
    colour channels differ, e.g. darktable profiles); buffer ``fitted`` marks the pairs seen in training; others
    raise InputError. ``num_cameras``/``isos`` size the table for other cameras (a zoo set: any ISOs).
    """

    kind = "heteroscedastic_noise"

    def __init__(self, num_cameras: int = len(CAMERAS), isos: tuple[int, ...] | list[int] = ISOS,
                 per_channel: bool = False, channels: int = 4) -> None:
        super().__init__()
        self.table_isos = tuple(int(i) for i in isos)
        if not self.table_isos or num_cameras < 1 or len(set(self.table_isos)) != len(self.table_isos):
            raise InputError(f"invalid heteroscedastic table: {num_cameras} cameras, ISOs {list(isos)}.",
                             "use at least one camera and distinct ISOs.")
        self.num_cameras, self.per_channel, self.channels = int(num_cameras), bool(per_channel), int(channels)
        self.continuous_iso = self.table_isos != ISOS  # other ISO lists are checked against the table itself
        shape = (self.num_cameras, len(self.table_isos)) + ((self.channels,) if self.per_channel else ())
        self.log_beta1 = nn.Parameter(torch.full(shape, math.log(1e-3), dtype=torch.float64))
        self.log_beta2 = nn.Parameter(torch.full(shape, math.log(1e-5), dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros(self.num_cameras, len(self.table_isos), dtype=torch.bool))

    def model_config(self) -> dict[str, Any]:
        if (self.num_cameras, self.table_isos, self.per_channel) == (len(CAMERAS), ISOS, False):
            return {}
        return {"num_cameras": self.num_cameras, "isos": list(self.table_isos), "per_channel": self.per_channel,
                "channels": self.channels}

    def _betas(self, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        self._check_pairs(ctx, self.fitted, "the fitted heteroscedastic model")
        k = _iso_idx(ctx.iso, self.table_isos)
        return self.log_beta1[ctx.camera, k].exp(), self.log_beta2[ctx.camera, k].exp()

    def fit(self, noise: Tensor, clean: Tensor, iso: Any, camera: Any, steps: int = 300, lr: float = 0.05,
            max_values: int = 200_000, generator: torch.Generator | None = None) -> HeteroscedasticNoise:
        """Maximum-likelihood (β1, β2) for every (camera, ISO) pair present (Newton on log β, float64).

        Starts from a least-squares fit of ``n²`` on ``y``; uses at most ``max_values`` random values per pair;
        ``steps`` bounds the Newton iterations.
        """
        ctx = NoiseContext.create(clean, iso, camera, noise=noise, allowed_isos=self.table_isos,
                                  num_cameras=self.num_cameras)
        gen = generator or torch.Generator().manual_seed(0)
        k = _iso_idx(ctx.iso, self.table_isos).cpu()
        cam = ctx.camera.cpu()
        with torch.no_grad():
            for c, i in sorted(set(zip(cam.tolist(), k.tolist()))):
                sel = ((cam == c) & (k == i)).nonzero().squeeze(1)
                ys = ctx.clean[sel.to(ctx.clean.device)].double().cpu()
                ns = noise[sel.to(noise.device)].double().cpu()
                parts = [(ys[:, ch], ns[:, ch]) for ch in range(ys.shape[1])] if self.per_channel else [(ys, ns)]
                for ch, (y, n) in enumerate(parts):
                    y, n = y.reshape(-1), n.reshape(-1)
                    if y.numel() > max_values:
                        pick = torch.randperm(y.numel(), generator=gen)[:max_values]
                        y, n = y[pick], n[pick]
                    b1, b2 = _fit_pair(y, n, steps, lr)
                    idx = (c, i, ch) if self.per_channel else (c, i)
                    self.log_beta1[idx] = math.log(b1)
                    self.log_beta2[idx] = math.log(b2)
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
