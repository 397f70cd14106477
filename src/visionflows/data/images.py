"""Image data for Wavelet Flow: image folders, downsampled-ImageNet ``.npz`` files and built-in photos.

Every loader returns uint8 tensors ``[C, H, W]`` (or ``[N, C, r, r]``) in [0, 255]; models dequantise inside.

Resize / crop policy (documented, deterministic where it matters):

* ``"resize"`` (``.npz`` files, and folders opened for evaluation): centre-crop each image to its largest square,
  then resize to ``resolution`` with PIL's antialiased bicubic filter. Evaluation uses exactly these images;
  training draws random sub-crops of side ``resolution / c_L`` (a level's crop factor) and optional flips.
* ``"multiscale"`` (folders opened for training, ``split="train"``): random crops at several scales — every photo
  is rescaled so its short side is ``m·resolution`` for each ``m`` of :data:`TRAIN_SCALES` (1, 1.25, 1.5, 2; never
  enlarging a photo except to reach ``m = 1``), and each training crop comes from one copy drawn uniformly (with
  the optional flips). ``m = 1`` is the scale of the evaluation images, the ``"resize"`` centre squares, which
  stay the pool's ``eval_images``.
* ``"crop"`` (default for the built-in photos): rescale each image so its short side is ``short_side`` pixels
  (default ``4·resolution``), then take random ``resolution``-sized crops for training and a fixed grid of
  non-overlapping crops for evaluation.

Corrupt or unreadable images are never dropped silently: ``on_error="skip"`` warns once naming the skipped
files, ``on_error="stop"`` raises :class:`~visionflows.errors.DataError`; a folder where nothing is readable is
one error (no warnings).

Decoding (:func:`read_image_array`, used by every loader of the package, the sRGB pairs included): 8-bit images
as they are; 16-bit images scaled to 8 bits by keeping the high byte (``v >> 8``, what PIL does for 16-bit
RGB), so a 16-bit PNG gives the same pixels as its 8-bit version. Images whose header claims more than
:func:`max_image_pixels` pixels (default 100 megapixels; raise it with the ``VISIONFLOWS_MAX_IMAGE_PIXELS``
environment variable) are refused before decoding, a guard against decompression bombs.

Built-in photos (no download): real photographs bundled with scikit-image (``skimage.data``). The held-out split
is ``chelsea`` and ``coffee``; the training split is the other seven.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import DataError, InputError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "max_image_pixels",
    "read_image_array",
    "BUILTIN_PHOTOS",
    "BUILTIN_TEST",
    "IMAGE_EXTENSIONS",
    "TRAIN_SCALES",
    "ImagePool",
    "builtin_photo",
    "builtin_photos",
    "center_square",
    "list_images",
    "load_folder",
    "load_image",
    "load_imagenet_npz",
    "open_images",
    "random_crops",
    "to_channels",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: short sides, as multiples of the model's resolution, of the copies a folder's training photos are cropped from
TRAIN_SCALES = (1.0, 1.25, 1.5, 2.0)
#: decoded images larger than this many pixels are refused (decompression-bomb guard)
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: environment variable that raises (or lowers) the limit
MAX_PIXELS_ENV = "VISIONFLOWS_MAX_IMAGE_PIXELS"
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


# ------------------------------------------------------------------------------------------------ basics
def to_channels(img: Tensor, channels: int, name: str = "image") -> Tensor:
    """uint8 ``[C, H, W]`` → ``channels`` channels (RGB ↔ grey with ITU-R 601 luma weights, alpha dropped)."""
    c = img.shape[0]
    if c == channels:
        return img
    if c == 4:
        img, c = img[:3], 3
        if channels == 3:
            return img
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (img.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if c == 1 and channels == 3:
        return img.expand(3, -1, -1).clone()
    raise InputError(f"{name} has {c} channel(s); cannot convert to {channels}.", "use RGB or greyscale images.")


def max_image_pixels() -> int:
    """The decoded-size limit: ``$VISIONFLOWS_MAX_IMAGE_PIXELS`` if set, else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive number of pixels.",
                         f"set it to e.g. {DEFAULT_MAX_IMAGE_PIXELS * 4} or unset it.")
    return value


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file → uint8 ``[H, W]`` (greyscale) or ``[H, W, 3]`` (colour; alpha dropped).

    16-bit images are scaled to 8 bits (``v >> 8``); 32-bit float images must hold values in [0, 1] or
    [0, 255]. :class:`DataError` for a missing, corrupt or oversized file (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file.", "give the path of a .png/.jpg image.")
    limit = max_image_pixels()
    try:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a message that says how to raise it
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
        with im:
            w, h = im.size
            if w * h > limit:
                raise DataError(
                    f"image {path} is {w}x{h} = {w * h:,} pixels, above the limit of {limit:,} pixels (a guard "
                    "against decompression bombs).",
                    f"if the image is genuine, raise the limit: export {MAX_PIXELS_ENV}={w * h}.",
                )
            if w == 0 or h == 0:
                raise DataError(f"image {path} is empty ({w}x{h}).", "replace or delete the file.")
            im.load()
            mode = im.mode
            if mode.startswith("I"):  # 16-bit (or 32-bit integer) greyscale
                arr = np.asarray(im).astype(np.int64)
                sixteen = mode.startswith("I;16") or _png_bit_depth(path) == 16 or arr.max(initial=0) > 255
                arr = (np.clip(arr, 0, 65535) >> 8 if sixteen else np.clip(arr, 0, 255)).astype(np.uint8)
            elif mode == "F":
                f = np.nan_to_num(np.asarray(im, dtype=np.float64))
                arr = np.clip(np.round(f * 255.0 if f.max(initial=0) <= 1.0 else f), 0, 255).astype(np.uint8)
            elif mode in _GREY_MODES:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"image {path} does not exist.", "check the path.") from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}.", "replace or delete the corrupt file.") from err
    return arr


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk (None for other files)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 26:
        return None
    return int(head[24])


