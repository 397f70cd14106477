"""Built-in camera simulator: SIDD-like packed raw (clean, noisy) pairs from real bundled photos.

Pipeline (all numbers in normalised raw units in [0, 1] unless stated):

1. **Unprocessing** sRGB -> linear camera raw (Brooks et al., "Unprocessing Images for Learned Raw
   Denoising", CVPR 2019): inverse smoothstep tone curve ``x = 0.5 - sin(asin(1 - 2y) / 3)``, inverse gamma
   2.2, inverse colour correction with ``rgb2cam = normalise_rows(ColorMatrix · M_sRGB->XYZ)``, inverse white
   balance (multiply R and B by the camera's AsShotNeutral), a random exposure scale, then a Bayer mosaic with
   the camera's CFA and packing as SIDD does (the mosaic is built in the h5py-transposed frame, so packed
   channel colours are IP [R,G,B,G], S6 [G,B,G,R], GP/N6/G4 [B,G,R,G]; ``docs/noiseflow.md`` §7).
2. **Noise** (a physical model, *not* the Gaussian NLF; ``docs/noiseflow.md`` §13):
   ``s = K · Poisson(g · y / K) + N(0, σ²_read) + N_row(0, σ²_row)``, then the sensor value
   ``DN = clip(round(black + s · (white - black)), 0, white)`` and ``noisy = clip((DN - black) / (white -
   black), 0, 1)``. ``g`` is a fixed per-camera PRNU gain map, ``N_row`` is shared by one sensor row.

Parameters and their sources (see :data:`CAMERA_SPECS`, :func:`noise_params`):

- System gain K and read variance: IP, S6, GP calibrated values of ``zhangyi-3/Noise-Synthesis@0b8715b``
  (quoted in noiseflow.md §13; "read" treated as a variance). Only end-point read values are quoted, so read
  variance is interpolated log-linearly in ISO between them (our assumption). N6 and G4: K = beta1 and read =
  beta2 of the metadata NLF (``cam_iso_nlf_all.txt``, §11).
- Row noise σ_row = 0.16 · σ_read (ELD/LED Sony A7S2 fit, §13). PRNU std 0.7 % (§13 gives 0.5-1 %,
  unverified), fixed map per camera (seeded by the camera index).
- Black/white level and bit depth: IP 528/4095 (12-bit), S6 0/1023, N6 64/1023 (10-bit) from the real SIDD
  metadata (§7). GP and G4 levels are unknown; we assume 10-bit 64/1023 like N6.
- CFA: IP RGGB, S6 GRBG, N6/GP/G4 BGGR (§7). AsShotNeutral: S6/N6/IP examples of §13; GP/G4 use their mean.
- ColorMatrix (XYZ->camera): ``ColorMatrix2`` of the real S6, N6 and IP metadata files in
  ``shared/data/sidd_metadata`` (numbers read from those files); GP/G4 use the mean of the three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from scipy.special import gammaln, ndtr
from torch.utils.data import Dataset

from visionflows.cameras import CAMERAS, NLF_TABLE, TRAIN_PAIRS, camera_index, camera_name
from visionflows.data.images import BUILTIN_PHOTOS, builtin_photo
from visionflows.errors import InputError

__all__ = [
    "CameraSpec",
    "CAMERA_SPECS",
    "SYSTEM_GAIN",
    "READ_VARIANCE_RANGE",
    "PRNU_STD",
    "ROW_TO_READ_STD",
    "PHOTOS",
    "TEST_PHOTOS",
    "noise_params",
    "load_photo",
    "unprocess",
    "mosaic_packed",
    "CameraSimulator",
    "simulator_log_prob",
    "simulator_nll_floor",
    "SimulatedSidd",
    "make_simulated_dataset",
]

#: sRGB (linear, D65) -> CIE XYZ (IEC 61966-2-1).
_RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
# ColorMatrix2 (XYZ -> camera, row-major) read from the real SIDD metadata in shared/data/sidd_metadata.
_CM_S6 = np.array([1.23828125, -0.44433594, -0.27832031, -0.45019531, 1.46972656, 0.06933594,
                   -0.08984375, 0.29199219, 0.61328125]).reshape(3, 3)  # fmt: skip
_CM_N6 = np.array([1.1875, -0.4140625, -0.25, -0.4609375, 1.5, 0.015625,
                   -0.046875, 0.2109375, 0.59375]).reshape(3, 3)  # fmt: skip
_CM_IP = np.array([0.7418, -0.2398, -0.061, -0.5006, 1.2972, 0.2248, -0.1074, 0.1419, 0.59]).reshape(3, 3)
_CM_MEAN = (_CM_S6 + _CM_N6 + _CM_IP) / 3.0
_WB_MEAN = (0.584, 1.0, 0.479)  # mean of the S6/N6/IP AsShotNeutral examples


@dataclass(frozen=True)
class CameraSpec:
    """Fixed sensor constants of one SIDD phone (sources in the module docstring).

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
        m = self.color_matrix @ _RGB2XYZ
        return m / m.sum(axis=1, keepdims=True)


