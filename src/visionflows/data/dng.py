"""Real raw files: DNG (and the raw formats LibRaw reads) through ``rawpy``, bursts → noisy/clean pairs.

:func:`read_raw` reads one raw file: the Bayer mosaic, its CFA pattern, black and white levels through rawpy
(LibRaw); ISO, exposure time, the DNG ``NoiseProfile`` (tag 51041), ``AsShotNeutral`` and ``ColorMatrix1``
through tifffile when the file is TIFF-based (DNG, and most camera raws), since LibRaw does not expose them for
every file. Values are normalised per CFA position, ``(DN − black_c)/(white − black_c)``, clipped to [0, 1]:
the units of every noise model here. :func:`pack_bayer` packs the mosaic into 4 channels (offsets (0,0), (0,1),
(1,1), (1,0), the SIDD order) and says which colour each channel has.

:func:`burst_pairs` turns a burst of frames of a static scene into noisy/clean pairs: the clean estimate of
frame i is a robust mean of the *other* frames (per pixel: values more than 3 robust standard deviations from
the median are rejected, the rest averaged). This is SIDD's ground-truth estimation in brief (Abdelhamed et al.
2018 also align frames, correct defective pixels and fit intensity changes, which we do not: the burst must be
taken on a tripod at fixed exposure). Leaving frame i out keeps its noise independent of its clean estimate.

:func:`write_dng` writes a minimal valid DNG (tifffile, following the DNG 1.4 specification): used by the tests,
and to save simulated raw for other tools.

Bad input is one :class:`~visionflows.errors.DataError` each: an unreadable file, a raw without a CFA (a linear
DNG), a non-Bayer layout (X-Trans, four-colour), a burst whose frames differ in size, CFA, ISO or exposure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionflows.errors import DataError, InputError

__all__ = ["RAW_EXTENSIONS", "RawFrame", "read_raw", "pack_bayer", "burst_pairs", "write_dng"]

#: File types handed to rawpy (LibRaw reads many more; these are the ones a folder scan picks up).
RAW_EXTENSIONS = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")
_COLOUR = {"R": 0, "G": 1, "B": 2}
_TAG = {"iso": 34855, "exposure": 33434, "noise_profile": 51041, "neutral": 50728, "color_matrix": 50721,
        "make": 271, "model": 272}


@dataclass
class RawFrame:
    """One raw frame: ``bayer`` [H, W] float32 normalised, ``cfa`` 2×2 colours (0 R, 1 G, 2 B), levels and
    metadata (``None`` where the file has none). ``noise_profile``: the DNG (S, O) pairs, variance = S·x + O."""

    path: str
    bayer: np.ndarray
    cfa: tuple[int, int, int, int]
    black: tuple[float, float, float, float]
    white: float
    iso: int | None = None
    exposure: float | None = None
    noise_profile: np.ndarray | None = None
    as_shot_neutral: np.ndarray | None = None
    color_matrix: np.ndarray | None = None
    camera: str = ""

    def packed(self) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """(packed [4, H/2, W/2], colour of each channel): :func:`pack_bayer`."""
        return pack_bayer(self.bayer, self.cfa)

    def packed_nlf(self) -> np.ndarray | None:
        """``[4, 2]`` (S, O) per packed channel from the NoiseProfile (one pair, or one per colour plane R, G, B),
        or ``None`` without one."""
        if self.noise_profile is None:
            return None
        pairs = np.asarray(self.noise_profile, np.float64).reshape(-1, 2)
        colours = pack_bayer(np.zeros((2, 2), np.float32), self.cfa)[1]
        return np.stack([pairs[c] if len(pairs) == 3 else pairs[0] for c in colours])


def pack_bayer(bayer: np.ndarray, cfa: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Bayer [H, W] (H, W even) → packed [4, H/2, W/2] with channel offsets (0,0), (0,1), (1,1), (1,0), and the
    colour of each channel (``cfa`` is row-major: (0,0), (0,1), (1,0), (1,1))."""
    if bayer.ndim != 2 or bayer.shape[0] % 2 or bayer.shape[1] % 2 or min(bayer.shape) < 2:
        raise InputError(f"a Bayer mosaic must be [H, W] with H, W even, got {bayer.shape}.", "crop to even size.")
    offsets = ((0, 0), (0, 1), (1, 1), (1, 0))
    packed = np.stack([bayer[dy::2, dx::2] for dy, dx in offsets])
    return packed, tuple(cfa[2 * dy + dx] for dy, dx in offsets)  # type: ignore[return-value]


