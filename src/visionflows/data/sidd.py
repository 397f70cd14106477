"""SIDD-Medium Raw reader: folder names, MATLAB pixel and metadata files, Bayer packing, patches, dataset.

Follows the official Noise Flow data pipeline as documented in ``docs/noiseflow.md`` §7 of the reference
material (facts from ``BorealisAI/noise_flow@48d1e07:sidd/sidd_utils.py``, ``sidd/raw_utils.py``); no code
was copied. Layout of a SIDD-Medium root::

    <root>/Data/0052_002_S6_01600_01000_5500_N/0052_{NOISY,GT,METADATA}_RAW_{010,011}.MAT

(the scene folders may also sit directly under ``<root>``). Units: normalised raw in [0, 1].

Orientation: h5py returns the MATLAB v7.3 arrays transposed (W×H). Like the official code we keep that
orientation (no transpose back), so packed channels, patches and the released model's 3×3 filters all live in
the transposed frame. With it the packed channel colours are IP [R,G,B,G], S6 [G,B,G,R], GP/N6/G4 [B,G,R,G].
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from visionflows.cameras import CAMERAS
from visionflows.errors import DataError, InputError

__all__ = [
    "OFFICIAL_TRAIN_INSTANCES",
    "OFFICIAL_TEST_INSTANCES",
    "MAKE_TO_CAMERA",
    "SceneInfo",
    "SiddMetadata",
    "SiddImage",
    "SiddRawDataset",
    "parse_scene_folder",
    "read_raw_mat",
    "read_metadata",
    "pack_raw",
    "unpack_raw",
    "tile_patches",
    "find_sidd_images",
]

#: Official training split, 56 scene instances (hard-coded in ``sidd_utils.py::sidd_filenames_que_inst``;
#: anchors README "Split"). Differs from the repository's ``train_inst.csv``.
OFFICIAL_TRAIN_INSTANCES: tuple[int, ...] = (
    4, 11, 13, 17, 18, 20, 22, 23, 25, 27, 28, 29, 30, 34, 35, 39, 40, 42, 43, 44,
    45, 47, 81, 86, 88, 90, 101, 102, 104, 105, 110, 111, 115, 116, 125, 126, 127, 129, 132, 135, 138,
    140, 175, 177, 178, 179, 180, 181, 185, 186, 189, 192, 193, 194, 196, 197,
)  # fmt: skip
#: Official test split, 22 scene instances (scenes 3, 7, 10); equals ``sidd/test_inst.csv``.
OFFICIAL_TEST_INSTANCES: tuple[int, ...] = (
    54, 55, 57, 59, 60, 62, 63, 66, 150, 151, 152, 154, 155, 159, 160, 161, 163, 164, 165, 166, 198, 199,
)  # fmt: skip

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


def _check_bayer(bayer: Any, name: str = "bayer") -> None:
    if bayer.ndim < 2 or bayer.shape[-1] % 2 or bayer.shape[-2] % 2 or bayer.shape[-1] == 0:
        raise InputError(
            f"{name} must be [..., H, W] with even H and W > 0, got shape {tuple(bayer.shape)}.",
            "Crop the Bayer image to even dimensions before packing.",
        )


def pack_raw(bayer: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Pack a Bayer image [..., H, W] into [..., 4, H/2, W/2].

    Channel order = offsets (0,0), (0,1), (1,1), (1,0) (official ``pack_raw``). Works on numpy and torch.
    """
    _check_bayer(bayer)
    planes = [bayer[..., 0::2, 0::2], bayer[..., 0::2, 1::2], bayer[..., 1::2, 1::2], bayer[..., 1::2, 0::2]]
    if isinstance(bayer, torch.Tensor):
        return torch.stack(planes, dim=-3)
    return np.stack(planes, axis=-3)


