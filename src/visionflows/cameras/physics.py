"""Sensor physics of the camera simulator: per-(camera, ISO) parameters and the effects beyond Poisson-Gaussian.

A simulated raw value, in normalised packed-Bayer units (0 = black level, 1 = white level), per packed channel c:

``s = K_c · Poisson(g · y / K_c) + r + ρ + d + h + o``, then quantised to the sensor's DN grid and clipped,

with every term but the Poisson one switchable in :class:`SensorPhysics` (sources: reference ``noiseflow.md``
§13 unless stated; magnitudes were fixed before any model was trained on them, not tuned):

============  =============================================================  ========================================
term          what                                                           magnitude (default when switched on)
============  =============================================================  ========================================
``K_c``       shot noise: system gain (normalised units per electron)        per camera/ISO (:class:`SensorParams`)
``r``         read noise: Gaussian ``N(0, σ²_read)``, or Tukey-λ with the    ``λ = -0.1`` (heavy tails; the ELD/LED
              same variance (``read_noise="tukey"``)                         Sony A7S2 fit spans λ ∈ [-0.14, 0.13])
``ρ``         row / banding noise: one ``N(0, σ²_row)`` per sensor row       ``σ_row = 0.16·σ_read`` (ELD/LED A7S2)
``g``         PRNU: fixed per-pixel gain map ``1 + N(0, p²)``                ``p = 0.7 %`` (§13: 0.5-1 %, unverified)
``d``         DSNU: fixed per-pixel dark offset map ``N(0, (k·σ_read)²)``    ``k = 0.3`` [our choice, unverified]
``h``         hot pixels: fixed pixels with a large dark offset,             fraction 0.48 % (the real SIDD defect
              log-uniform in ``[10·σ_read, 0.05]``                           mask), offsets [our choice, unverified]
``o``         black-level offset: the true dark level differs from the       ``0.5·σ_read`` per channel, random sign
              recorded one by a fixed per-channel amount                     [our choice, unverified]
quantise      round to the sensor's DN grid, step ``1 / (white - black)``    the camera's bit depth
clip          ``DN ∈ [0, white]`` then normalised values clipped to [0, 1]   SIDD's ``clip(noisy)`` (§7)
============  =============================================================  ========================================

Fixed-pattern maps (PRNU, DSNU, hot pixels, black offset) are drawn once per camera from its
:attr:`SensorParams.pattern_seed`, as ``[4, 256, 256]`` packed tiles repeated over the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cache

import numpy as np

from visionflows.cameras.sidd import camera_index, camera_name
from visionflows.cameras.specs import CAMERA_SPECS, PRNU_STD, ROW_TO_READ_STD, noise_params
from visionflows.errors import ConfigError

__all__ = [
    "TUKEY_LAMBDA",
    "DSNU_TO_READ_STD",
    "HOT_PIXEL_FRACTION",
    "BLACK_OFFSET_TO_READ_STD",
    "SensorParams",
    "SensorPhysics",
    "SIDD_PHYSICS",
    "POISSON_GAUSSIAN",
    "EFFECTS",
    "physics_from_names",
    "tukey_variance",
    "tukey_quantile",
    "fixed_pattern",
]

#: Tukey-λ shape of the heavy-tailed read noise (inside the ELD/LED Sony A7S2 range [-0.14, 0.13], §13).
TUKEY_LAMBDA = -0.1
#: DSNU std / Gaussian read std [our choice, unverified].
DSNU_TO_READ_STD = 0.3
#: Fraction of defective pixels of the real SIDD mask ``DefectivePixelsMask.mat`` (59 358 of 3044 × 4048).
HOT_PIXEL_FRACTION = 59358 / (3044 * 4048)
#: Black-level offset / Gaussian read std [our choice, unverified].
BLACK_OFFSET_TO_READ_STD = 0.5
_MAP = 256  # side of the packed fixed-pattern tiles


@dataclass(frozen=True)
class SensorParams:
    """Poisson-Gaussian parameters of one camera at one ISO, per packed channel, in normalised units.

    ``gain``: K_c (variance per unit of signal); ``read_var``: σ²_read,c; ``black``/``white``: levels in DN;
    ``pattern_seed``: seed entropy of the camera's fixed-pattern maps. The NLF of these parameters is
    ``var = K_c·y + σ²_read,c`` (:meth:`nlf`).
    """

    name: str
    iso: int
    gain: tuple[float, float, float, float]
    read_var: tuple[float, float, float, float]
    black: int
    white: int
    pattern_seed: tuple[int, ...]

    @classmethod
    def from_sidd(cls, camera: str | int, iso: int) -> SensorParams:
        """The built-in simulator's parameters of a SIDD phone (:func:`~visionflows.cameras.specs.noise_params`)."""
        cam = camera_name(camera)
        k, read = noise_params(cam, iso)
        spec = CAMERA_SPECS[cam]
        return cls(cam, int(iso), (k,) * 4, (read,) * 4, spec.black, spec.white, (0x5EED, camera_index(cam)))

    @property
    def levels(self) -> int:
        return self.white - self.black

    def nlf(self) -> np.ndarray:
        """``[4, 2]`` float64: (K_c, σ²_read,c) per packed channel (the Poisson-Gaussian NLF)."""
        return np.stack([np.asarray(self.gain, np.float64), np.asarray(self.read_var, np.float64)], axis=1)


