"""SIDD files: scene-folder names, MATLAB v7.3 pixel files and v5 metadata files (``docs/noiseflow.md`` §7).

Facts from the official Noise Flow data pipeline (``BorealisAI/noise_flow@48d1e07:sidd/sidd_utils.py``,
``sidd/raw_utils.py``); no code was copied. h5py returns MATLAB v7.3 arrays transposed (W×H); like the official
code we keep that orientation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionflows.cameras import CAMERAS
from visionflows.errors import DataError

__all__ = ["MAKE_TO_CAMERA", "SceneInfo", "SiddMetadata", "parse_scene_folder", "read_metadata", "read_raw_mat"]

#: EXIF ``Make`` -> camera code (official ``raw_utils.py::get_cam`` order).
MAKE_TO_CAMERA: dict[str, str] = {"apple": "IP", "google": "GP", "samsung": "S6", "motorola": "N6", "lge": "G4"}

_FOLDER_RE = re.compile(r"^(\d{4})_(\d{3})_([A-Za-z0-9]{2})_(\d{5})_(\d{5})_(\d{4})_([LNH])$")
_FOLDER_FIX = (
    "A SIDD scene folder is named like '0052_002_S6_01600_01000_5500_N': instance id (4 digits), scene id "
    "(3), camera (IP/GP/S6/N6/G4), ISO (5), shutter denominator (5), illuminant K (4), brightness L/N/H."
)


@dataclass(frozen=True)
class SceneInfo:
    """Fields of a SIDD scene-instance folder name (noiseflow.md §7).

    ``shutter`` is the 5-digit field as an integer, the exposure-time denominator (01000 = 1/1000 s).
    """

    instance_id: int
    scene_id: int
    camera: str
    iso: int
    shutter: int
    illuminant_k: int
    brightness: str

    @property
    def camera_index(self) -> int:
        """Official camera index (IP=0, GP=1, S6=2, N6=3, G4=4)."""
        return CAMERAS.index(self.camera)

    @property
    def exposure_s(self) -> float:
        """Exposure time in seconds (1 / shutter)."""
        return 1.0 / self.shutter


def parse_scene_folder(name: str | Path) -> SceneInfo:
    """Parse a folder name (or path) like ``0052_002_S6_01600_01000_5500_N``; DataError if malformed.

    Any positive ISO is accepted (SIDD has e.g. 50, 1250, 10000); the camera must be one of :data:`CAMERAS`.
    """
    base = Path(str(name)).name
    m = _FOLDER_RE.match(base)
    if m is None:
        raise DataError(f"Malformed SIDD scene folder name {base!r}.", _FOLDER_FIX)
    inst, scene, cam, iso, shutter, temp, bright = m.groups()
    cam = cam.upper()
    if cam not in CAMERAS:
        raise DataError(
            f"Unknown camera {cam!r} in SIDD scene folder name {base!r}.",
            f"The camera field (characters 10-11) must be one of {', '.join(CAMERAS)}.",
        )
    for label, value in (("ISO", iso), ("shutter", shutter), ("illuminant temperature", temp)):
        if int(value) <= 0:
            raise DataError(f"Invalid {label} {value!r} in SIDD scene folder name {base!r}.", _FOLDER_FIX)
    return SceneInfo(int(inst), int(scene), cam, int(iso), int(shutter), int(temp), bright)


def read_raw_mat(path: str | Path) -> np.ndarray:
    """Read a SIDD MATLAB v7.3 (HDF5) pixel file: the first dataset, float32, NaN -> 0, not clipped.

    Returns the array **as h5py returns it** (the MATLAB array transposed, [W, H]), as the official code does.
    Raises DataError naming the file if it is missing, not HDF5, empty or not 2-D.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise DataError(f"SIDD pixel file not found: {p}.", "Check the dataset root and the file name.")
    try:
        with h5py.File(p, "r") as f:
            keys = [k for k in f.keys() if not k.startswith("#") and isinstance(f[k], h5py.Dataset)]
            if not keys:
                raise DataError(
                    f"SIDD pixel file {p} contains no array.", "Re-download the file; it should hold one matrix."
                )
            arr = np.asarray(f[keys[0]][()], dtype=np.float32)
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError for non-HDF5 / truncated files, others for bad content
        raise DataError(
            f"Cannot read SIDD pixel file {p} as MATLAB v7.3/HDF5 ({type(exc).__name__}: {exc}).",
            "The file is corrupt or not a v7.3 .MAT file; re-download it from the SIDD website.",
        ) from exc
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(
            f"SIDD pixel file {p} holds an array of shape {arr.shape}; a 2-D Bayer image was expected.",
            "Pass a *_NOISY_RAW_*.MAT or *_GT_RAW_*.MAT file.",
        )
    np.nan_to_num(arr, copy=False, nan=0.0)
    return arr


