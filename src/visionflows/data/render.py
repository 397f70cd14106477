"""Raw → sRGB rendering: the forward direction of the simulator's unprocessing (:mod:`visionflows.data.simulated`).

Per image: unpack the 4 channels to the Bayer mosaic, bilinear demosaic (each colour plane interpolated from its
own samples), white balance (divide by the AsShotNeutral), colour correction camera RGB → linear sRGB (the
inverse of ``rgb2cam = normalise_rows(ColorMatrix · M_sRGB→XYZ)``, as Brooks et al. 2019), an exposure gain,
clip to [0, 1], gamma 1/2.2 and the smoothstep tone curve ``3x² − 2x³``; 8-bit output.

So a user sees synthetic noise as a photo shows it (demosaicing, colour correction and the tone curve all
change how noise looks: the colour matrix amplifies chroma noise, the tone curve lifts it in the shadows). The
exposure gain defaults to the one that puts the 99th percentile of the *clean* (reference) image at 0.9 after
white balance and colour correction, so clean, real and synthetic versions of a scene share one gain.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve

from visionflows.cameras.specs import RGB2XYZ
from visionflows.errors import InputError

__all__ = ["unpack_packed", "demosaic_bilinear", "render_mosaic", "render_packed", "auto_gain", "tile_patches",
           "comparison_figure"]

_OFFSETS = ((0, 0), (0, 1), (1, 1), (1, 0))
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0


def unpack_packed(packed: np.ndarray, colors: tuple[int, ...], transposed: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Packed [4, h, w] → (mosaic [2h, 2w], colour map [2h, 2w] of 0 R / 1 G / 2 B), offsets as
    :func:`~visionflows.data.dng.pack_bayer`. ``transposed``: the packing was done on the transposed sensor
    array (SIDD ``.MAT`` files and the built-in simulator, noiseflow.md §7); the result is in sensor orientation."""
    p = np.asarray(packed, np.float64)
    if p.ndim != 3 or p.shape[0] != 4 or len(colors) != 4 or any(c not in (0, 1, 2) for c in colors):
        raise InputError(f"expected packed raw [4, h, w] and 4 channel colours, got {p.shape} and {colors}.",
                         "pack the Bayer image first.")
    h, w = p.shape[1:]
    mosaic, cmap = np.empty((2 * h, 2 * w)), np.empty((2 * h, 2 * w), np.int64)
    for c, (dy, dx) in enumerate(_OFFSETS):
        mosaic[dy::2, dx::2] = p[c]
        cmap[dy::2, dx::2] = colors[c]
    return (mosaic.T, cmap.T) if transposed else (mosaic, cmap)


def demosaic_bilinear(mosaic: np.ndarray, cmap: np.ndarray) -> np.ndarray:
    """Bilinear demosaic: [H, W] mosaic + colour map → camera RGB [H, W, 3] (measured samples kept)."""
    out = np.empty((*mosaic.shape, 3))
    for c in range(3):
        mask = (cmap == c).astype(np.float64)
        k = _K_G if c == 1 else _K_RB
        num = convolve(mosaic * mask, k, mode="mirror")
        den = convolve(mask, k, mode="mirror")
        out[..., c] = np.where(mask > 0, mosaic, num / np.maximum(den, 1e-12))
    return out


def _cam2rgb(color_matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(color_matrix, np.float64) @ RGB2XYZ
    return np.linalg.inv(m / m.sum(axis=1, keepdims=True))


def _linear_srgb(cam: np.ndarray, neutral: np.ndarray, color_matrix: np.ndarray) -> np.ndarray:
    wb = cam / np.asarray(neutral, np.float64)
    return wb @ _cam2rgb(color_matrix).T


def auto_gain(linear_rgb: np.ndarray) -> float:
    """Exposure gain putting the 99th percentile of ``linear_rgb`` at 0.9 (1 for an all-black image)."""
    q = float(np.percentile(linear_rgb, 99))
    return 0.9 / q if q > 1e-8 else 1.0


def _tone(linear: np.ndarray, gain: float) -> np.ndarray:
    x = np.clip(linear * gain, 0.0, 1.0) ** (1 / 2.2)
    x = 3 * x * x - 2 * x * x * x  # smoothstep tone curve (the inverse of unprocessing's)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def render_mosaic(mosaic: np.ndarray, cmap: np.ndarray, as_shot_neutral, color_matrix,
                  gain: float | None = None) -> tuple[np.ndarray, float]:
    """(sRGB uint8 [H, W, 3], the gain used) of a normalised Bayer mosaic (module docstring)."""
    neutral = np.asarray(as_shot_neutral, np.float64)
    if neutral.shape != (3,) or not np.all(neutral > 0):
        raise InputError(f"AsShotNeutral must be 3 positive numbers, got {as_shot_neutral}.",
                         "take it from the raw file's metadata, or use the camera's (e.g. 0.5, 1, 0.6).")
    lin = _linear_srgb(demosaic_bilinear(mosaic, cmap), neutral, color_matrix)
    g = auto_gain(lin) if gain is None else float(gain)
    return _tone(lin, g), g


def render_packed(packed: np.ndarray, colors: tuple[int, ...], as_shot_neutral, color_matrix,
                  gain: float | None = None, transposed: bool = False) -> tuple[np.ndarray, float]:
    """(sRGB uint8 [2h, 2w, 3], gain) of packed raw [4, h, w] in [0, 1] (see :func:`unpack_packed`)."""
    mosaic, cmap = unpack_packed(packed, colors, transposed)
    return render_mosaic(mosaic, cmap, as_shot_neutral, color_matrix, gain)


def tile_patches(patches: np.ndarray, side: int) -> np.ndarray:
    """``side²`` patches [side², 4, p, p] (row-major, as the simulated datasets cut them) → one [4, side·p, side·p]."""
    n, c, p, _ = patches.shape
    if n < side * side:
        raise InputError(f"{n} patches cannot tile a {side}×{side} image.", "give side² patches of one image.")
    grid = np.asarray(patches[: side * side]).reshape(side, side, c, p, p).transpose(2, 0, 3, 1, 4)
    return grid.reshape(c, side * p, side * p)


def comparison_figure(images: dict[str, np.ndarray], colors: tuple[int, ...], as_shot_neutral, color_matrix,
                      path: str, transposed: bool = True, title: str = "") -> float:
    """One PNG of packed raw ``images`` (name → [4, h, w]) rendered side by side with the gain of the first
    (the clean one); returns the gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    first, gain = render_packed(images[names[0]], colors, as_shot_neutral, color_matrix, None, transposed)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.9), dpi=120, squeeze=False)
    for ax, name in zip(axes[0], names):
        img = first if name == names[0] else render_packed(images[name], colors, as_shot_neutral, color_matrix,
                                                           gain, transposed)[0]
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return gain
