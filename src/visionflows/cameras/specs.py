"""Sensor constants of the five SIDD phones used by the camera simulator (reference ``noiseflow.md`` §7, §11, §13).

Sources of every number:

- System gain K and read variance: IP, S6, GP calibrated values of ``zhangyi-3/Noise-Synthesis@0b8715b``
  (quoted in noiseflow.md §13; "read" treated as a variance). Only end-point read values are quoted, so read
  variance is interpolated log-linearly in ISO between them (our assumption). N6 and G4: K = beta1 and read =
  beta2 of the metadata NLF (``cam_iso_nlf_all.txt``, §11).
- Row noise σ_row = 0.16 · σ_read (ELD/LED Sony A7S2 fit, §13). PRNU std 0.7 % (§13 gives 0.5-1 %, unverified).
- Black/white level and bit depth: IP 528/4095 (12-bit), S6 0/1023, N6 64/1023 (10-bit) from the real SIDD
  metadata (§7). GP and G4 levels are unknown; we assume 10-bit 64/1023 like N6.
- CFA: IP RGGB, S6 GRBG, N6/GP/G4 BGGR (§7). AsShotNeutral: S6/N6/IP examples of §13; GP/G4 use their mean.
- ColorMatrix (XYZ->camera): ``ColorMatrix2`` of the real S6, N6 and IP metadata files in
  ``shared/data/sidd_metadata`` (numbers read from those files); GP/G4 use the mean of the three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visionflows.cameras.sidd import CAMERAS, NLF_TABLE, camera_name
from visionflows.errors import InputError

__all__ = [
    "RGB2XYZ",
    "CameraSpec",
    "CAMERA_SPECS",
    "GENERIC_COLOR_MATRIX",
    "GENERIC_AS_SHOT_NEUTRAL",
    "SYSTEM_GAIN",
    "READ_VARIANCE_RANGE",
    "PRNU_STD",
    "ROW_TO_READ_STD",
    "noise_params",
]

#: sRGB (linear, D65) -> CIE XYZ (IEC 61966-2-1).
RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
# ColorMatrix2 (XYZ -> camera, row-major) read from the real SIDD metadata in shared/data/sidd_metadata.
_CM_S6 = np.array([1.23828125, -0.44433594, -0.27832031, -0.45019531, 1.46972656, 0.06933594,
                   -0.08984375, 0.29199219, 0.61328125]).reshape(3, 3)  # fmt: skip
_CM_N6 = np.array([1.1875, -0.4140625, -0.25, -0.4609375, 1.5, 0.015625,
                   -0.046875, 0.2109375, 0.59375]).reshape(3, 3)  # fmt: skip
_CM_IP = np.array([0.7418, -0.2398, -0.061, -0.5006, 1.2972, 0.2248, -0.1074, 0.1419, 0.59]).reshape(3, 3)
#: Mean ColorMatrix2 of the three real SIDD files: the colour matrix of a camera we have no metadata for.
GENERIC_COLOR_MATRIX = (_CM_S6 + _CM_N6 + _CM_IP) / 3.0
#: Mean of the S6/N6/IP AsShotNeutral examples (noiseflow.md §13).
GENERIC_AS_SHOT_NEUTRAL = (0.584, 1.0, 0.479)


@dataclass(frozen=True)
class CameraSpec:
    """Fixed sensor constants of one camera (sources in the module docstring).

    ``cfa``: 2×2 pattern in DNG orientation, row-major, 0 = R, 1 = G, 2 = B. Levels in DN.
    ``color_matrix``: XYZ -> camera [3, 3]. ``as_shot_neutral``: camera RGB of a neutral grey.
    """

    code: str
    cfa: tuple[int, int, int, int]
    black: int
    white: int
    bits: int
    as_shot_neutral: tuple[float, float, float]
    color_matrix: np.ndarray

    @property
    def levels(self) -> int:
        """Number of quantisation steps between black and white (step = 1 / levels)."""
        return self.white - self.black

    @property
    def packed_colors(self) -> tuple[int, int, int, int]:
        """Colour of each packed channel (SIDD packing of the h5py-transposed array, noiseflow.md §7)."""
        p00, p01, p10, p11 = self.cfa
        return (p00, p10, p11, p01)

    @property
    def rgb2cam(self) -> np.ndarray:
        """Linear sRGB -> camera RGB, rows normalised to sum 1 (Brooks et al. 2019)."""
        m = self.color_matrix @ RGB2XYZ
        return m / m.sum(axis=1, keepdims=True)


CAMERA_SPECS: dict[str, CameraSpec] = {
    "IP": CameraSpec("IP", (0, 1, 1, 2), 528, 4095, 12, (0.591, 1.0, 0.453), _CM_IP),
    "GP": CameraSpec("GP", (2, 1, 1, 0), 64, 1023, 10, GENERIC_AS_SHOT_NEUTRAL, GENERIC_COLOR_MATRIX),
    "S6": CameraSpec("S6", (1, 0, 2, 1), 0, 1023, 10, (0.553, 1.0, 0.484), _CM_S6),
    "N6": CameraSpec("N6", (2, 1, 1, 0), 64, 1023, 10, (0.609, 1.0, 0.5), _CM_N6),
    "G4": CameraSpec("G4", (2, 1, 1, 0), 64, 1023, 10, GENERIC_AS_SHOT_NEUTRAL, GENERIC_COLOR_MATRIX),
}
assert tuple(CAMERA_SPECS) == CAMERAS  # camera order IP, GP, S6, N6, G4

#: Calibrated system gain K (normalised units per electron) by ISO, noiseflow.md §13
#: [3rd: zhangyi-3/Noise-Synthesis@0b8715b:synthesize.py]. N6/G4 use the NLF beta1 instead.
SYSTEM_GAIN: dict[str, dict[int, float]] = {
    "IP": {100: 9.36e-4, 200: 1.044e-3, 400: 1.165e-3, 800: 1.299e-3, 1600: 1.449e-3, 2000: 1.501e-3},
    "S6": {100: 1.625e-3, 200: 2.562e-3, 400: 4.038e-3, 800: 6.365e-3, 1600: 1.003e-2, 3200: 1.581e-2},
    "GP": {100: 2.47e-4, 200: 4.85e-4, 400: 9.51e-4, 800: 1.866e-3, 1600: 3.661e-3, 3200: 7.181e-3,
           6400: 1.409e-2},
}  # fmt: skip
#: Read variance at the lowest and highest calibrated ISO (same source); interpolated log-linearly in ISO.
READ_VARIANCE_RANGE: dict[str, tuple[tuple[int, float], tuple[int, float]]] = {
    "IP": ((100, 4.7e-7), (2000, 6.8e-7)),
    "S6": ((100, 1.18e-6), (3200, 2.07e-5)),
    "GP": ((100, 1.68e-6), (6400, 5.33e-5)),
}
#: Relative std of the fixed per-pixel gain map (PRNU), noiseflow.md §13 (0.5-1 %, unverified).
PRNU_STD = 0.007
#: Row-noise std / Gaussian read std (ELD/LED Sony A7S2 fit, noiseflow.md §13).
ROW_TO_READ_STD = 0.16


def _loglin(iso: float, points: Sequence[tuple[float, float]]) -> float:
    xs = np.log([p[0] for p in points])
    ys = np.log([p[1] for p in points])
    return float(np.exp(np.interp(math.log(iso), xs, ys)))


def noise_params(camera: str | int, iso: int) -> tuple[float, float]:
    """(K, read variance) of the simulator for ``camera`` at ``iso``, normalised units.

    IP/S6/GP: calibrated K, interpolated log-linearly in ISO within the calibrated range; N6/G4: the NLF
    (beta1, beta2) at the exact ISOs of :data:`visionflows.cameras.NLF_TABLE`. InputError otherwise.
    """
    cam = camera_name(camera)
    iso = int(iso)
    if cam in SYSTEM_GAIN:
        table = SYSTEM_GAIN[cam]
        lo, hi = min(table), max(table)
        if not lo <= iso <= hi:
            raise InputError(
                f"Simulator has no calibration for camera {cam} at ISO {iso}.", f"Use an ISO in [{lo}, {hi}]."
            )
        k = _loglin(iso, sorted(table.items()))
        read = _loglin(iso, READ_VARIANCE_RANGE[cam])
        return k, read
    if (cam, iso) not in NLF_TABLE:
        have = sorted(i for c, i in NLF_TABLE if c == cam)
        raise InputError(
            f"Simulator has no noise parameters for camera {cam} at ISO {iso}.",
            f"Use one of ISO {', '.join(map(str, have))} for {cam}.",
        )
    return NLF_TABLE[(cam, iso)]
