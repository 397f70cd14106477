"""Bayer mosaics packed as 4 half-resolution planes, and non-overlapping patches (SIDD's packing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from visionflows.errors import InputError

__all__ = ["pack_raw", "unpack_raw", "tile_patches"]


def _check_bayer(bayer: Any, name: str = "bayer") -> None:
    if not isinstance(bayer, (np.ndarray, torch.Tensor)):
        raise InputError(f"{name} must be a numpy array or a torch.Tensor, got {type(bayer).__name__}.",
                         "convert it with numpy.asarray.")
    if bayer.ndim < 2 or bayer.shape[-1] % 2 or bayer.shape[-2] % 2 or bayer.shape[-1] == 0:
        raise InputError(
            f"{name} must be [..., H, W] with even H and W > 0, got shape {tuple(bayer.shape)}.",
            "Crop the Bayer image to even dimensions before packing.",
        )


def pack_raw(bayer: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Pack a Bayer image [..., H, W] into [..., 4, H/2, W/2].

    Channel order = offsets (0,0), (0,1), (1,1), (1,0) (official ``pack_raw``). Works on numpy and torch.
    """
    _check_bayer(bayer)
    planes = [bayer[..., 0::2, 0::2], bayer[..., 0::2, 1::2], bayer[..., 1::2, 1::2], bayer[..., 1::2, 0::2]]
    if isinstance(bayer, torch.Tensor):
        return torch.stack(planes, dim=-3)
    return np.stack(planes, axis=-3)


def unpack_raw(packed: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`pack_raw`: [..., 4, h, w] -> [..., 2h, 2w]."""
    if not isinstance(packed, (np.ndarray, torch.Tensor)):
        raise InputError(f"packed must be a numpy array or a torch.Tensor, got {type(packed).__name__}.",
                         "convert it with numpy.asarray.")
    if packed.ndim < 3 or packed.shape[-3] != 4:
        raise InputError(
            f"packed must be [..., 4, h, w], got shape {tuple(packed.shape)}.", "Pass a packed Bayer array."
        )
    *lead, _, h, w = packed.shape
    if isinstance(packed, torch.Tensor):
        out = packed.new_empty((*lead, 2 * h, 2 * w))
    else:
        out = np.empty((*lead, 2 * h, 2 * w), dtype=packed.dtype)
    out[..., 0::2, 0::2] = packed[..., 0, :, :]
    out[..., 0::2, 1::2] = packed[..., 1, :, :]
    out[..., 1::2, 1::2] = packed[..., 2, :, :]
    out[..., 1::2, 0::2] = packed[..., 3, :, :]
    return out


def tile_patches(packed: np.ndarray, patch: int = 32, max_patches: int | None = 2898) -> np.ndarray:
    """Non-overlapping ``patch``×``patch`` tiles of a packed image [C, h, w] on a stride-``patch`` grid.

    Row-major order (official ``sample_indices_uniform``), truncated to the first ``max_patches``
    (2898 officially; None = all). Returns [N, C, patch, patch] (a copy).
    """
    if packed.ndim != 3 or patch <= 0:
        raise InputError(
            f"tile_patches needs a [C, h, w] array and patch > 0, got shape {packed.shape}, patch {patch}.",
            "Pass one packed image.",
        )
    c, h, w = packed.shape
    nh, nw = h // patch, w // patch
    tiles = packed[:, : nh * patch, : nw * patch].reshape(c, nh, patch, nw, patch)
    tiles = tiles.transpose(1, 3, 0, 2, 4).reshape(nh * nw, c, patch, patch)
    if max_patches is not None:
        tiles = tiles[:max_patches]
    return np.ascontiguousarray(tiles)
