"""Volume-preserving reshapes: the 2x2 squeeze and the Haar wavelet step."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from visionflows.errors import InputError
from visionflows.flows.base import Bijector, logdet_dtype, zeros_logdet

__all__ = ["Squeeze", "HaarStep", "haar_kernel"]


def _check_even(x: Tensor, what: str) -> None:
    if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise InputError(
            f"{what} needs [B, C, H, W] with even H and W, got shape {tuple(x.shape)}.",
            "crop or pad the image to an even (ideally power-of-two) size.",
        )


class Squeeze(Bijector):
    """Space-to-depth by 2: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` (``pixel_unshuffle``), log-det 0."""

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        _check_even(x, "Squeeze")
        return F.pixel_unshuffle(x, 2), zeros_logdet(x)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        if z.dim() != 4 or z.shape[1] % 4:
            raise InputError(f"Squeeze.inverse needs 4k channels, got shape {tuple(z.shape)}.")
        return F.pixel_shuffle(z, 2), zeros_logdet(z)


def haar_kernel(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """The orthonormal 2x2 Haar analysis kernel ``[4, 1, 2, 2]``: rows s, d1 (left−right), d2 (top−bottom), d3."""
    k = torch.tensor(
        [
            [[0.5, 0.5], [0.5, 0.5]],
            [[0.5, -0.5], [0.5, -0.5]],
            [[0.5, 0.5], [-0.5, -0.5]],
            [[0.5, -0.5], [-0.5, 0.5]],
        ],
        dtype=dtype,
        device=device,
    )
    return k[:, None]


class HaarStep(Bijector):
    """One Haar wavelet step ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` = ``[low (C) | details (3C)]``.

    Details are grouped per colour as in the official Wavelet Flow: detail channel ``3c + (j−1)`` holds
    ``d_j`` of colour ``c`` (d1 left−right, d2 top−bottom, d3 diagonal), each ``(±a ± b ± c ± d)/2``.
    The low-pass is the orthonormal ``(a+b+c+d)/2``; with ``compensate=True`` it is the 2x2 block *mean*
    (×½), which keeps it in pixel range and adds ``log|det| = −C·(H/2)·(W/2)·ln 2``. Without compensation the
    step is orthonormal (log-det 0).
    """

    def __init__(self, compensate: bool = False) -> None:
        super().__init__()
        self.compensate = bool(compensate)
        self.register_buffer("kernel", haar_kernel(), persistent=False)

    def extra_repr(self) -> str:
        return f"compensate={self.compensate}"

    def _logdet(self, low: Tensor, batch: int, like: Tensor) -> Tensor:
        if not self.compensate:
            return zeros_logdet(like)
        n = low[0].numel()
        return torch.full((batch,), -n * math.log(2.0), dtype=logdet_dtype(like), device=like.device)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x -> (low [B,C,H/2,W/2], details [B,3C,H/2,W/2], logdet [B])``."""
        _check_even(x, "HaarStep")
        b, c, h, w = x.shape
        coeffs = F.conv2d(x.reshape(b * c, 1, h, w), self.kernel.to(x.dtype), stride=2)
        coeffs = coeffs.reshape(b, c, 4, h // 2, w // 2)
        low = coeffs[:, :, 0]
        if self.compensate:
            low = low * 0.5
        details = coeffs[:, :, 1:].reshape(b, 3 * c, h // 2, w // 2)
        return low, details, self._logdet(low, b, x)

    def merge(self, low: Tensor, details: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`split`: ``(low, details) -> (x, logdet of the inverse)``."""
        b, c, h, w = low.shape
        if details.shape != (b, 3 * c, h, w):
            raise InputError(
                f"Haar details shape {tuple(details.shape)} does not match low-pass {tuple(low.shape)} "
                f"(expected {(b, 3 * c, h, w)})."
            )
        s = low * 2.0 if self.compensate else low
        coeffs = torch.cat([s[:, :, None], details.reshape(b, c, 3, h, w)], dim=2).reshape(b * c, 4, h, w)
        x = F.conv_transpose2d(coeffs, self.kernel.to(low.dtype), stride=2).reshape(b, c, 2 * h, 2 * w)
        return x, -self._logdet(low, b, low)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        low, details, ld = self.split(x)
        return torch.cat([low, details], dim=1), ld

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        if z.dim() != 4 or z.shape[1] % 4:
            raise InputError(f"HaarStep.inverse needs 4C channels, got shape {tuple(z.shape)}.")
        c = z.shape[1] // 4
        return self.merge(z[:, :c], z[:, c:])
