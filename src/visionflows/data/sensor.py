"""Sampling the simulated sensor: noisy packed raw from clean packed raw; physics in :mod:`visionflows.cameras.physics`.

:class:`SensorSimulator` works for any :class:`~visionflows.cameras.physics.SensorParams` (a SIDD phone, a
darktable zoo camera) and any :class:`~visionflows.cameras.physics.SensorPhysics`; :class:`CameraSimulator` is
the built-in SIDD simulator (SIDD phones, :data:`~visionflows.cameras.physics.SIDD_PHYSICS`).

Random draws, in this order (so the SIDD simulator gives the same numbers as before the zoo existed): Poisson
counts, read noise (normal, or uniform for Tukey-λ), row noise; then, only for effects that are switched on and
are not fixed patterns, nothing else. Fixed patterns come from the camera's own seed, not from the generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from visionflows.cameras.physics import (
    SIDD_PHYSICS,
    SensorParams,
    SensorPhysics,
    fixed_pattern,
    tukey_quantile,
    tukey_variance,
)
from visionflows.cameras.sidd import camera_index, camera_name
from visionflows.cameras.specs import CAMERA_SPECS
from visionflows.errors import InputError

__all__ = ["SensorSimulator", "CameraSimulator"]


def _col(v: tuple[float, ...] | np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64)[:, None, None]


class SensorSimulator:
    """Noisy raw for one camera at one ISO: ``params`` (noise parameters), ``physics`` (effects), ``seed``
    (default seed of :meth:`simulate` when no generator is passed)."""

    def __init__(self, params: SensorParams, physics: SensorPhysics = SIDD_PHYSICS, seed: int = 0) -> None:
        self.params, self.physics, self.seed = params, physics, int(seed)

    def __repr__(self) -> str:
        p = self.params
        return (f"SensorSimulator({p.name}, ISO {p.iso}: K={np.round(p.gain, 8).tolist()}, "
                f"read var={np.round(p.read_var, 10).tolist()}, {p.black}/{p.white}; {self.physics.describe()})")

    def simulate(self, clean_packed: np.ndarray | torch.Tensor, generator: np.random.Generator | int | None = None,
                 origin: tuple[int, int] = (0, 0)) -> np.ndarray | torch.Tensor:
        """Noisy packed raw for clean packed raw ``[..., 4, h, w]`` in [0, 1] (same type, float32).

        ``origin``: packed (row, column) of the patch on the sensor, where the fixed-pattern maps start. Sensor
        rows are columns of the packed (h5py-transposed) frame: packed column j of channels 0 and 3 is sensor
        row 2j, of channels 1 and 2 sensor row 2j + 1; each row gets one row-noise value.
        """
        is_torch = isinstance(clean_packed, torch.Tensor)
        x = clean_packed.detach().cpu().double().numpy() if is_torch else np.asarray(clean_packed, np.float64)
        if x.ndim < 3 or x.shape[-3] != 4:
            raise InputError(
                f"clean_packed must be [..., 4, h, w], got shape {tuple(x.shape)}.", "Pack the Bayer image first."
            )
        if not np.all(np.isfinite(x)):
            raise InputError("clean_packed contains NaN or Inf.", "Pass finite values in [0, 1].")
        rng = (
            generator
            if isinstance(generator, np.random.Generator)
            else np.random.default_rng(self.seed if generator is None else generator)
        )
        p, ph = self.params, self.physics
        h, w = x.shape[-2:]
        x = np.clip(x, 0.0, 1.0)
        if ph.prnu > 0:
            x = x * fixed_pattern(p, "prnu", ph.prnu, h, w, origin)
        k = _col(p.gain) if len(set(p.gain)) > 1 else p.gain[0]
        read_var = _col(p.read_var) if len(set(p.read_var)) > 1 else p.read_var[0]
        read_sd = np.sqrt(read_var)
        s = k * rng.poisson(x / k)
        if ph.read_noise == "gaussian":
            s += read_sd * rng.standard_normal(x.shape)
        else:
            u = rng.random(x.shape)
            u = np.clip(u, 1e-12, 1 - 1e-12)
            s += read_sd / math.sqrt(tukey_variance(ph.tukey_lambda)) * tukey_quantile(u, ph.tukey_lambda)
        if ph.row > 0:
            rows = rng.standard_normal((*x.shape[:-3], 1, 2 * w))
            row_even, row_odd = rows[..., 0::2], rows[..., 1::2]  # [..., 1, w]
            if np.ndim(read_var) == 0:
                sd = math.sqrt(ph.row**2 * read_var)
                s[..., (0, 3), :, :] += sd * row_even[..., None, :]
                s[..., (1, 2), :, :] += sd * row_odd[..., None, :]
            else:  # one row value, scaled by each channel's read std
                sd = np.sqrt(ph.row**2 * read_var[:, 0, 0])
                s[..., (0, 3), :, :] += sd[[0, 3], None, None] * row_even[..., None, :]
                s[..., (1, 2), :, :] += sd[[1, 2], None, None] * row_odd[..., None, :]
        sd4 = np.broadcast_to(np.sqrt(np.asarray(p.read_var, np.float64)), (4,))[:, None, None]
        if ph.dsnu > 0:
            s = s + ph.dsnu * sd4 * fixed_pattern(p, "dsnu", 0.0, h, w, origin)
        if ph.hot_pixels > 0:
            pos = fixed_pattern(p, "hot", ph.hot_pixels, h, w, origin)
            lo = np.log(np.minimum(10.0 * sd4, 0.049))
            offset = np.exp(lo + pos * (math.log(0.05) - lo))
            s = s + np.where(pos >= 0, offset, 0.0)
        if ph.black_offset > 0:
            s = s + ph.black_offset * sd4 * fixed_pattern(p, "offset", 0.0, h, w, origin)
        levels = p.levels
        if ph.quantise:
            dn = np.rint(p.black + s * levels)
            if ph.clip:
                dn = np.clip(dn, 0, p.white)
            s = (dn - p.black) / levels
        if ph.clip:
            s = np.clip(s, 0.0, 1.0)
        noisy = s.astype(np.float32)
        return torch.from_numpy(noisy).to(clean_packed.device) if is_torch else noisy


class CameraSimulator(SensorSimulator):
    """The built-in physical raw-noise simulator of one SIDD camera at one ISO.

    Args:
        camera: code or index (IP, GP, S6, N6, G4). iso: ISO (see
            :func:`~visionflows.cameras.specs.noise_params`). seed: default seed of :meth:`simulate`.
        physics: the effects (default :data:`~visionflows.cameras.physics.SIDD_PHYSICS`).

    Attributes ``gain`` (K), ``read_var``, ``row_var`` (scalars, normalised units) and ``spec``
    (:class:`~visionflows.cameras.specs.CameraSpec`).
    """

    def __init__(self, camera: str | int, iso: int, seed: int = 0, physics: SensorPhysics = SIDD_PHYSICS) -> None:
        self.camera = camera_name(camera)
        self.camera_index = camera_index(camera)
        self.iso = int(iso)
        self.spec = CAMERA_SPECS[self.camera]
        super().__init__(SensorParams.from_sidd(self.camera, self.iso), physics, seed)
        self.gain, self.read_var = self.params.gain[0], self.params.read_var[0]
        self.row_var = (physics.row**2) * self.read_var

    def __repr__(self) -> str:
        return (
            f"CameraSimulator({self.camera}, ISO {self.iso}: K={self.gain:.3g}, read var={self.read_var:.3g}, "
            f"row var={self.row_var:.3g}, {self.spec.bits}-bit {self.spec.black}/{self.spec.white})"
        )

    def log_prob(self, noise: np.ndarray | torch.Tensor, clean: np.ndarray | torch.Tensor) -> np.ndarray:
        """Per-value log density (nats) of the per-pixel marginal model; see
        :func:`visionflows.noise.simulator_density.simulator_log_prob`."""
        from visionflows.noise.simulator_density import simulator_log_prob  # the density lives with the models

        return simulator_log_prob(noise, clean, self.camera, self.iso)