def unpack_raw(packed: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`pack_raw`: [..., 4, h, w] -> [..., 2h, 2w]."""
    if packed.ndim < 3 or packed.shape[-3] != 4:
        raise InputError(
            f"packed must be [..., 4, h, w], got shape {tuple(packed.shape)}.", "Pass a packed Bayer array."
        )
    *lead, _, h, w = packed.shape
    if isinstance(packed, torch.Tensor):
        out = packed.new_empty((*lead, 2 * h, 2 * w))
    else:
        out = np.empty((*lead, 2 * h, 2 * w), dtype=packed.dtype)
    out[..., 0::2, 0::2] = packed[..., 0, :, :]
    out[..., 0::2, 1::2] = packed[..., 1, :, :]
    out[..., 1::2, 1::2] = packed[..., 2, :, :]
    out[..., 1::2, 0::2] = packed[..., 3, :, :]
    return out


def tile_patches(packed: np.ndarray, patch: int = 32, max_patches: int | None = 2898) -> np.ndarray:
    """Non-overlapping ``patch``×``patch`` tiles of a packed image [C, h, w] on a stride-``patch`` grid.

    Row-major order (official ``sample_indices_uniform``), truncated to the first ``max_patches``
    (2898 officially; None = all). Returns [N, C, patch, patch] (a copy).
    """
    if packed.ndim != 3 or patch <= 0:
        raise InputError(
            f"tile_patches needs a [C, h, w] array and patch > 0, got shape {packed.shape}, patch {patch}.",
            "Pass one packed image.",
        )
    c, h, w = packed.shape
    nh, nw = h // patch, w // patch
    tiles = packed[:, : nh * patch, : nw * patch].reshape(c, nh, patch, nw, patch)
    tiles = tiles.transpose(1, 3, 0, 2, 4).reshape(nh * nw, c, patch, patch)
    if max_patches is not None:
        tiles = tiles[:max_patches]
    return np.ascontiguousarray(tiles)


@dataclass(frozen=True)
class SiddImage:
    """One (noisy, ground truth, metadata) triple of a scene instance."""

    info: SceneInfo
    image_id: int
    noisy: Path
    gt: Path
    metadata: Path


def _find_file(folder: Path, inst: int, kind: str, image_id: int) -> Path:
    stem = f"{inst:04d}_{kind}_RAW_{image_id:03d}"
    candidates = [folder / f"{stem}.MAT", folder / f"{stem}.mat", folder / f"{inst:04d}_{kind}_RAW" / f"{stem}.MAT"]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"SIDD file missing: {candidates[0]}.",
        "Each scene folder needs <id>_NOISY_RAW_0xx.MAT, <id>_GT_RAW_0xx.MAT and <id>_METADATA_RAW_0xx.MAT "
        "(SIDD-Medium Raw); re-download or remove the scene.",
    )


def find_sidd_images(
    root: str | Path,
    instances: Iterable[int] | None = None,
    image_ids: Sequence[int] = (10, 11),
    cameras: Iterable[str] | None = None,
    isos: Iterable[int] | None = None,
    strict: bool = True,
) -> list[SiddImage]:
    """Scan a SIDD-Medium root (``<root>/Data/<folder>`` or ``<root>/<folder>``) for image triples.

    Folders whose names start like an instance (``dddd_``) must parse fully, otherwise DataError; other
    entries are ignored. Every selected image needs its NOISY, GT and METADATA file (DataError naming it).
    Requested ``instances`` that are absent raise DataError if ``strict`` (only when no camera/ISO filter
    is given), else a warning. Sorted by instance id, then image id.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"SIDD root folder not found: {base}.", "Pass the SIDD_Medium_Raw folder.")
    data = base / "Data" if (base / "Data").is_dir() else base
    want = None if instances is None else {int(i) for i in instances}
    cams = None if cameras is None else {str(c).upper() for c in cameras}
    isoset = None if isos is None else {int(i) for i in isos}
    found: list[SiddImage] = []
    seen: set[int] = set()
    for folder in sorted(data.iterdir()):
        if not folder.is_dir() or not re.match(r"^\d{4}_", folder.name):
            continue
        info = parse_scene_folder(folder.name)
        if want is not None and info.instance_id not in want:
            continue
        if (cams is not None and info.camera not in cams) or (isoset is not None and info.iso not in isoset):
            continue
        if info.instance_id in seen:
            raise DataError(
                f"Duplicate SIDD instance {info.instance_id:04d} in {data} ({folder.name}).",
                "Keep one folder per scene instance.",
            )
        seen.add(info.instance_id)
        for image_id in image_ids:
            found.append(
                SiddImage(
                    info,
                    int(image_id),
                    _find_file(folder, info.instance_id, "NOISY", image_id),
                    _find_file(folder, info.instance_id, "GT", image_id),
                    _find_file(folder, info.instance_id, "METADATA", image_id),
                )
            )
    if want is not None and cams is None and isoset is None:
        missing = sorted(want - seen)
        if missing:
            err = DataError(
                f"{len(missing)} SIDD instances not found under {data}: "
                f"{', '.join(f'{i:04d}' for i in missing[:10])}" + (" …" if len(missing) > 10 else "") + ".",
                "Download SIDD-Medium Raw completely, or select only the instances you have.",
            )
            if strict:
                raise err
            warnings.warn(str(err), stacklevel=3)
    found.sort(key=lambda im: (im.info.instance_id, im.image_id))
    return found