CAMERA_SPECS: dict[str, CameraSpec] = {
    "IP": CameraSpec("IP", (0, 1, 1, 2), 528, 4095, 12, (0.591, 1.0, 0.453), _CM_IP),
    "GP": CameraSpec("GP", (2, 1, 1, 0), 64, 1023, 10, _WB_MEAN, _CM_MEAN),
    "S6": CameraSpec("S6", (1, 0, 2, 1), 0, 1023, 10, (0.553, 1.0, 0.484), _CM_S6),
    "N6": CameraSpec("N6", (2, 1, 1, 0), 64, 1023, 10, (0.609, 1.0, 0.5), _CM_N6),
    "G4": CameraSpec("G4", (2, 1, 1, 0), 64, 1023, 10, _WB_MEAN, _CM_MEAN),
}

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
_PRNU_MAP_SIZE = 256  # packed PRNU map [4, 256, 256] per camera, tiled for larger images

#: Source photos bundled with scikit-image (the same set as the Wavelet Flow built-in data).
PHOTOS: tuple[str, ...] = BUILTIN_PHOTOS
#: Photos reserved for the held-out test split (scene-disjoint; the motorcycle stereo pair stays together).
TEST_PHOTOS: tuple[str, ...] = ("coffee", "chelsea", "immunohistochemistry")


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


@cache
def _prnu_map(cam_idx: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([0x5EED, cam_idx]))
    size = (4, _PRNU_MAP_SIZE, _PRNU_MAP_SIZE)
    return (1.0 + PRNU_STD * rng.standard_normal(size)).astype(np.float64)


