"""SIDD-Medium Raw reader: the official split, finding a root's images, and the streaming patch dataset.

File formats are read by :mod:`visionflows.data.sidd_files`, packing by :mod:`visionflows.data.bayer` (both
re-exported here).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from visionflows.data.bayer import pack_raw, tile_patches, unpack_raw
from visionflows.data.sidd_files import (
    MAKE_TO_CAMERA,
    SceneInfo,
    SiddMetadata,
    parse_scene_folder,
    read_metadata,
    read_raw_mat,
)
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
