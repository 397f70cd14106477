"""Real sRGB noisy/clean image pairs: loading, validation, held-out splits (by image or by camera), tiles and
random aligned patches.

Pairs are found in the layouts real-noise datasets are published in (SIDD sRGB, PolyU, Nam, ours, a CSV
manifest; :mod:`visionflows.data.srgb_layouts`), 8-bit PNG or JPEG. Camera and ISO come from the names where the
layout has them (``d800_iso3200_1``, SIDD's scene folders, PolyU's ``Camera_F_Shutter_ISO_Scene_Index``).

Every problem names the file: a missing partner, a size mismatch, an unreadable or oversized image and pairs
whose content is visibly shifted (misaligned) raise :class:`~visionflows.errors.DataError`, or with
``on_error="skip"`` are left out with one warning naming them. Images are decoded by
:func:`visionflows.data.images.read_image_array`, like every image in the package: 16-bit PNGs are scaled to
8 bits (``v >> 8``), greyscale is repeated to RGB, alpha is dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from visionflows.data.srgb_layouts import LAYOUTS, SRGBPair, check_on_error, detect_layout, find_pairs, parse_stem
from visionflows.errors import DataError, InputError

__all__ = ["LAYOUTS", "SRGBPair", "SRGBPairs", "find_pairs", "detect_layout", "read_png_u8", "check_alignment",
           "load_pairs", "parse_stem"]


def read_png_u8(path: str | Path) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` (16-bit scaled to 8, grey repeated, alpha dropped); DataError if
    unreadable (see :func:`visionflows.data.images.read_image_array`)."""
    from visionflows.data.images import read_image_array

    arr = read_image_array(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def check_alignment(noisy: np.ndarray, clean: np.ndarray, name: str, max_shift: int = 3, crop: int = 192) -> None:
    """DataError if the clean image matches the noisy one clearly better at a non-zero shift (≤ ``max_shift``).

    Compares the mean absolute difference of grey central crops at every integer shift; an aligned pair has
    its minimum at (0, 0). A shift must beat (0, 0) by 10 % to count, so pure noise never triggers it.
    """
    g_n = noisy.astype(np.float32).mean(-1)
    g_c = clean.astype(np.float32).mean(-1)
    h, w = g_n.shape
    s = max_shift
    if h <= 2 * s + 8 or w <= 2 * s + 8:
        return
    ch, cw = min(crop, h - 2 * s), min(crop, w - 2 * s)
    top, left = (h - ch) // 2, (w - cw) // 2
    ref = g_n[top : top + ch, left : left + cw]
    best, best_err, err0 = (0, 0), np.inf, None
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            err = float(np.abs(ref - g_c[top + dy : top + dy + ch, left + dx : left + dx + cw]).mean())
            if dy == 0 and dx == 0:
                err0 = err
            if err < best_err:
                best, best_err = (dy, dx), err
    if best != (0, 0) and err0 is not None and best_err < 0.9 * err0:
        raise DataError(f"pair {name}: the clean image is misaligned with the noisy one (best match at a shift of "
                        f"{best[0]} rows, {best[1]} columns).", "register the clean image to the noisy one.")


@dataclass
class SRGBPairs:
    """Loaded pairs: ``noisy``/``clean`` lists of ``uint8 [H, W, 3]``; ``cameras`` / ``isos`` per image (None =
    unknown); ``layout`` the layout they were read in."""

    names: list[str]
    noisy: list[np.ndarray]
    clean: list[np.ndarray]
    cameras: list[str | None]
    isos: list[int | None]
    root: str = ""
    layout: str = ""
    _weights: np.ndarray | None = field(default=None, repr=False)
    _smallest: tuple[int, int, int] | None = field(default=None, repr=False)  # (index, h, w) of the smallest image

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: Sequence[int]) -> SRGBPairs:
        idx = list(idx)
        return SRGBPairs([self.names[i] for i in idx], [self.noisy[i] for i in idx], [self.clean[i] for i in idx],
                         [self.cameras[i] for i in idx], [self.isos[i] for i in idx], self.root, self.layout)

    def summary(self) -> dict:
        """``{"layout", "pairs", "pixels", "cameras": {name: pairs}, "isos": {iso: pairs}}`` (unknown = ``"?"``)."""
        cams: dict[str, int] = {}
        isos: dict[str, int] = {}
        for c, i in zip(self.cameras, self.isos):
            cams[c or "?"] = cams.get(c or "?", 0) + 1
            isos[str(i) if i else "?"] = isos.get(str(i) if i else "?", 0) + 1
        return {"layout": self.layout, "pairs": len(self), "pixels": int(sum(a.shape[0] * a.shape[1]
                                                                            for a in self.noisy)),
                "cameras": dict(sorted(cams.items())), "isos": dict(sorted(isos.items(), key=lambda kv: kv[0]))}

    def camera_split(self, camera: str) -> tuple[SRGBPairs, SRGBPairs]:
        """``(pairs of every other camera, pairs of camera)`` (leave-one-camera-out; pairs of unknown camera stay
        on the training side). DataError if ``camera`` has no pairs or nothing is left to train on."""
        cam = str(camera).lower()
        held = [i for i, c in enumerate(self.cameras) if c == cam]
        if not held:
            known = sorted({c for c in self.cameras if c})
            raise DataError(f"no pairs of camera {camera!r} in {self.root or 'the data'} (cameras: "
                            f"{', '.join(known) or 'none known'}).", "pass one of the cameras listed.")
        rest = [i for i in range(len(self)) if i not in set(held)]
        if not rest:
            raise DataError(f"every pair is of camera {camera!r}: nothing is left to train on.",
                            "add pairs of other cameras.")
        return self.subset(rest), self.subset(held)

    def tiles(self, size: int) -> SRGBPairs:
        """Each image cut into non-overlapping ``size``×``size`` tiles (the remainder dropped; images smaller than
        ``size`` kept whole), named ``<name>#<k>``, with the image's camera and ISO."""
        out = SRGBPairs([], [], [], [], [], self.root, self.layout)
        for i in range(len(self)):
            h, w = self.noisy[i].shape[:2]
            if h < size or w < size:
                spots = [(0, 0, h, w)]
            else:
                spots = [(t, l, size, size) for t in range(0, h - size + 1, size) for l in range(0, w - size + 1, size)]
            for k, (t, l, th, tw) in enumerate(spots):
                out.names.append(f"{self.names[i]}#{k}")
                out.noisy.append(self.noisy[i][t : t + th, l : l + tw])
                out.clean.append(self.clean[i][t : t + th, l : l + tw])
                out.cameras.append(self.cameras[i])
                out.isos.append(self.isos[i])
        return out

    def split(self, test_fraction: float = 0.25, seed: int = 0) -> tuple[SRGBPairs, SRGBPairs]:
        """Held-out split by image, stratified by (camera, ISO): in each group of n images,
        ``round(test_fraction·n)`` (at least 1 when n ≥ 2, none when n = 1) go to test. Deterministic."""
        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}.", "use e.g. 0.25.")
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(self.cameras, self.isos)):
            groups.setdefault(key, []).append(i)
        rng = np.random.default_rng(seed)
        test: list[int] = []
        for key in sorted(groups, key=str):
            members = groups[key]
            n_test = 0 if len(members) < 2 else max(1, int(round(test_fraction * len(members))))
            test += [members[j] for j in rng.permutation(len(members))[:n_test]]
        train = [i for i in range(len(self)) if i not in set(test)]
        if not train and test:
            raise InputError(f"a test fraction of {test_fraction:g} leaves none of the {len(self)} image pair(s) for "
                             "training (each camera/ISO group of n images gives round(fraction x n) to test).",
                             "use a smaller test fraction (--test-fraction), e.g. 0.25.")
        if not train or not test:
            raise DataError(f"cannot split {len(self)} image pair(s) into train and test by image: every camera/ISO "
                            "group has a single image.", "provide at least two pairs of one camera and ISO.")
        return self.subset(train), self.subset(sorted(test))

    def require_cameras(self) -> list[str]:
        """The sorted known cameras; DataError if no pair has a camera label (nothing can be held out by camera)."""
        known = sorted({c for c in self.cameras if c})
        if not known:
            raise DataError(f"none of the {len(self)} pair(s) under {self.root or 'the data'} has a camera label, so "
                            "no camera can be held out.",
                            "use pairs whose names give the camera (e.g. d800_iso3200_1_noisy.png) or a CSV manifest "
                            "with a camera column; `visionflows srgb-noise info` lists the cameras found.")
        return known

    def vocab(self) -> tuple[list[str], list[int]]:
        """Sorted known cameras and ISOs (unknown ones excluded)."""
        return sorted({c for c in self.cameras if c}), sorted({i for i in self.isos if i})

    def check_patch(self, patch: int, name: str = "the patch size") -> None:
        """DataError naming the smallest image if any image is smaller than ``patch`` on a side (``name``: how the
        patch size is called in the message, e.g. a command-line flag)."""
        if not self.noisy:
            return
        if self._smallest is None:  # once: random_patches checks on every batch
            i = min(range(len(self)), key=lambda j: min(self.noisy[j].shape[:2]))
            self._smallest = (i, *self.noisy[i].shape[:2])
        i, h, w = self._smallest
        if min(h, w) < patch:
            raise DataError(f"{name} {patch} is larger than image {self.names[i]} ({w}x{h}); patches are cut from "
                            "every image.", f"use {name} {min(h, w)} or less.")

    def random_patches(self, n: int, patch: int, generator: torch.Generator) -> dict:
        """``n`` random aligned patches, images drawn ∝ their area, positions uniform, random flips.

        Returns ``noisy``/``clean`` ``uint8 [n, 3, patch, patch]`` tensors, ``iso`` LongTensor ``[n]`` (0 =
        unknown) and ``camera`` list of ``n`` names (None = unknown). Deterministic given ``generator``.
        """
        self.check_patch(patch)  # before allocating n patches of that size
        if self._weights is None:
            area = np.array([im.shape[0] * im.shape[1] for im in self.noisy], dtype=np.float64)
            self._weights = area / area.sum()
        w = torch.from_numpy(self._weights)
        imgs = torch.multinomial(w, n, replacement=True, generator=generator).tolist()
        u = torch.rand(n, 3, generator=generator).tolist()
        noisy = np.empty((n, patch, patch, 3), np.uint8)
        clean = np.empty_like(noisy)
        for j, (i, (a, b, f)) in enumerate(zip(imgs, u)):
            h, wd = self.noisy[i].shape[:2]
            t, l = int(a * (h - patch + 1)), int(b * (wd - patch + 1))
            pn = self.noisy[i][t : t + patch, l : l + patch]
            pc = self.clean[i][t : t + patch, l : l + patch]
            if f < 0.5:
                pn, pc = pn[:, ::-1], pc[:, ::-1]
            noisy[j], clean[j] = pn, pc
        return {
            "noisy": torch.from_numpy(noisy).permute(0, 3, 1, 2).contiguous(),
            "clean": torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous(),
            "iso": torch.tensor([self.isos[i] or 0 for i in imgs], dtype=torch.long),
            "camera": [self.cameras[i] for i in imgs],
        }

    def grid_patches(self, patch: int, max_patches: int | None = None, seed: int = 0) -> dict:
        """All non-overlapping patches (same format as :meth:`random_patches`), optionally a seeded subset."""
        noisy, clean, iso, cam = [], [], [], []
        for i in range(len(self)):
            h, w = self.noisy[i].shape[:2]
            for t in range(0, h - patch + 1, patch):
                for l in range(0, w - patch + 1, patch):
                    noisy.append(self.noisy[i][t : t + patch, l : l + patch])
                    clean.append(self.clean[i][t : t + patch, l : l + patch])
                    iso.append(self.isos[i] or 0)
                    cam.append(self.cameras[i])
        if not noisy:
            raise DataError("no image is as large as the patch size.", "use a smaller patch size.")
        idx = np.arange(len(noisy))
        if max_patches is not None and len(idx) > max_patches:
            idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:max_patches])
        to_t = lambda arrs: torch.from_numpy(np.stack([arrs[k] for k in idx])).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return {"noisy": to_t(noisy), "clean": to_t(clean), "iso": torch.tensor([iso[k] for k in idx]),
                "camera": [cam[k] for k in idx]}