@dataclass
class SiddMetadata:
    """Fields of a SIDD ``*_METADATA_RAW_*.MAT`` file (DNG/EXIF tags, noiseflow.md §7).

    ``nlf_beta1``/``nlf_beta2``: first (S, O) pair of the DNG NoiseProfile (tag 51041), values <= 0 replaced
    by 1e-6 as the official code does; variance = beta1 * y + beta2 in normalised units.
    ``nlf_per_channel``: all (S, O) pairs as stored, shape [n_planes, 2].
    ``cfa_pattern``: tag 33422, 2×2 in DNG/MATLAB orientation, 0 = R, 1 = G, 2 = B.
    Levels are in DN; ``color_matrix1/2`` are XYZ->camera [3, 3]; ``forward_matrix1/2`` may be None.
    """

    camera: str
    iso: int
    nlf_beta1: float
    nlf_beta2: float
    nlf_per_channel: np.ndarray
    cfa_pattern: tuple[int, ...]
    black_level: float
    white_level: float
    as_shot_neutral: np.ndarray
    color_matrix1: np.ndarray | None
    color_matrix2: np.ndarray | None
    forward_matrix1: np.ndarray | None = None
    forward_matrix2: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    make: str = ""
    model: str = ""
    black_level_per_channel: tuple[float, ...] = field(default_factory=tuple)

    @property
    def camera_index(self) -> int:
        """Official camera index (IP=0 … G4=4)."""
        return CAMERAS.index(self.camera)

    @property
    def color_matrix(self) -> np.ndarray | None:
        """ColorMatrix2 if present (D65-ish illuminant in SIDD files), else ColorMatrix1."""
        return self.color_matrix2 if self.color_matrix2 is not None else self.color_matrix1


def _get(struct: Any, name: str) -> Any | None:
    if struct is None or struct.dtype.names is None or name not in struct.dtype.names:
        return None
    value = struct[name]
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    return value


