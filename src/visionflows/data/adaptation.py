"""Few-frame adaptation data: noisy/clean pairs, or dark and flat frames, of one camera at one ISO, as patches.

A folder (:func:`load_adaptation_folder`) holds any of

* ``NAME_noisy.npy`` + ``NAME_clean.npy``: a noisy/clean pair of packed raw ``[4, H, W]`` (or ``[B, 4, H, W]``)
  in normalised units (SIDD ``.MAT`` files, ``NAME_NOISY…``/``NAME_GT…``, work too);
* ``dark_*.npy``: dark frames (lens cap on: the clean signal is 0);
* ``flat_*.npy``: flat frames (a uniformly lit, defocused surface). The clean signal is the per-pixel mean of
  the flat frames when there are at least 4, else each frame's per-channel mean (this assumes an even field,
  without vignetting);
* raw files (DNG, or any raw LibRaw reads; :mod:`visionflows.data.dng`): ``dark_*``/``flat_*`` raws are dark
  and flat frames, every other raw file is a frame of **one burst** of a static scene, turned into pairs by
  robust averaging (:func:`~visionflows.data.dng.burst_pairs`). Their ISO (which must agree) is read from the
  files.

:func:`adaptation_patches` turns them into non-overlapping ``patch × patch`` patches ``{clean, noise}``.
Problems (an empty folder, a noisy file without its clean one, pairs of different shapes, frames that are not
packed raw) are one :class:`~visionflows.errors.DataError` each.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from visionflows.errors import DataError, InputError

__all__ = ["AdaptationData", "load_adaptation_folder", "adaptation_patches", "frames_to_pairs"]

_PAIR = re.compile(r"^(?P<stem>.+?)_(?P<kind>noisy|clean|gt)(?:_raw(?:_\d+)?)?$", re.IGNORECASE)


@dataclass
class AdaptationData:
    """Pairs ``[(clean, noisy)]`` (packed ``[4, H, W]`` float32 arrays) and the files they came from."""

    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    kind: str = "pairs"  # "pairs", "dark-flat" or "pairs+dark-flat"
    iso: int | None = None  # from the files' metadata when they have it (DNG), else None
    noise_profile: np.ndarray | None = None  # [4, 2] per packed channel, from a DNG NoiseProfile

    def __len__(self) -> int:
        return len(self.pairs)


def _read(path: Path, frames: list | None = None) -> np.ndarray:
    from visionflows.data.dng import RAW_EXTENSIONS, read_raw
    from visionflows.data.raw_files import read_packed_raw

    if path.suffix.lower() in RAW_EXTENSIONS:
        frame = read_raw(path)
        if frames is not None:
            frames.append(frame)
        return frame.packed()[0][None]

    try:
        arr, _, _ = read_packed_raw(path)
    except InputError as err:
        raise DataError(err.problem, err.fix) from None
    return arr.numpy()


def frames_to_pairs(dark: list[np.ndarray], flat: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(clean, noisy) pairs from dark frames (clean 0) and flat frames (see the module docstring)."""
    pairs = [(np.zeros_like(d), d) for d in dark]
    if flat:
        shapes = {f.shape for f in flat}
        if len(shapes) > 1:
            raise DataError(f"flat frames differ in size: {sorted(shapes)}.", "use flat frames of one size.")
        if len(flat) >= 4:
            clean = np.mean(flat, axis=0).astype(np.float32)
            pairs += [(clean, f) for f in flat]
        else:
            pairs += [(np.broadcast_to(f.mean(axis=(1, 2), keepdims=True), f.shape).astype(np.float32), f)
                      for f in flat]
    return pairs