def _tiff_meta(path: Path) -> dict:
    import tifffile

    out: dict = {}
    try:
        with tifffile.TiffFile(path) as tif:
            tags: dict[int, object] = {}
            for page in tif.pages:
                for t in page.tags.values():
                    tags.setdefault(t.code, t.value)
            exif = tif.pages[0].tags.get(34665)
            if exif is not None and isinstance(exif.value, dict):
                names = {"ISOSpeedRatings": 34855, "PhotographicSensitivity": 34855, "ExposureTime": 33434}
                for name, code in names.items():
                    if name in exif.value:
                        tags.setdefault(code, exif.value[name])
    except (tifffile.TiffFileError, OSError, ValueError):
        return out
    for key, code in _TAG.items():
        if code in tags:
            out[key] = tags[code]
    return out


def _ratio(v: object) -> np.ndarray:
    a = np.asarray(v, np.float64).ravel()
    return a[0::2] / a[1::2] if a.size % 2 == 0 and a.size > 0 and np.all(a[1::2] != 0) else a


def read_raw(path: str | os.PathLike) -> RawFrame:
    """One raw file (module docstring). DataError for an unreadable file, no CFA, or a non-Bayer layout."""
    import rawpy

    p = Path(path)
    if not p.is_file():
        raise DataError(f"raw file {p} does not exist.", "check the path.")
    try:
        with rawpy.imread(str(p)) as raw:
            pattern = raw.raw_pattern
            desc = raw.color_desc.decode(errors="replace")
            if pattern is None or raw.raw_image_visible.ndim != 2:
                raise DataError(f"{p} has no colour filter array (a linear or demosaiced raw).",
                                "give a Bayer raw file (a DNG with a CFA, or a camera raw).")
            if pattern.shape != (2, 2) or raw.num_colors != 3 or any(desc[int(i)] not in _COLOUR for i in
                                                                     pattern.ravel()):
                raise DataError(f"{p} has an unsupported CFA layout ({pattern.shape[0]}×{pattern.shape[1]} "
                                f"pattern, colours {desc!r}).",
                                "only 2×2 Bayer patterns (RGGB, BGGR, GRBG, GBRG) are supported; X-Trans and "
                                "four-colour sensors are not.")
            dn = raw.raw_image_visible.astype(np.float64)
            cfa = tuple(_COLOUR[desc[int(i)]] for i in pattern.ravel())
            black_ch = np.asarray(raw.black_level_per_channel, np.float64)
            black = tuple(float(black_ch[int(i)]) for i in pattern.ravel())
            white = float(raw.white_level)
    except rawpy.LibRawError as err:
        raise DataError(f"rawpy (LibRaw) cannot read {p}: {type(err).__name__}: {err}.",
                        "give a DNG or a camera raw file LibRaw supports.") from None
    h, w = dn.shape[0] // 2 * 2, dn.shape[1] // 2 * 2
    dn = dn[:h, :w]
    black_map = np.empty((2, 2))
    black_map.flat[:] = black
    bmap = np.tile(black_map, (h // 2, w // 2))
    if not all(white > b for b in black):
        raise DataError(f"{p}: white level {white} is not above the black levels {black}.", "check the file.")
    bayer = np.clip((dn - bmap) / (white - bmap), 0.0, 1.0).astype(np.float32)
    meta = _tiff_meta(p)
    iso = meta.get("iso")
    iso = int(np.ravel(iso)[0]) if iso is not None and np.ravel(iso)[0] else None
    exposure = float(_ratio(meta["exposure"])[0]) if "exposure" in meta else None
    noise = np.asarray(meta["noise_profile"], np.float64) if "noise_profile" in meta else None
    neutral = _ratio(meta["neutral"]) if "neutral" in meta else None
    cm = _ratio(meta["color_matrix"]).reshape(3, 3) if "color_matrix" in meta else None
    camera = " ".join(str(meta[k]).strip() for k in ("make", "model") if k in meta)
    return RawFrame(str(p), bayer, cfa, black, white, iso, exposure, noise, neutral, cm, camera)  # type: ignore[arg-type]


def _robust_mean(stack: np.ndarray, k: float = 3.0) -> np.ndarray:
    if stack.shape[0] < 3:
        return stack.mean(axis=0)
    med = np.median(stack, axis=0)
    sigma = 1.4826 * np.median(np.abs(stack - med), axis=0)
    keep = np.abs(stack - med) <= k * np.maximum(sigma, 1e-12)
    return (np.where(keep, stack, 0.0).sum(axis=0) / np.maximum(keep.sum(axis=0), 1)).astype(np.float32)


def burst_pairs(frames: list[RawFrame]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(clean, noisy) packed pairs of a burst (module docstring): at least 2 frames of one size, CFA, ISO and
    exposure. DataError naming the first frame that differs."""
    if len(frames) < 2:
        raise DataError(f"a burst needs at least 2 frames, got {len(frames)}.",
                        "take several frames of a static scene on a tripod (SIDD used up to 150).")
    ref = frames[0]
    for f in frames[1:]:
        for what, a, b in (("size", f.bayer.shape, ref.bayer.shape), ("CFA pattern", f.cfa, ref.cfa),
                           ("ISO", f.iso, ref.iso), ("exposure time", f.exposure, ref.exposure)):
            if a != b:
                raise DataError(f"burst frame {f.path} differs in {what} ({a} vs {b} in {ref.path}).",
                                "use frames of one scene taken at one size, ISO and exposure.")
    packed = np.stack([f.packed()[0] for f in frames])
    pairs = []
    for i in range(len(frames)):
        others = np.delete(packed, i, axis=0)
        pairs.append((_robust_mean(others), packed[i]))
    return pairs


def write_dng(path: str | os.PathLike, bayer_dn: np.ndarray, cfa: str = "RGGB", black: int = 512,
              white: int = 16383, iso: int | None = None, exposure: float | None = None,
              noise_profile: tuple[float, ...] | None = None,
              as_shot_neutral: tuple[float, float, float] = (0.5, 1.0, 0.6),
              color_matrix: np.ndarray | None = None, make: str = "visionflows", model: str = "simulated") -> Path:
    """A minimal DNG 1.4 of the Bayer mosaic ``bayer_dn`` [H, W] (uint16 DN): CFA pattern (``"RGGB"`` …),
    black/white level, ColorMatrix1 (default: the mean SIDD matrix) with illuminant D65, AsShotNeutral, and
    optionally ISO, exposure time and NoiseProfile. Returns the path."""
    import tifffile

    from visionflows.cameras.specs import GENERIC_COLOR_MATRIX

    arr = np.asarray(bayer_dn)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise InputError(f"bayer_dn must be a 2-D uint16 array, got {arr.dtype} {arr.shape}.", "round and cast.")
    if len(cfa) != 4 or any(c not in _COLOUR for c in cfa.upper()):
        raise InputError(f"unknown CFA pattern {cfa!r}.", "use e.g. 'RGGB', 'BGGR', 'GRBG' or 'GBRG'.")

    def rational(values, den: int = 1_000_000) -> tuple[int, ...]:
        out: list[int] = []
        for v in np.ravel(values):
            out += [int(round(float(v) * den)), den]
        return tuple(out)

    cm = GENERIC_COLOR_MATRIX if color_matrix is None else np.asarray(color_matrix, np.float64)
    tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, bytes(_COLOUR[c] for c in cfa.upper()), True),
            (50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True),
            (271, "s", 0, make, True), (272, "s", 0, model, True), (50708, "s", 0, f"{make} {model}", True),
            (50714, "I", 1, int(black), True), (50717, "I", 1, int(white), True),
            (50721, "2i", 9, rational(cm), True), (50728, "2I", 3, rational(as_shot_neutral), True),
            (50778, "H", 1, 21, True)]
    if iso is not None:
        tags.append((34855, "H", 1, int(iso), True))
    if exposure is not None:
        tags.append((33434, "2I", 1, rational([exposure], 1_000_000), True))
    if noise_profile is not None:
        tags.append((51041, "d", len(noise_profile), tuple(float(v) for v in noise_profile), True))
    p = Path(path)
    tifffile.imwrite(p, arr, photometric=32803, extratags=tags, software="visionflows")
    return p