def _unwrap_struct(value: Any) -> Any | None:
    """MATLAB struct (possibly nested in cell/object arrays) -> its first numpy.void record."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.dtype.names is not None:
            return value.flat[0]
        value = value.flat[0]
    return value if isinstance(value, np.void) else None


def _str(value: Any) -> str:
    if value is None:
        return ""
    arr = np.asarray(value).ravel()
    return str(arr[0]).strip() if arr.size else ""


def _nums(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None


def _unknown_tag(struct: Any, tag: int) -> np.ndarray | None:
    tags = _get(struct, "UnknownTags")
    if tags is None:
        return None
    for rec in np.asarray(tags).ravel():
        rec = _unwrap_struct(rec) if not isinstance(rec, np.void) else rec
        if rec is None or rec.dtype.names is None or "ID" not in rec.dtype.names:
            continue
        ids = _nums(rec["ID"])
        if ids is not None and ids.size and int(ids[0]) == tag:
            return _nums(rec["Value"])
    return None


def read_metadata(path: str | Path) -> SiddMetadata:
    """Read a SIDD ``*_METADATA_RAW_*.MAT`` (MATLAB v5) file with scipy.

    Searches ``UnknownTags`` for NoiseProfile (51041) and CFAPattern (33422), also in the first SubIFD
    (iPhone DNGs keep raw size, CFA and levels there); ISO from ``ISOSpeedRatings`` or
    ``DigitalCamera.ISOSpeedRatings``; camera from ``Make``. DataError naming the file on any problem.
    """
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise DataError(f"SIDD metadata file not found: {p}.", "Check the dataset root and the file name.")
    try:
        mat = scipy.io.loadmat(str(p))
    except Exception as exc:
        raise DataError(
            f"Cannot read SIDD metadata file {p} ({type(exc).__name__}: {exc}).",
            "The file is corrupt or not a MATLAB v5 .MAT file; re-download it.",
        ) from exc
    md = _unwrap_struct(mat.get("metadata"))
    if md is None:
        raise DataError(f"SIDD metadata file {p} has no 'metadata' struct.", "Pass a *_METADATA_RAW_*.MAT file.")
    sub = _unwrap_struct(_get(md, "SubIFDs"))
    raw_ifd = sub if sub is not None else md

    def bad(what: str) -> DataError:
        return DataError(f"SIDD metadata file {p} lacks {what}.", "Re-download the file; it may be truncated.")

    make = _str(_get(md, "Make"))
    camera = MAKE_TO_CAMERA.get(make.lower())
    if camera is None:
        raise DataError(
            f"SIDD metadata file {p}: unknown camera Make {make!r}.",
            f"Expected one of {', '.join(sorted(MAKE_TO_CAMERA))} (SIDD phones).",
        )
    iso_v = _nums(_get(md, "ISOSpeedRatings"))
    if iso_v is None or not iso_v.size:
        iso_v = _nums(_get(_unwrap_struct(_get(md, "DigitalCamera")), "ISOSpeedRatings"))
    if iso_v is None or not iso_v.size:
        raise bad("ISOSpeedRatings")
    nlf = _unknown_tag(md, 51041)
    if nlf is None and sub is not None:
        nlf = _unknown_tag(sub, 51041)
    if nlf is None or nlf.size < 2 or nlf.size % 2:
        raise bad("a NoiseProfile (DNG tag 51041) in UnknownTags")
    cfa = _unknown_tag(raw_ifd, 33422)
    if cfa is None:
        cfa = _unknown_tag(md, 33422)
    if cfa is None or cfa.size != 4:
        raise bad("a 2x2 CFAPattern (tag 33422)")
    black = _nums(_get(raw_ifd, "BlackLevel"))
    white = _nums(_get(raw_ifd, "WhiteLevel"))
    if black is None or white is None or not black.size or not white.size:
        raise bad("BlackLevel/WhiteLevel")
    neutral = _nums(_get(md, "AsShotNeutral"))
    if neutral is None or neutral.size != 3:
        raise bad("AsShotNeutral")

    def mat3(v: np.ndarray | None) -> np.ndarray | None:
        return v.reshape(3, 3) if v is not None and v.size == 9 else None

    width = _nums(_get(raw_ifd, "Width"))
    height = _nums(_get(raw_ifd, "Height"))
    pairs = nlf.reshape(-1, 2)
    beta1 = float(pairs[0, 0]) if pairs[0, 0] > 0 else 1e-6
    beta2 = float(pairs[0, 1]) if pairs[0, 1] > 0 else 1e-6
    return SiddMetadata(
        camera=camera,
        iso=int(iso_v[0]),
        nlf_beta1=beta1,
        nlf_beta2=beta2,
        nlf_per_channel=pairs.copy(),
        cfa_pattern=tuple(int(c) for c in cfa),
        black_level=float(black.mean()),
        white_level=float(white[0]),
        as_shot_neutral=neutral,
        color_matrix1=mat3(_nums(_get(md, "ColorMatrix1"))),
        color_matrix2=mat3(_nums(_get(md, "ColorMatrix2"))),
        forward_matrix1=mat3(_unknown_tag(md, 50964)),
        forward_matrix2=mat3(_unknown_tag(md, 50965)),
        width=int(width[0]) if width is not None and width.size else None,
        height=int(height[0]) if height is not None and height.size else None,
        make=make,
        model=_str(_get(md, "Model")),
        black_level_per_channel=tuple(float(b) for b in black),
    )