def load_pairs(root: str | Path, check_aligned: bool = True, layout: str = "auto",
               on_error: str = "stop") -> SRGBPairs:
    """Load and validate every pair under ``root`` (a folder in ``layout``, or a CSV manifest; see
    :func:`find_pairs`). A pair that cannot be read, whose images differ in size or that is misaligned raises
    DataError naming the file (``on_error="stop"``) or is skipped with one warning naming each (``"skip"``)."""
    check_on_error(on_error)
    layout = detect_layout(root) if layout == "auto" else layout
    pairs = find_pairs(root, layout, on_error)
    names, noisy, clean, cams, isos = [], [], [], [], []
    skipped: list[str] = []
    for p in pairs:
        try:
            a, b = read_png_u8(p.noisy_path), read_png_u8(p.clean_path)
            if a.shape != b.shape:
                raise DataError(f"pair {p.name}: {p.noisy_path} is {a.shape[1]}x{a.shape[0]} but {p.clean_path} "
                                f"is {b.shape[1]}x{b.shape[0]}.", "the noisy and clean images must have the same "
                                "size (or pass --on-error skip to leave the pair out).")
            if check_aligned:
                check_alignment(a, b, str(p.noisy_path))
        except DataError as err:
            if on_error == "stop":
                raise
            skipped.append(err.problem)
            continue
        names.append(p.name)
        noisy.append(a)
        clean.append(b)
        cams.append(p.camera)
        isos.append(p.iso)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} bad pair(s) of {len(pairs)} under {root}: " + " | ".join(skipped[:10])
                      + (" ..." if len(skipped) > 10 else ""), stacklevel=2)
    if not names:
        raise DataError(f"none of the {len(pairs)} pair(s) under {root} could be used.",
                        "fix the files named in the warnings.")
    return SRGBPairs(names, noisy, clean, cams, isos, str(root), layout)
