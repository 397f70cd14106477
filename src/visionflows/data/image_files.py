"""Reading image files: decoding (:func:`read_image_array`), single images, folders and downsampled-ImageNet
``.npz`` files, as uint8 tensors ``[C, H, W]`` (or ``[N, C, r, r]``) in [0, 255]; plus the resizing helpers
(:func:`center_square`). The policies and the decoding rules are described in :mod:`visionflows.data.images`,
which re-exports every name.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionflows.errors import DataError, InputError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "center_square",
    "list_images",
    "load_folder",
    "load_image",
    "load_imagenet_npz",
    "max_image_pixels",
    "read_image_array",
    "to_channels",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: decoded images larger than this many pixels are refused (decompression-bomb guard)
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: environment variable that raises (or lowers) the limit
MAX_PIXELS_ENV = "VISIONFLOWS_MAX_IMAGE_PIXELS"


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
    if not isinstance(img, Tensor) or img.dim() != 3:
        got = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
        raise InputError(f"center_square needs one uint8 image tensor [C, H, W], got {got}.",
                         "load it with visionflows.data.image_files.load_image (or torch.as_tensor).")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
        raise InputError(f"resolution must be an integer ≥ 1, got {resolution!r}.", "pass the model's image side.")
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
        from visionflows.data.raw_files import is_pickle_refusal

        if is_pickle_refusal(err):
            raise DataError(f"{path} is not an .npz archive of numeric arrays: it is not in NumPy's format (e.g. a "
                            "text file renamed .npz) or it holds Python objects.",
                            "use a downsampled-ImageNet .npz (train_data_batch_*.npz / val_data.npz) as "
                            "published: re-download it.") from None
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
