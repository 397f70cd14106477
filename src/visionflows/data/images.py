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

The code lives in three modules, re-exported here: decoding and file loaders in
:mod:`visionflows.data.image_files`, the built-in photos in :mod:`visionflows.data.builtin_photos`, and the pool
with its crop policies in :mod:`visionflows.data.image_pool`.
"""

from __future__ import annotations

from visionflows.data.builtin_photos import BUILTIN_PHOTOS, BUILTIN_TEST, builtin_photo, builtin_photos
from visionflows.data.image_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    center_square,
    list_images,
    load_folder,
    load_image,
    load_imagenet_npz,
    max_image_pixels,
    read_image_array,
    to_channels,
)
from visionflows.data.image_pool import (
    TRAIN_SCALES,
    ImagePool,
    grid_crops,  # noqa: F401  (public here as before, not in __all__)
    open_images,
    random_crops,
)

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
