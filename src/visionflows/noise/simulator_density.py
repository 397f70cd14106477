"""The camera simulator's own density: the exact per-pixel marginal of its noise, an NLL floor for every model.

:func:`sensor_log_prob` scores noise of one camera at one ISO (:class:`~visionflows.cameras.physics.SensorParams`)
under a :class:`~visionflows.cameras.physics.SensorPhysics` whose per-pixel marginal is tractable
(:attr:`~visionflows.cameras.physics.SensorPhysics.tractable`); :func:`simulator_log_prob` and
:func:`simulator_nll_floor` do so for the built-in SIDD simulator (camera and ISO per sample).

Model per value of packed channel c: ``s = K_c·Poisson(y/K_c) + N(o_c, σ²)``, with
``σ² = σ²_read,c + σ²_row,c + σ²_dsnu,c + (p·y)²`` and ``o_c`` the black-level offset, quantised to the sensor
levels (probability mass of the observed level divided by the level width, i.e. a dequantised density
comparable with a flow's density on ``noise = noisy - clean``) and clipped to [0, 1] when the physics does, or
the continuous density when it neither quantises nor clips. The Poisson sum is truncated at ±8√λ+8 (error
< 1e-12).

Approximations: row noise and DSNU are counted as independent per-pixel variance (their marginals are exact;
the row correlation and the fixed pattern are ignored, so the product of marginals *upper-bounds* the true
joint NLL), and PRNU is folded into the Gaussian variance (exact PRNU would multiply the Poisson rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import gammaln, ndtr

from visionflows.cameras import camera_index
from visionflows.cameras.physics import SIDD_PHYSICS, SensorParams, SensorPhysics, fixed_pattern
from visionflows.errors import InputError

__all__ = ["sensor_log_prob", "sensor_nll_floor", "simulator_log_prob", "simulator_nll_floor"]


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _as_list(v: object) -> object:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return v


def _log_mass(v: np.ndarray, lam: np.ndarray, k: float, var: np.ndarray, q: float | None, m_max: int | None,
              shift: float = 0.0, max_elems: int = 1_000_000, normal_above: float | None = None) -> np.ndarray:
    """For s = K·Poisson(lam) + N(shift, var): log P(level v) of the quantised value (``q`` given; with
    ``m_max`` the value is clipped to levels 0..m_max, whose end bins are open-ended) or, for ``q=None``, the
    log density at ``v``. Vectorised in chunks.

    Only Poisson counts inside both ±8√λ+8 of λ and ±8σ/K of the value contribute (omitted mass < 1e-14).
    ``normal_above``: Poisson rates above it use the normal approximation ``N(Kλ, K²λ + var)`` (see
    :func:`sensor_log_prob`).
    """
    if normal_above is not None and np.any(lam > normal_above):
        big = lam > normal_above
        out = np.empty(v.size)
        small = ~big
        if small.any():
            out[small] = _log_mass(v[small], lam[small], k, var[small], q, m_max, shift, max_elems)
        sd = np.sqrt(k * k * lam[big] + var[big])
        mu = k * lam[big] + shift
        vb = v[big]
        if q is None:
            z = (vb - mu) / sd
            out[big] = -0.5 * z * z - np.log(sd * math.sqrt(2 * math.pi))
        else:
            lo = (vb - 0.5) * q - mu
            hi = (vb + 0.5) * q - mu
            if m_max is not None:
                lo = np.where(vb <= 0, -np.inf, lo)
                hi = np.where(vb >= m_max, np.inf, hi)
            zl, zh = lo / sd, hi / sd
            mass = np.where(zl > 0, ndtr(-zl) - ndtr(-zh), ndtr(zh) - ndtr(zl))
            out[big] = np.log(np.maximum(mass, 1e-300))
        return out
    c = 8.0
    sd = np.sqrt(var)
    if q is not None:
        lo = (v - 0.5) * q - shift
        hi = (v + 0.5) * q - shift
        if m_max is not None:
            lo = np.where(v <= 0, -np.inf, lo)
            hi = np.where(v >= m_max, np.inf, hi)
    else:
        lo = hi = v - shift
    sq = np.sqrt(lam)
    kstart = np.maximum(np.maximum(0.0, np.floor(lam - c * sq - c)), np.floor((lo - c * sd) / k))
    kend = np.minimum(np.ceil(lam + c * sq + c), np.ceil((hi + c * sd) / k))
    width = np.maximum(kend - kstart + 1, 1).astype(np.int64)
    order = np.argsort(width, kind="stable")
    out = np.empty(v.size)
    i = 0
    while i < v.size:
        step = max(1, max_elems // int(width[order[min(i + 4095, v.size - 1)]]))
        idx = order[i : i + step]
        i += step
        kk = kstart[idx, None] + np.arange(int(width[idx].max()))[None, :]
        lm = lam[idx, None]
        logpmf = kk * np.log(np.maximum(lm, 1e-300)) - lm - gammaln(kk + 1)
        logpmf = np.where(lm > 0, logpmf, np.where(kk == 0, 0.0, -np.inf))
        logpmf = np.where(kk <= kend[idx, None], logpmf, -np.inf)
        mean = k * kk
        s = sd[idx, None]
        if q is not None:
            zl = (lo[idx, None] - mean) / s
            zh = (hi[idx, None] - mean) / s
            mass = np.where(zl > 0, ndtr(-zl) - ndtr(-zh), ndtr(zh) - ndtr(zl))
        else:
            z = (lo[idx, None] - mean) / s
            mass = np.exp(-0.5 * z * z) / (s * math.sqrt(2 * math.pi))
        out[idx] = np.log(np.maximum((np.exp(logpmf) * mass).sum(axis=1), 1e-300))
    return out


def sensor_log_prob(noise: np.ndarray | torch.Tensor, clean: np.ndarray | torch.Tensor, params: SensorParams,
                    physics: SensorPhysics = SIDD_PHYSICS, origin: tuple[int, int] = (0, 0),
                    normal_above: float | None = None) -> np.ndarray:
    """Log density (nats per value) of ``noise`` [..., 4, h, w] given ``clean`` for one camera at one ISO.

    ``normal_above``: Poisson rates λ = y/K above it use the normal approximation (default ``None``: exact).
    Zoo cameras have λ up to ~10⁵ (thousands of Poisson terms per value); with ``normal_above=1000`` the
    Poisson skewness is below 0.032 and the error of the approximation is of order skew²/12 < 1e-4 nats per
    value (our estimate).

    InputError when the physics has no tractable marginal (Tukey read noise, hot pixels, or clipping without
    quantisation), or, for quantising physics, when ``clean + noise`` is off the sensor's level grid.
    ``origin`` only matters for the black-level offset's sign pattern (it is per channel, not per pixel).
    """
    n_arr, y_arr = _np(noise), _np(clean)
    if n_arr.shape != y_arr.shape or n_arr.ndim < 3 or n_arr.shape[-3] != 4:
        raise InputError(f"noise {n_arr.shape} and clean {y_arr.shape} must have the same [..., 4, h, w] shape.",
                         "Pass matching packed arrays.")
    if not physics.tractable or (physics.clip and not physics.quantise):
        raise InputError(f"the simulator's density is not tractable for {physics.describe()} (Tukey read noise, "
                         "hot pixels, or clipping of unquantised values).",
                         "report NLL floors only for tractable physics (quantised, Gaussian read noise).")
    y = np.clip(y_arr, 0.0, 1.0)
    noisy = y + n_arr
    levels = params.levels
    q = 1.0 / levels
    if physics.quantise:
        m = np.rint(noisy / q)
        off_grid = np.abs(noisy / q - m) > 0.05
        lo_ok = m >= 0 if physics.clip else np.ones_like(m, bool)
        if np.any(off_grid) or not lo_ok.all() or (physics.clip and np.any(m > levels)):
            raise InputError(
                f"noisy = clean + noise is not on the {levels}-level grid of camera {params.name} "
                f"({int(off_grid.sum())} values off grid) or outside [0, 1].",
                "The simulator NLL floor only applies to noise produced by the simulator for this camera.",
            )
    out = np.empty(y.shape)
    read = np.asarray(params.read_var, np.float64)
    gain = np.asarray(params.gain, np.float64)
    offsets = np.zeros(4)
    if physics.black_offset > 0:
        offsets = physics.black_offset * np.sqrt(read) * fixed_pattern(params, "offset", 0.0, 1, 1, origin)[:, 0, 0]
    groups: dict[tuple[float, float, float], list[int]] = {}
    for ch in range(4):
        groups.setdefault((float(gain[ch]), float(read[ch]), float(offsets[ch])), []).append(ch)
    for (k, rv, off), chans in groups.items():
        yc = y[..., chans, :, :]
        var = rv + (physics.row**2) * rv + (physics.dsnu**2) * rv + (physics.prnu * yc) ** 2
        lam = (yc / k).ravel()
        if physics.quantise:
            lp = _log_mass(m[..., chans, :, :].ravel(), lam, k, var.ravel(), q, levels if physics.clip else None,
                           shift=off, normal_above=normal_above)
            out[..., chans, :, :] = lp.reshape(yc.shape) - math.log(q)
        else:
            lp = _log_mass(noisy[..., chans, :, :].ravel(), lam, k, var.ravel(), None, None, shift=off,
                           normal_above=normal_above)
            out[..., chans, :, :] = lp.reshape(yc.shape)
    return out


def sensor_nll_floor(noise: np.ndarray | torch.Tensor, clean: np.ndarray | torch.Tensor, params: SensorParams,
                     physics: SensorPhysics = SIDD_PHYSICS) -> float:
    """Mean NLL (nats/dim) of :func:`sensor_log_prob`."""
    return float(-np.mean(sensor_log_prob(noise, clean, params, physics)))


def simulator_log_prob(
    noise: np.ndarray | torch.Tensor,
    clean: np.ndarray | torch.Tensor,
    camera: str | int | Sequence[int] | np.ndarray | torch.Tensor,
    iso: int | Sequence[int] | np.ndarray | torch.Tensor,
) -> np.ndarray:
    """Log density (nats per value) of ``noise`` given ``clean`` under the built-in SIDD simulator's marginal.

    ``noise``/``clean``: [N, 4, h, w] (or [4, h, w] with scalar camera/ISO); ``camera``/``iso`` scalars or
    one per sample [N]. See the module docstring for the model and its approximations.
    """
    n_arr, y_arr = _np(noise), _np(clean)
    if n_arr.shape != y_arr.shape:
        raise InputError(
            f"noise {n_arr.shape} and clean {y_arr.shape} must have the same shape.", "Pass matching arrays."
        )
    squeeze = np.ndim(camera) == 0 and np.ndim(iso) == 0 and n_arr.ndim == 3
    if squeeze:
        n_arr, y_arr = n_arr[None], y_arr[None]
    batch = n_arr.shape[0]
    cams = np.broadcast_to(
        np.asarray([camera_index(c) for c in np.atleast_1d(_as_list(camera))], dtype=np.int64), (batch,)
    )
    isos = np.broadcast_to(np.asarray(np.atleast_1d(_as_list(iso)), dtype=np.int64), (batch,))
    out = np.empty(n_arr.shape)
    for cam_i, iso_v in sorted(set(zip(cams.tolist(), isos.tolist()))):
        sel = (cams == cam_i) & (isos == iso_v)
        out[sel] = sensor_log_prob(n_arr[sel], y_arr[sel], SensorParams.from_sidd(cam_i, iso_v), SIDD_PHYSICS)
    return out[0] if squeeze else out


def simulator_nll_floor(
    noise: np.ndarray | torch.Tensor,
    clean: np.ndarray | torch.Tensor,
    camera: str | int | Sequence[int] | np.ndarray | torch.Tensor,
    iso: int | Sequence[int] | np.ndarray | torch.Tensor,
) -> float:
    """Mean NLL (nats/dim) of simulated ``noise`` under the simulator's per-pixel marginal density.

    An estimate of the best NLL a noise model can reach on this data (an upper bound on the true joint
    entropy, since row correlation is ignored; see the module docstring).
    """
    return float(-np.mean(simulator_log_prob(noise, clean, camera, iso)))