@dataclass(frozen=True)
class SensorPhysics:
    """Which effects beyond Poisson-Gaussian the simulator adds (module docstring: what, sources, magnitudes).

    ``read_noise``: ``"gaussian"`` or ``"tukey"`` (Tukey-λ of the same variance, shape ``tukey_lambda``);
    ``row``, ``dsnu``, ``black_offset``: stds relative to σ_read (0 = off); ``prnu``: relative gain std;
    ``hot_pixels``: fraction of pixels; ``quantise``/``clip``: the sensor's DN grid and range.
    """

    read_noise: str = "gaussian"
    tukey_lambda: float = TUKEY_LAMBDA
    row: float = ROW_TO_READ_STD
    prnu: float = PRNU_STD
    dsnu: float = 0.0
    hot_pixels: float = 0.0
    black_offset: float = 0.0
    quantise: bool = True
    clip: bool = True

    def __post_init__(self) -> None:
        if self.read_noise not in ("gaussian", "tukey"):
            raise ConfigError(f"unknown read noise {self.read_noise!r}.", "use 'gaussian' or 'tukey'.")
        if not -0.5 < self.tukey_lambda < 1.0:
            raise ConfigError(f"tukey_lambda {self.tukey_lambda} is outside (-0.5, 1).",
                              "use a shape with finite variance, e.g. -0.1 (heavy tails) … 0.14 (near Gaussian).")
        for name in ("row", "prnu", "dsnu", "black_offset"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {v}.", "use 0 to switch it off.")
        if not 0 <= self.hot_pixels < 0.5:
            raise ConfigError(f"hot_pixels must be a fraction in [0, 0.5), got {self.hot_pixels}.",
                              f"e.g. {HOT_PIXEL_FRACTION:.4f} (the SIDD defect mask).")

    @property
    def tractable(self) -> bool:
        """Whether :func:`~visionflows.noise.simulator_density.sensor_log_prob` is this model's exact per-pixel
        marginal: Gaussian read noise and no hot pixels (DSNU, PRNU and row noise enter as Gaussian variance)."""
        return self.read_noise == "gaussian" and self.hot_pixels == 0

    def describe(self) -> str:
        """A short label, e.g. ``'poisson-gaussian + tukey + row'``."""
        on = [name for name, p in EFFECTS.items() if name != "poisson-gaussian" and _has(self, p)]
        return " + ".join(["poisson-gaussian", *on])


def _has(physics: SensorPhysics, effect: SensorPhysics) -> bool:
    """Whether ``physics`` has every setting in which ``effect`` differs from :data:`POISSON_GAUSSIAN`."""
    diff = [f.name for f in fields(SensorPhysics) if getattr(effect, f.name) != getattr(POISSON_GAUSSIAN, f.name)]
    return bool(diff) and all(getattr(physics, n) == getattr(effect, n) for n in diff)


#: The built-in SIDD simulator: Poisson-Gaussian + row noise + PRNU + quantisation + clipping.
SIDD_PHYSICS = SensorPhysics()
#: Poisson shot noise and Gaussian read noise only (continuous values, no clipping).
POISSON_GAUSSIAN = SensorPhysics(row=0.0, prnu=0.0, quantise=False, clip=False)
#: One effect added to Poisson-Gaussian, by name (``fpn`` = PRNU + DSNU + hot pixels).
EFFECTS: dict[str, SensorPhysics] = {
    "poisson-gaussian": POISSON_GAUSSIAN,
    "tukey": replace(POISSON_GAUSSIAN, read_noise="tukey"),
    "row": replace(POISSON_GAUSSIAN, row=ROW_TO_READ_STD),
    "fpn": replace(POISSON_GAUSSIAN, prnu=PRNU_STD, dsnu=DSNU_TO_READ_STD, hot_pixels=HOT_PIXEL_FRACTION),
    "quantise": replace(POISSON_GAUSSIAN, quantise=True),
    "black-offset": replace(POISSON_GAUSSIAN, black_offset=BLACK_OFFSET_TO_READ_STD),
    "clip": replace(POISSON_GAUSSIAN, clip=True),
}


def physics_from_names(names: str | list[str]) -> SensorPhysics:
    """Poisson-Gaussian plus the named effects (``"tukey,row,fpn,quantise,black-offset,clip"``, ``"all"``,
    ``"sidd"`` for the built-in simulator, ``"poisson-gaussian"`` for none)."""
    items = [n.strip().lower() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if items == ["sidd"]:
        return SIDD_PHYSICS
    if items == ["all"]:
        items = [n for n in EFFECTS if n != "poisson-gaussian"]
    unknown = [n for n in items if n not in EFFECTS]
    if unknown or not items:
        raise ConfigError(f"unknown sensor effect(s) {unknown or names!r}.",
                          f"use a comma-separated list of {', '.join(EFFECTS)}, or 'all' / 'sidd'.")
    out = POISSON_GAUSSIAN
    for n in items:
        eff = EFFECTS[n]
        changes = {f.name: getattr(eff, f.name) for f in fields(SensorPhysics)
                   if getattr(eff, f.name) != getattr(POISSON_GAUSSIAN, f.name)}
        out = replace(out, **changes)
    return out


def tukey_variance(lam: float) -> float:
    """Variance of the standard Tukey-λ distribution (quantile ``(u^λ − (1−u)^λ)/λ``), λ > −1/2."""
    if abs(lam) < 1e-9:
        return math.pi**2 / 3.0  # logistic
    return 2.0 / lam**2 * (1.0 / (1.0 + 2.0 * lam) - math.exp(2 * math.lgamma(lam + 1) - math.lgamma(2 * lam + 2)))


def tukey_quantile(u: np.ndarray, lam: float) -> np.ndarray:
    """Quantile function of the standard Tukey-λ distribution at ``u`` in (0, 1)."""
    if abs(lam) < 1e-9:
        return np.log(u) - np.log1p(-u)
    return (u**lam - (1.0 - u) ** lam) / lam


@cache
def _pattern_tile(seed: tuple[int, ...], kind: str, magnitude: float) -> np.ndarray:
    if kind == "prnu":  # the SIDD simulator's original map: same seed, same draws
        rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
        return (1.0 + magnitude * rng.standard_normal((4, _MAP, _MAP))).astype(np.float64)
    tag = {"dsnu": 1, "hot": 2, "offset": 3}[kind]
    rng = np.random.default_rng(np.random.SeedSequence([*seed, tag]))
    if kind == "dsnu":
        return rng.standard_normal((4, _MAP, _MAP))
    if kind == "offset":
        return np.sign(rng.standard_normal(4))[:, None, None] * np.ones((4, 1, 1))
    hot = rng.random((4, _MAP, _MAP)) < magnitude
    return np.where(hot, rng.random((4, _MAP, _MAP)), -1.0)  # -1: not hot; else the log-uniform position in [0, 1)


def fixed_pattern(params: SensorParams, kind: str, magnitude: float, h: int, w: int,
                  origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A fixed-pattern map ``[4, h, w]`` of ``params``' camera, tiled from packed position ``origin``.

    ``kind``: ``"prnu"`` (gain map ``1 + N(0, magnitude²)``), ``"dsnu"`` (unit normal map), ``"hot"`` (−1 or
    a uniform position of the pixel's offset; ``magnitude`` = fraction), ``"offset"`` (±1 per channel).
    """
    base = _pattern_tile(tuple(params.pattern_seed), kind, float(magnitude))
    if base.shape[1] == 1:
        return np.broadcast_to(base, (4, h, w))
    r0, c0 = origin[0] % _MAP, origin[1] % _MAP
    reps = (1, -(-(h + r0) // _MAP), -(-(w + c0) // _MAP))
    return np.tile(base, reps)[:, r0 : r0 + h, c0 : c0 + w]