def load_adaptation_folder(folder: str | os.PathLike) -> AdaptationData:
    """Pairs and dark/flat frames of ``folder`` (module docstring), sorted by file name."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"adaptation data {d} is not a folder.", "give a folder of *_noisy/*_clean or dark_*/flat_* "
                        "packed raw .npy files.")
    from visionflows.data.dng import RAW_EXTENSIONS, burst_pairs, read_raw

    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".npy", ".mat", *RAW_EXTENSIONS))
    burst = [p for p in files if p.suffix.lower() in RAW_EXTENSIONS
             and not p.stem.lower().startswith(("dark", "flat"))]
    files = [p for p in files if p not in burst]
    noisy: dict[str, Path] = {}
    clean: dict[str, Path] = {}
    darks, flats = [], []
    for p in files:
        stem = p.stem
        if stem.lower().startswith("dark"):
            darks.append(p)
        elif stem.lower().startswith("flat"):
            flats.append(p)
        elif (m := _PAIR.match(stem)) is not None:
            (noisy if m["kind"].lower() == "noisy" else clean)[m["stem"]] = p
    lonely = sorted(set(noisy) ^ set(clean))
    if lonely:
        name = lonely[0]
        has, lacks = ("noisy", "clean") if name in noisy else ("clean", "noisy")
        raise DataError(f"{d}: {name} has a {has} file but no {lacks} one.",
                        f"add {name}_{lacks}.npy or remove {name}_{has}.npy.")
    data = AdaptationData()
    for stem in sorted(noisy):
        c, n = _read(clean[stem]), _read(noisy[stem])
        if c.shape != n.shape:
            raise DataError(f"{d}: {stem} clean {c.shape[1:]} and noisy {n.shape[1:]} differ in shape.",
                            "give aligned pairs of the same size.")
        data.pairs += list(zip(c, n))
        data.sources.append(stem)
    raws: list = []
    if burst:
        frames_b = [read_raw(p) for p in burst]
        raws += frames_b
        data.pairs += burst_pairs(frames_b)
        data.sources += [p.name for p in burst]
        data.kind = "burst"
    frames = {"dark": [f for p in darks for f in _read(p, raws)], "flat": [f for p in flats for f in _read(p, raws)]}
    isos = {f.iso for f in raws if f.iso is not None}
    if len(isos) > 1:
        raise DataError(f"{d}: the raw files were taken at different ISOs {sorted(isos)}.",
                        "adapt from frames of one ISO.")
    data.iso = isos.pop() if isos else None
    profiles = [f.packed_nlf() for f in raws if f.noise_profile is not None]
    data.noise_profile = profiles[0] if profiles else None
    if frames["dark"] or frames["flat"]:
        data.pairs += frames_to_pairs(frames["dark"], frames["flat"])
        data.sources += [p.name for p in darks + flats]
        data.kind = ("pairs+" if noisy or burst else "") + "dark-flat"
    if not data.pairs:
        raise DataError(f"{d} holds no adaptation data.", "add NAME_noisy.npy + NAME_clean.npy pairs, or dark_*.npy "
                        "and flat_*.npy frames (packed raw [4, H, W], normalised units).")
    return data


def adaptation_patches(pairs: list[tuple[np.ndarray, np.ndarray]], patch: int = 32) -> dict[str, torch.Tensor]:
    """``{clean, noise}`` ``[N, 4, patch, patch]`` float32: non-overlapping patches of every pair (a frame smaller
    than ``patch`` is one error naming its size)."""
    cleans, noises = [], []
    for i, (c, n) in enumerate(pairs):
        if c.ndim != 3 or c.shape[0] != 4 or c.shape != n.shape:
            raise DataError(f"adaptation pair {i} has shapes {c.shape} / {n.shape}; expected two [4, H, W].",
                            "pack the Bayer frames into 4 channels first.")
        h, w = c.shape[1] // patch, c.shape[2] // patch
        if h == 0 or w == 0:
            raise DataError(f"adaptation frame {i} is {c.shape[1]}×{c.shape[2]} packed pixels, smaller than one "
                            f"{patch}×{patch} patch.", "give larger frames.")
        for arr, out in ((c, cleans), (n - c, noises)):
            a = arr[:, : h * patch, : w * patch].reshape(4, h, patch, w, patch).transpose(1, 3, 0, 2, 4)
            out.append(a.reshape(-1, 4, patch, patch))
    return {"clean": torch.from_numpy(np.ascontiguousarray(np.concatenate(cleans), np.float32)),
            "noise": torch.from_numpy(np.ascontiguousarray(np.concatenate(noises), np.float32))}