def _prnu(cam_idx: int, h: int, w: int) -> np.ndarray:
    base = _prnu_map(cam_idx)
    reps = (1, -(-h // base.shape[1]), -(-w // base.shape[2]))
    return np.tile(base, reps)[:, :h, :w]


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float64 sRGB [H, W, 3] in [0, 1]."""
    if name not in PHOTOS:
        raise InputError(f"Unknown simulator photo {name!r}.", f"Use one of {', '.join(PHOTOS)}.")
    return builtin_photo(name, 3).permute(1, 2, 0).numpy().astype(np.float64) / 255.0


def unprocess(srgb: np.ndarray, spec: CameraSpec, exposure: float = 1.0) -> np.ndarray:
    """sRGB [H, W, 3] in [0, 1] -> linear camera RGB [H, W, 3] in [0, 1] (Brooks et al. 2019).

    Inverse smoothstep tone curve, inverse gamma 2.2, inverse colour correction, inverse white balance
    (multiply by AsShotNeutral), times ``exposure``; clipped to [0, 1].
    """
    y = np.clip(srgb, 0.0, 1.0)
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)  # inverse smoothstep
    lin = np.maximum(x, 1e-8) ** 2.2
    cam = lin @ spec.rgb2cam.T
    cam = cam * np.asarray(spec.as_shot_neutral) * exposure
    return np.clip(cam, 0.0, 1.0)


def mosaic_packed(cam_rgb: np.ndarray, spec: CameraSpec) -> np.ndarray:
    """Camera RGB [H, W, 3] (H, W even) -> packed Bayer [4, W/2, H/2] in SIDD's h5py-transposed frame."""
    t = np.transpose(cam_rgb, (1, 0, 2))  # h5py returns the MATLAB (sensor) array transposed
    offsets = ((0, 0), (0, 1), (1, 1), (1, 0))
    colors = spec.packed_colors
    return np.stack([t[dy::2, dx::2, colors[c]] for c, (dy, dx) in enumerate(offsets)], axis=0)


class CameraSimulator:
    """Physical raw-noise simulator of one SIDD camera at one ISO (see the module docstring).

    Args:
        camera: code or index (IP, GP, S6, N6, G4). iso: ISO (see :func:`noise_params`).
        seed: default seed of :meth:`simulate` when no generator is passed.
    """

    def __init__(self, camera: str | int, iso: int, seed: int = 0) -> None:
        self.camera = camera_name(camera)
        self.camera_index = camera_index(camera)
        self.iso = int(iso)
        self.spec = CAMERA_SPECS[self.camera]
        self.gain, self.read_var = noise_params(self.camera, self.iso)
        self.row_var = (ROW_TO_READ_STD**2) * self.read_var
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"CameraSimulator({self.camera}, ISO {self.iso}: K={self.gain:.3g}, read var={self.read_var:.3g}, "
            f"row var={self.row_var:.3g}, {self.spec.bits}-bit {self.spec.black}/{self.spec.white})"
        )

    def simulate(
        self, clean_packed: np.ndarray | torch.Tensor, generator: np.random.Generator | int | None = None
    ) -> np.ndarray | torch.Tensor:
        """Noisy packed raw for clean packed raw [..., 4, h, w] in [0, 1] (same type, float32).

        Sensor rows are columns of the packed (transposed) frame: packed column j of channels 0 and 3 is
        sensor row 2j, of channels 1 and 2 sensor row 2j + 1; each row gets one row-noise value.
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
        h, w = x.shape[-2:]
        x = np.clip(x, 0.0, 1.0) * _prnu(self.camera_index, h, w)
        k = self.gain
        s = k * rng.poisson(x / k)
        s += math.sqrt(self.read_var) * rng.standard_normal(x.shape)
        rows = math.sqrt(self.row_var) * rng.standard_normal((*x.shape[:-3], 1, 2 * w))
        row_even, row_odd = rows[..., 0::2], rows[..., 1::2]  # [..., 1, w]
        s[..., (0, 3), :, :] += row_even[..., None, :]
        s[..., (1, 2), :, :] += row_odd[..., None, :]
        sp = self.spec
        dn = np.clip(np.rint(sp.black + s * sp.levels), 0, sp.white)
        noisy = np.clip((dn - sp.black) / sp.levels, 0.0, 1.0).astype(np.float32)
        return torch.from_numpy(noisy).to(clean_packed.device) if is_torch else noisy

    def log_prob(self, noise: np.ndarray | torch.Tensor, clean: np.ndarray | torch.Tensor) -> np.ndarray:
        """Per-value log density (nats) of the per-pixel marginal model; see :func:`simulator_log_prob`."""
        return simulator_log_prob(noise, clean, self.camera, self.iso)


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _bin_log_mass(
    m: np.ndarray, lam: np.ndarray, k: float, var: np.ndarray, q: float, m_max: int, max_elems: int = 1_000_000
) -> np.ndarray:
    """log P(quantised clipped value = m·q) for s = K·Poisson(lam) + N(0, var), vectorised in chunks.

    Only Poisson counts inside both ±8√λ+8 of λ and ±8σ/K of the level's bin contribute (omitted mass
    < 1e-14), so the sum has a few to a few hundred terms per value.
    """
    c = 8.0
    sd = np.sqrt(var)
    lo = np.where(m <= 0, -np.inf, (m - 0.5) * q)
    hi = np.where(m >= m_max, np.inf, (m + 0.5) * q)
    sq = np.sqrt(lam)
    kstart = np.maximum(np.maximum(0.0, np.floor(lam - c * sq - c)), np.floor((lo - c * sd) / k))
    kend = np.minimum(np.ceil(lam + c * sq + c), np.ceil((hi + c * sd) / k))
    width = np.maximum(kend - kstart + 1, 1).astype(np.int64)
    order = np.argsort(width, kind="stable")
    out = np.empty(m.size)
    i = 0
    while i < m.size:
        step = max(1, max_elems // int(width[order[min(i + 4095, m.size - 1)]]))
        idx = order[i : i + step]
        i += step
        kk = kstart[idx, None] + np.arange(int(width[idx].max()))[None, :]
        lm = lam[idx, None]
        logpmf = kk * np.log(np.maximum(lm, 1e-300)) - lm - gammaln(kk + 1)
        logpmf = np.where(lm > 0, logpmf, np.where(kk == 0, 0.0, -np.inf))
        logpmf = np.where(kk <= kend[idx, None], logpmf, -np.inf)
        mean = k * kk
        s = sd[idx, None]
        zl = (lo[idx, None] - mean) / s
        zh = (hi[idx, None] - mean) / s
        mass = np.where(zl > 0, ndtr(-zl) - ndtr(-zh), ndtr(zh) - ndtr(zl))
        out[idx] = np.log(np.maximum((np.exp(logpmf) * mass).sum(axis=1), 1e-300))
    return out


def simulator_log_prob(
    noise: np.ndarray | torch.Tensor,
    clean: np.ndarray | torch.Tensor,
    camera: str | int | Sequence[int] | np.ndarray | torch.Tensor,
    iso: int | Sequence[int] | np.ndarray | torch.Tensor,
) -> np.ndarray:
    """Log density (nats per value) of ``noise`` given ``clean`` under the simulator's per-pixel marginal.

    ``noise``/``clean``: [N, 4, h, w] (or [4, h, w] with scalar camera/ISO); ``camera``/``iso`` scalars or
    one per sample [N]. Model per value: s = K·Poisson(y/K) + N(0, σ²), σ² = read + row + (PRNU_STD·y)²,
    quantised to the sensor levels and clipped to [0, 1]. The probability mass of the observed level (the
    Poisson sum truncated at ±8√λ+8, error < 1e-12) is divided by the level width 1/(white - black) to give a
    continuous (dequantised) density, comparable with a flow's density on noise = noisy - clean.

    Approximations: row noise is counted as independent per-pixel variance (its marginal is exact, but the
    row correlation is ignored, so the product of marginals *upper-bounds* the true joint NLL), and PRNU is
    folded into the Gaussian variance (exact PRNU would multiply the Poisson rate by a 0.7 % gain).
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
        sim = CameraSimulator(cam_i, iso_v)
        spec = sim.spec
        q = 1.0 / spec.levels
        y = np.clip(y_arr[sel], 0.0, 1.0)
        noisy = y + n_arr[sel]
        m = np.rint(noisy / q)
        off_grid = np.abs(noisy / q - m) > 0.05
        if np.any(off_grid) or np.any(m < 0) or np.any(m > spec.levels):
            raise InputError(
                f"noisy = clean + noise is not on the {spec.levels}-level grid of camera {sim.camera} "
                f"({int(off_grid.sum())} values off grid) or outside [0, 1].",
                "The simulator NLL floor only applies to noise produced by CameraSimulator for this camera.",
            )
        var = sim.read_var + sim.row_var + (PRNU_STD * y) ** 2
        lm = _bin_log_mass(m.ravel(), (y / sim.gain).ravel(), sim.gain, var.ravel(), q, spec.levels)
        out[sel] = lm.reshape(y.shape) - math.log(q)
    return out[0] if squeeze else out


