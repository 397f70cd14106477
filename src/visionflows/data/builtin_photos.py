"""Built-in photos (no download): real photographs bundled with scikit-image (``skimage.data``), as uint8
``[C, H, W]``. The held-out split is :data:`BUILTIN_TEST` (``chelsea`` and ``coffee``); the training split is the
other seven. Re-exported by :mod:`visionflows.data.images`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionflows.data.image_files import load_image, to_channels
from visionflows.errors import InputError

__all__ = ["BUILTIN_PHOTOS", "BUILTIN_TEST", "builtin_photo", "builtin_photos"]

BUILTIN_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
)
BUILTIN_TEST = ("chelsea", "coffee")
_BUILTIN_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
}


def builtin_photos(split: str = "train", channels: int = 3) -> list[Tensor]:
    """Real photos bundled with scikit-image, uint8 ``[C, H, W]`` at native size (no download).

    ``split``: ``"train"`` (all but :data:`BUILTIN_TEST`), ``"test"`` (``chelsea``, ``coffee``) or ``"all"``.
    """

    if split not in ("train", "test", "all"):
        raise InputError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    names = [
        n for n in BUILTIN_PHOTOS
        if split == "all" or (n in BUILTIN_TEST) == (split == "test")
    ]
    return [builtin_photo(name, channels) for name in names]


def builtin_photo(name: str, channels: int = 3) -> Tensor:
    """One photo bundled with scikit-image (a name of :data:`BUILTIN_PHOTOS`), uint8 ``[C, H, W]``."""
    from skimage import data as skdata

    if name not in BUILTIN_PHOTOS:
        raise InputError(f"unknown built-in photo {name!r}.", f"use one of {', '.join(BUILTIN_PHOTOS)}.")
    path = Path(skdata.data_dir) / _BUILTIN_FILES[name]
    if path.is_file():
        return load_image(path, channels)
    arr = np.asarray(getattr(skdata, name)(), dtype=np.uint8)  # fall back to skimage's own loader
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()
    return to_channels(t, channels, f"skimage.data.{name}")