class SiddRawDataset(IterableDataset):
    """Streaming SIDD-Medium Raw patches: opens one image pair at a time, never the whole dataset.

    Each item is a dict ``{"noise": [4,p,p] float32 = clip(noisy) - clip(clean), "clean": [4,p,p] float32,
    "iso": int, "camera": int, "instance_id": int, "image_id": int, "nlf": (beta1, beta2)}`` or, with
    ``as_tuple=True``, ``(noise, clean, iso, camera)``.

    Args:
        root: SIDD-Medium Raw folder (with ``Data/``) or a folder holding scene folders.
        split: ``"train"`` / ``"test"`` (official 56 / 22 instances, noiseflow.md §7), or ``"all"``.
        instances: explicit instance ids (overrides ``split``).
        image_ids: image numbers per instance (official: 10 and 11).
        cameras, isos: optional filters.
        patch, max_patches: tiling (official 32 and 2898 per image).
        shuffle_images, shuffle_patches, seed: optional shuffling (the official default is none).
        as_tuple: yield tuples instead of dicts.
        require_complete: raise DataError when instances of the split are missing (explicit ``instances``
            are always required); by default a partial download only warns.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        instances: Iterable[int] | None = None,
        image_ids: Sequence[int] = (10, 11),
        cameras: Iterable[str] | None = None,
        isos: Iterable[int] | None = None,
        patch: int = 32,
        max_patches: int | None = 2898,
        shuffle_images: bool = False,
        shuffle_patches: bool = False,
        seed: int = 0,
        as_tuple: bool = False,
        require_complete: bool = False,
    ) -> None:
        strict = instances is not None or require_complete
        super().__init__()
        if instances is None:
            if split == "train":
                instances = OFFICIAL_TRAIN_INSTANCES
            elif split == "test":
                instances = OFFICIAL_TEST_INSTANCES
            elif split != "all":
                raise InputError(f"Unknown SIDD split {split!r}.", "Use 'train', 'test' or 'all'.")
        self.root = Path(root)
        self.images = find_sidd_images(root, instances, image_ids, cameras, isos, strict=strict)
        if not self.images:
            raise DataError(
                f"No SIDD images selected under {self.root} (split {split!r}).",
                "Check the root folder and the split/camera/ISO filters.",
            )
        self.patch = int(patch)
        self.max_patches = max_patches
        self.shuffle_images = shuffle_images
        self.shuffle_patches = shuffle_patches
        self.seed = int(seed)
        self.as_tuple = as_tuple
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling seed per epoch."""
        self.epoch = int(epoch)

    def load_image(self, image: SiddImage) -> dict[str, Any]:
        """Load one image pair: packed clipped ``clean`` and ``noise`` patches [N,4,p,p] plus metadata."""
        noisy = read_raw_mat(image.noisy)
        clean = read_raw_mat(image.gt)
        if noisy.shape != clean.shape:
            raise DataError(
                f"SIDD pair shape mismatch: {image.noisy} is {noisy.shape} but {image.gt} is {clean.shape}.",
                "Re-download the scene; noisy and ground-truth frames must be aligned.",
            )
        if noisy.shape[0] % 2 or noisy.shape[1] % 2:
            noisy = noisy[: noisy.shape[0] // 2 * 2, : noisy.shape[1] // 2 * 2]
            clean = clean[: clean.shape[0] // 2 * 2, : clean.shape[1] // 2 * 2]
        meta = read_metadata(image.metadata)
        np.clip(noisy, 0.0, 1.0, out=noisy)
        np.clip(clean, 0.0, 1.0, out=clean)
        clean_p = tile_patches(pack_raw(clean), self.patch, self.max_patches)
        noisy_p = tile_patches(pack_raw(noisy), self.patch, self.max_patches)
        return {
            "clean": clean_p,
            "noise": noisy_p - clean_p,
            "iso": image.info.iso,
            "camera": image.info.camera_index,
            "nlf": (meta.nlf_beta1, meta.nlf_beta2),
        }

    def __iter__(self) -> Iterator[Any]:
        order = list(range(len(self.images)))
        rng = random.Random(self.seed + 1000003 * self.epoch)
        if self.shuffle_images:
            rng.shuffle(order)
        worker = get_worker_info()
        if worker is not None:
            order = order[worker.id :: worker.num_workers]
        for idx in order:
            image = self.images[idx]
            data = self.load_image(image)
            n = data["clean"].shape[0]
            patch_order = list(range(n))
            if self.shuffle_patches:
                random.Random(self.seed + 7919 * idx + 1000003 * self.epoch).shuffle(patch_order)
            for j in patch_order:
                noise = torch.from_numpy(data["noise"][j])
                clean = torch.from_numpy(data["clean"][j])
                if self.as_tuple:
                    yield noise, clean, data["iso"], data["camera"]
                else:
                    yield {
                        "noise": noise,
                        "clean": clean,
                        "iso": data["iso"],
                        "camera": data["camera"],
                        "instance_id": image.info.instance_id,
                        "image_id": image.image_id,
                        "nlf": data["nlf"],
                    }