def load_image(path: str | os.PathLike, channels: int | None = 3) -> Tensor:
    """Read an image file → uint8 ``[channels, H, W]``; :class:`DataError` if unreadable or corrupt.

    ``channels=None`` keeps the file's own colour mode: 1 for greyscale, 3 otherwise (alpha dropped). Decoding
    (16-bit scaling, the size limit) is :func:`read_image_array`'s.
    """
    arr = read_image_array(path)
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()
    return t if channels is None else to_channels(t, channels, str(path))


def center_square(img: Tensor, resolution: int | None = None) -> Tensor:
    """Centre-crop uint8 ``[C, H, W]`` to its largest square, then resize to ``resolution`` (antialiased bicubic)."""
    c, h, w = img.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = img[:, top : top + s, left : left + s]
    if resolution is None or resolution == s:
        return sq.contiguous()
    return _resize(sq, resolution, resolution)


def _resize(img: Tensor, height: int, width: int) -> Tensor:
    from PIL import Image

    arr = img.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(im.resize((width, height), Image.BICUBIC), dtype=np.uint8)
    t = torch.from_numpy(out.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def _short_side(img: Tensor, short: int) -> Tensor:
    _, h, w = img.shape
    if min(h, w) == short:
        return img
    f = short / min(h, w)
    return _resize(img, max(short, round(h * f)), max(short, round(w * f)))


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files (PNG/JPEG, case-insensitive) under ``root``, recursively, sorted; :class:`DataError` if none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory.", "check the --data path.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no PNG/JPEG images found under {root}.", "point --data at a folder of .png/.jpg images.")
    return files


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "stop"):
        raise InputError(f"on_error must be 'skip' or 'stop', got {on_error!r}.")


def load_folder(
    root: str | os.PathLike, channels: int = 3, resolution: int | None = None, on_error: str = "skip"
) -> list[Tensor]:
    """Every image under ``root`` as uint8 ``[C, H, W]`` (``resolution``: centre square resized to it).

    Corrupt files: ``on_error="skip"`` warns with the file name and skips it, ``"stop"`` raises
    :class:`DataError`. A folder where nothing is readable raises :class:`DataError`.
    """
    _check_on_error(on_error)
    out: list[Tensor] = []
    skipped: list[tuple[Path, str, str | None]] = []
    files = list_images(root)
    for path in files:
        try:
            img = load_image(path, channels)
        except DataError as err:
            if on_error == "stop":
                raise
            skipped.append((path, err.problem, err.fix))
            continue
        out.append(center_square(img, resolution) if resolution else img)
    if not out:
        first, fix = (skipped[0][1], skipped[0][2]) if skipped else ("no images", None)
        raise DataError(f"none of the {len(files)} image(s) under {root} could be read (first: {first})",
                        fix if fix and "limit" in first else
                        "replace or delete the corrupt files, or point --data at another folder.")
    if skipped:
        names = "; ".join(str(p) for p, _, _ in skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5
                                                              else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) of {len(files)} under {root}: {names} "
                      f"(first problem: {skipped[0][1]})", stacklevel=2)
    return out


def load_imagenet_npz(
    path: str | os.PathLike, resolution: int | None = None, return_labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Downsampled ImageNet (Chrabaszcz et al. 2017) ``.npz``: ``data`` uint8 ``[N, 3·r²]`` channel-planar.

    Returns uint8 ``[N, 3, r, r]`` (and the ``labels`` as stored, 1-based, if ``return_labels``).
    """
    import zipfile

    path = Path(path)
    if path.is_dir():
        raise DataError(f"ImageNet file {path} is a folder, not an .npz file.", "check the --data path.")
    if not path.is_file():
        raise DataError(f"ImageNet file {path} does not exist.", "check the --data path.")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "data" not in f:
                raise DataError(f"{path} has no 'data' array (keys: {sorted(f.keys())}).",
                                "use a downsampled-ImageNet .npz (train_data_batch_*.npz / val_data.npz).")
            data = np.asarray(f["data"])
            labels = np.asarray(f["labels"]) if "labels" in f else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path}: {err or type(err).__name__}.",
                        "the file is corrupt or not an .npz archive: re-download it.") from err
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be uint8 [N, 3·r²], got {data.dtype} {data.shape}.",
                        "use a downsampled-ImageNet .npz (train_data_batch_*.npz / val_data.npz).")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(f"{path}: 'data' holds no images (shape {data.shape}).", "use a non-empty ImageNet file.")
    r = int(round(math.sqrt(data.shape[1] / 3)))
    if 3 * r * r != data.shape[1] or (resolution is not None and r != resolution):
        raise DataError(
            f"{path}: rows of {data.shape[1]} values are not 3×{resolution or 'r'}×{resolution or 'r'} images.",
            "use the ImageNet file matching the model's resolution (32 or 64).",
        )
    images = torch.from_numpy(data.reshape(-1, 3, r, r).copy())
    if return_labels:
        return images, torch.from_numpy(labels.astype(np.int64)) if labels is not None else torch.zeros(0)
    return images


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


# ------------------------------------------------------------------------------------------------ sampling
def random_crops(
    images: Sequence[Tensor] | Tensor, n: int, size: int, generator: torch.Generator | None = None, flip: bool = False
) -> Tensor:
    """``n`` random ``size × size`` crops (uniform image, uniform integer offset, optional left-right flip).

    Returns uint8 ``[n, C, size, size]``. Deterministic given ``generator``.
    """
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