def _as_list(v: object) -> object:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return v


def simulator_nll_floor(
    noise: np.ndarray | torch.Tensor,
    clean: np.ndarray | torch.Tensor,
    camera: str | int | Sequence[int] | np.ndarray | torch.Tensor,
    iso: int | Sequence[int] | np.ndarray | torch.Tensor,
) -> float:
    """Mean NLL (nats/dim) of simulated ``noise`` under the simulator's per-pixel marginal density.

    An estimate of the best NLL a noise model can reach on this data (an upper bound on the true joint
    entropy, since row correlation is ignored; see :func:`simulator_log_prob`).
    """
    return float(-np.mean(simulator_log_prob(noise, clean, camera, iso)))


class SimulatedSidd(Dataset):
    """In-memory simulated SIDD patches. Items: dict(noise, clean [4,p,p] float32, iso, camera, photo).

    Attributes ``clean``, ``noise`` [N,4,p,p] float32, ``iso``, ``camera``, ``photo`` [N] int64 (photo = index
    in :data:`PHOTOS`).
    """

    def __init__(
        self, clean: torch.Tensor, noise: torch.Tensor, iso: torch.Tensor, camera: torch.Tensor, photo: torch.Tensor
    ) -> None:
        self.clean, self.noise, self.iso, self.camera, self.photo = clean, noise, iso, camera, photo

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "noise": self.noise[i],
            "clean": self.clean[i],
            "iso": self.iso[i],
            "camera": self.camera[i],
            "photo": self.photo[i],
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors as a dict (clean, noise, iso, camera, photo)."""
        return {"clean": self.clean, "noise": self.noise, "iso": self.iso, "camera": self.camera, "photo": self.photo}

    def nll_floor(self) -> float:
        """:func:`simulator_nll_floor` of this set (nats/dim)."""
        return simulator_nll_floor(self.noise, self.clean, self.camera, self.iso)


def _make_split(
    n_images: int,
    photos: Sequence[str],
    pairs: Sequence[tuple[str, int]],
    patch: int,
    patches_per_side: int,
    rng: np.random.Generator,
) -> SimulatedSidd:
    crop = 2 * patch * patches_per_side  # RGB crop side; packed side = crop / 2
    cleans, noises, isos, cams, phs = [], [], [], [], []
    images = {name: load_photo(name) for name in photos}
    for i in range(n_images):
        name = photos[i % len(photos)] if i < len(photos) else photos[int(rng.integers(len(photos)))]
        img = images[name]
        cam, iso = pairs[int(rng.integers(len(pairs)))]
        h, w = img.shape[:2]
        side = min(crop, h // 2 * 2, w // 2 * 2)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        rgb = img[top : top + side, left : left + side]
        if rng.random() < 0.5:
            rgb = rgb[:, ::-1]
        rgb = np.rot90(rgb, int(rng.integers(4)))
        spec = CAMERA_SPECS[cam]
        exposure = float(np.exp(rng.uniform(np.log(0.2), 0.0)))  # SIDD scenes are often dim (assumption)
        packed = mosaic_packed(unprocess(rgb, spec, exposure), spec)
        n_side = packed.shape[-1] // patch
        packed = packed[:, : n_side * patch, : n_side * patch]
        sim = CameraSimulator(cam, iso)
        noisy = sim.simulate(packed, rng)
        clean32 = packed.astype(np.float32)
        for arr, out in ((clean32, cleans), (noisy - clean32, noises)):
            t = arr.reshape(4, n_side, patch, n_side, patch).transpose(1, 3, 0, 2, 4).reshape(-1, 4, patch, patch)
            out.append(t)
        n = n_side * n_side
        isos.append(np.full(n, iso))
        cams.append(np.full(n, camera_index(cam)))
        phs.append(np.full(n, PHOTOS.index(name)))
    if not cleans:
        empty = torch.zeros((0, 4, patch, patch))
        z = torch.zeros(0, dtype=torch.int64)
        return SimulatedSidd(empty, empty.clone(), z, z.clone(), z.clone())
    return SimulatedSidd(
        torch.from_numpy(np.concatenate(cleans)),
        torch.from_numpy(np.ascontiguousarray(np.concatenate(noises))),
        torch.from_numpy(np.concatenate(isos).astype(np.int64)),
        torch.from_numpy(np.concatenate(cams).astype(np.int64)),
        torch.from_numpy(np.concatenate(phs).astype(np.int64)),
    )


def make_simulated_dataset(
    n_train_images: int,
    n_test_images: int,
    patch: int = 32,
    cameras: Iterable[str | int] | None = None,
    isos: Iterable[int] | None = None,
    seed: int = 0,
    patches_per_side: int = 4,
    test_photos: Sequence[str] = TEST_PHOTOS,
) -> dict[str, SimulatedSidd]:
    """Simulated SIDD-like train/test sets, split by source photo (scene-disjoint).

    Each simulated "image" is a random crop (random flip/rotation, exposure) of one bundled photo, rendered by
    one (camera, ISO) pair drawn from the 15 official training pairs (``cam_iso_nlf.txt``, noiseflow.md §7),
    optionally filtered by ``cameras``/``isos``; it gives ``patches_per_side``² non-overlapping patches of
    [4, patch, patch]. Photos in ``test_photos`` are used only for test. Deterministic given ``seed``; the
    test set does not depend on ``n_train_images``.

    Returns ``{"train": SimulatedSidd, "test": SimulatedSidd}``.
    """
    if n_train_images < 0 or n_test_images < 0 or patch < 1 or patches_per_side < 1:
        raise InputError(
            f"Invalid simulated dataset size: n_train_images={n_train_images}, n_test_images={n_test_images}, "
            f"patch={patch}, patches_per_side={patches_per_side}.",
            "Use non-negative image counts and positive patch sizes.",
        )
    cam_set = None if cameras is None else {camera_name(c) for c in cameras}
    iso_set = None if isos is None else {int(i) for i in isos}
    pairs = [(c, i) for c, i in TRAIN_PAIRS if (cam_set is None or c in cam_set) and (iso_set is None or i in iso_set)]
    if not pairs:
        raise InputError(
            f"No training (camera, ISO) pair matches cameras={sorted(cam_set or [])} isos={sorted(iso_set or [])}.",
            f"Choose from {', '.join(f'{c}/{i}' for c, i in TRAIN_PAIRS)}.",
        )
    unknown = [p for p in test_photos if p not in PHOTOS]
    if unknown:
        raise InputError(f"Unknown test photos {unknown}.", f"Use names from {', '.join(PHOTOS)}.")
    train_photos = [p for p in PHOTOS if p not in test_photos]
    if not train_photos or not test_photos:
        raise InputError("test_photos must leave at least one photo for each split.", f"Photos: {PHOTOS}.")
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return {
        "train": _make_split(
            n_train_images, train_photos, pairs, patch, patches_per_side, np.random.default_rng(train_seq)
        ),
        "test": _make_split(
            n_test_images, list(test_photos), pairs, patch, patches_per_side, np.random.default_rng(test_seq)
        ),
    }


# Keep the camera tuple referenced for documentation tools (camera order IP, GP, S6, N6, G4).
assert tuple(CAMERA_SPECS) == CAMERAS
