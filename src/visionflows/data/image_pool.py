"""Training and evaluation images of a model: :class:`ImagePool` (random training crops, a fixed evaluation set)
and :func:`open_images`, which opens a data source (built-in photos, a folder, an ``.npz`` file) as a pool under
the resize / crop / multiscale policies described in :mod:`visionflows.data.images` (which re-exports every name).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from visionflows.data.builtin_photos import BUILTIN_TEST, builtin_photos
from visionflows.data.image_files import (
    _short_side,
    center_square,
    load_folder,
    load_image,
    load_imagenet_npz,
    to_channels,
)
from visionflows.errors import DataError, InputError

__all__ = ["TRAIN_SCALES", "ImagePool", "grid_crops", "open_images", "random_crops"]

#: short sides, as multiples of the model's resolution, of the copies a folder's training photos are cropped from
TRAIN_SCALES = (1.0, 1.25, 1.5, 2.0)


# ------------------------------------------------------------------------------------------------ sampling
def random_crops(
    images: Sequence[Tensor] | Tensor, n: int, size: int, generator: torch.Generator | None = None, flip: bool = False
) -> Tensor:
    """``n`` random ``size × size`` crops (uniform image, uniform integer offset, optional left-right flip).

    Returns uint8 ``[n, C, size, size]``. Deterministic given ``generator``.
    """
    for name, v in (("n", n), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"random crops: {name} must be an integer ≥ 1, got {v!r}.",
                             "pass the number of crops and their side as positive ints.")
    count = len(images)
    idx = torch.randint(0, count, (n,), generator=generator)
    out = []
    for k in idx.tolist():
        img = images[k]
        _, h, w = img.shape
        if h < size or w < size:
            raise DataError(f"image {k} is {h}×{w}, smaller than the {size}×{size} crop.", "use larger images.")
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        crop = img[:, top : top + size, left : left + size]
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out).contiguous()


class ImagePool:
    """Images for training (random crops) and evaluation (a fixed set), uint8 in [0, 255].

    Args:
        images: uint8 ``[C, H, W]`` tensors (sizes may differ) or one ``[N, C, H, W]`` tensor.
        resolution: the model's image side.
        policy: ``"resize"`` (images are already ``resolution`` squares; eval = the images), ``"crop"``
            (images are rescaled to ``short_side``; eval = a grid of non-overlapping ``resolution`` crops) or
            ``"multiscale"`` (training crops come from copies of every image rescaled so its short side is
            ``m·resolution`` for each ``m`` of ``scales`` that does not upscale it — ``m = 1`` always —, one copy
            drawn uniformly per crop; eval = the centre squares resized to ``resolution``, the ``"resize"`` images).
        eval_images: an explicit held-out set (uint8 ``[N, C, r, r]``), else derived from ``images``.
        source: a description for logs and errors.
        scales: short-side multipliers of the ``"multiscale"`` policy (default :data:`TRAIN_SCALES`).
    """

    def __init__(
        self,
        images: Sequence[Tensor] | Tensor,
        resolution: int,
        policy: str = "resize",
        short_side: int | None = None,
        eval_images: Tensor | None = None,
        source: str = "",
        max_eval: int = 256,
        scales: Sequence[float] | None = None,
    ) -> None:
        if policy not in ("resize", "crop", "multiscale"):
            raise InputError(f"unknown crop policy {policy!r}; use 'resize', 'crop' or 'multiscale'.")
        self.resolution, self.policy, self.source = int(resolution), policy, source
        imgs = list(images)
        if not imgs:
            raise DataError(f"no images in {source or 'the data source'}.")
        self.n_photos = len(imgs)
        if policy == "multiscale":
            self.scales = tuple(float(m) for m in (TRAIN_SCALES if scales is None else scales))
            if not self.scales or any(not math.isfinite(m) or m < 1.0 for m in self.scales):
                raise InputError(f"multiscale short-side multipliers must be finite and ≥ 1, got {self.scales}.",
                                 "use multipliers like (1, 1.25, 1.5, 2).")
            if eval_images is None:
                eval_images = torch.stack([center_square(im, resolution) for im in imgs[:max_eval]])
            imgs = _rescaled_copies(imgs, resolution, self.scales)
        elif policy == "crop":
            short = int(short_side or 4 * resolution)
            imgs = [_short_side(im, max(short, resolution)) for im in imgs]
        else:
            imgs = [im if im.shape[-2:] == (resolution, resolution) else center_square(im, resolution) for im in imgs]
        self.images = imgs
        self.channels = int(imgs[0].shape[0])
        if eval_images is None:
            if policy == "resize":
                eval_images = torch.stack(imgs[:max_eval])
            else:
                eval_images = grid_crops(imgs, resolution, max_eval)
        self.eval_images = eval_images

    def __len__(self) -> int:
        """The number of training images (for ``"multiscale"``: rescaled copies; ``n_photos`` counts sources)."""
        return len(self.images)

    def crops(self, n: int, size: int, generator: torch.Generator | None = None, flip: bool = False) -> Tensor:
        """``n`` random training crops ``[n, C, size, size]``."""
        return random_crops(self.images, n, size, generator, flip)

    def __repr__(self) -> str:
        return f"ImagePool({self.source!r}, n={len(self.images)}, resolution={self.resolution}, policy={self.policy})"


def _rescaled_copies(images: Sequence[Tensor], resolution: int, scales: Sequence[float]) -> list[Tensor]:
    """Every image rescaled (antialiased bicubic) to short side ``round(m·resolution)`` for each ``m`` in
    ``scales`` that does not enlarge it beyond its own short side; the ``m = 1`` copy always (upscaled if small)."""
    out = []
    for im in images:
        short = min(im.shape[-2:])
        sides = sorted({max(resolution, round(m * resolution)) for m in scales} | {resolution})
        for side in sides:
            if side == resolution or side <= short:
                out.append(_short_side(im, side))
    return out


def grid_crops(images: Sequence[Tensor], size: int, max_n: int = 256) -> Tensor:
    """Non-overlapping ``size`` crops on a regular grid of every image (deterministic), at most ``max_n``."""
    out = []
    for img in images:
        _, h, w = img.shape
        for top in range(0, h - size + 1, size):
            for left in range(0, w - size + 1, size):
                out.append(img[:, top : top + size, left : left + size])
    if not out:
        raise DataError(f"images are smaller than the {size}×{size} evaluation crop.")
    if len(out) > max_n:  # spread the kept crops over all images
        keep = torch.linspace(0, len(out) - 1, max_n).round().long().tolist()
        out = [out[k] for k in keep]
    return torch.stack(out).contiguous()


def open_images(
    spec: str | os.PathLike | None,
    resolution: int,
    channels: int = 3,
    split: str = "train",
    on_error: str = "skip",
    short_side: int | None = None,
) -> ImagePool:
    """Open a data source as an :class:`ImagePool`.

    ``spec``: ``None`` / ``"builtin"`` (scikit-image photos, ``split`` train/test, crop policy), a folder of
    PNG/JPEG images (resize policy), or a downsampled-ImageNet ``.npz`` file (resize policy; greyscale models get
    luma). The pool's ``eval_images`` for the built-in source come from the held-out photos.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise InputError(f"resolution must be an integer ≥ 1, got {resolution!r}.", "pass the model's image side.")
    if spec is None or str(spec) == "builtin":
        photos = builtin_photos(split, channels)
        held = builtin_photos("test", channels)
        short = short_side or 4 * resolution
        eval_imgs = grid_crops([_short_side(im, short) for im in held], resolution)
        desc = f"builtin photos ({split}; evaluation on held-out {', '.join(BUILTIN_TEST)})"
        return ImagePool(photos, resolution, "crop", short, eval_imgs, desc)
    path = Path(spec)
    if path.suffix.lower() == ".npz":
        imgs = load_imagenet_npz(path)
        if imgs.shape[-1] != resolution:
            raise DataError(
                f"{path} holds {imgs.shape[-1]}×{imgs.shape[-1]} images but the model is {resolution}×{resolution}.",
                "use the ImageNet file of the model's resolution.",
            )
        if channels != 3:
            imgs = torch.stack([to_channels(im, channels) for im in imgs])
        return ImagePool(imgs, resolution, "resize", source=str(path))
    if path.is_dir():
        if split == "train":  # random crops at several scales (and the preset's flips) from the full photos
            return ImagePool(load_folder(path, channels, None, on_error), resolution, "multiscale", source=str(path))
        return ImagePool(load_folder(path, channels, resolution, on_error), resolution, "resize", source=str(path))
    if path.is_file():
        img = load_image(path, channels)
        return ImagePool([img], resolution, "crop", short_side, source=str(path))
    raise DataError(f"data source {spec} does not exist.", "give a folder of images, an .npz file or 'builtin'.")
