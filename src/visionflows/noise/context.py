"""The typed conditioning of every noise model: clean patch, ISO and camera per sample.

:class:`NoiseContext` is validated once, at the entry point (:meth:`NoiseContext.create`); layers trust it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionflows.cameras import CAMERAS, ISOS, camera_index
from visionflows.errors import InputError

__all__ = ["NoiseContext", "as_iso_tensor", "as_camera_tensor", "check_raw_values", "check_index_tensor"]


def check_index_tensor(t: object, name: str, batch: int, fix: str, per: str = "sample") -> None:
    """InputError unless ``t`` is an integer (not bool) tensor ``[batch]``: a context's per-sample ISO, camera or
    vocabulary index; ``name`` and ``per`` word the message, ``fix`` says how to build a valid context."""
    if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] != batch or t.is_floating_point() or \
            t.dtype == torch.bool:
        got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
        raise InputError(f"{name} must be an integer tensor [{batch}] (one per {per}), got {got}.", fix)


def check_raw_values(values: Tensor, source: str | None = None, what: str = "clean", margin: float = 0.0) -> None:
    """InputError unless ``values`` are finite normalised raw, ``(DN - black) / (white - black)``, in ``[0, 1]``
    (``[-margin, 1 + margin]``: noisy values that noise took past the range). The message starts with
    ``source`` (e.g. the file) when given and calls the values ``what``."""
    at = f"{source}: " if source else ""
    lo_t, hi_t = torch.aminmax(values)  # one pass; NaN propagates, Inf shows up as a bound
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{at}{what} contains {int((~torch.isfinite(values)).sum())} NaN/Inf value(s).",
                         "clean the data first (SIDD: NaN -> 0, then clip to [0, 1]).")
    if lo < -margin or hi > 1.0 + margin:
        slack = f"; noise may take them up to {margin:g} outside" if margin else ""
        raise InputError(
            f"{at}{what} values must lie in [0, 1] (normalised raw{slack}), got range [{lo:.4g}, {hi:.4g}].",
            "normalise with (DN - black) / (white - black) and clip to [0, 1].",
        )


def _batch_tensor(value: Any, batch: int, name: str, device: torch.device) -> Tensor:
    if value is None:
        example = "800" if name == "iso" else "'S6' (or an index 0..4)"
        raise InputError(f"{name} is missing: every noise patch needs its {name}.",
                         f"pass {name} as one value for the batch or one per sample, e.g. {example}.")
    if isinstance(value, Tensor):
        t = value.detach().to(device)
    elif isinstance(value, (list, tuple)):
        t = torch.as_tensor(list(value), device=device)
    else:
        t = torch.as_tensor(value, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise InputError(
            f"{name} must be a scalar or a 1-D sequence of length {batch} (the batch), got shape {tuple(t.shape)}.",
            f"pass one {name} for the batch or one per sample.",
        )
    return t


def as_iso_tensor(iso: Any, batch: int, device: torch.device | str = "cpu") -> Tensor:
    """ISO value(s) → LongTensor ``[B]`` of ISO values (e.g. 800). InputError for non-integer or non-positive."""
    device = torch.device(device)
    if isinstance(iso, str):
        try:
            iso = int(iso)
        except ValueError:
            raise InputError(f"ISO {iso!r} is not an integer.", f"use one of {', '.join(map(str, ISOS))}.") from None
    t = _batch_tensor(iso, batch, "iso", device)
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            bad = t[~(torch.isfinite(t) & (t == t.round()))][0].item()
            raise InputError(f"ISO {bad} is not an integer.", f"use one of {', '.join(map(str, ISOS))}.")
    t = t.long()
    if (t <= 0).any():
        raise InputError(f"ISO {int(t[t <= 0][0])} is not positive.", f"use one of {', '.join(map(str, ISOS))}.")
    return t


def as_camera_tensor(camera: Any, batch: int, device: torch.device | str = "cpu",
                     num_cameras: int | None = len(CAMERAS)) -> Tensor:
    """Camera code(s) (``'S6'``) or index(es) → LongTensor ``[B]`` of indices (IP=0, GP=1, S6=2, N6=3, G4=4).

    ``num_cameras``: indices must be below it (default: the five SIDD phones; a model with more cameras, e.g. one
    adapted to a sixth, passes its own count; ``None``: any index ≥ 0, for models that ignore the camera)."""
    device = torch.device(device)
    if isinstance(camera, str):
        return torch.full((batch,), camera_index(camera), dtype=torch.long, device=device)
    if isinstance(camera, Sequence) and not isinstance(camera, Tensor):
        idx = [camera_index(c) if isinstance(c, str) else c for c in camera]
        return as_camera_tensor(torch.as_tensor(idx, dtype=None if idx else torch.long), batch, device, num_cameras)
    t = _batch_tensor(camera, batch, "camera", device)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise InputError("camera indices must be integers.", f"use 0..{len(CAMERAS) - 1} or a code {CAMERAS}.")
    t = t.long()
    if num_cameras != len(CAMERAS):
        bad = (t < 0) if num_cameras is None else ((t < 0) | (t >= num_cameras))
        if bad.any():
            raise InputError(f"Unknown camera index {int(t[bad][0])}.", "use an index >= 0." if num_cameras is None
                             else f"use 0..{num_cameras - 1} (this model's cameras).")
        return t
    bad = (t < 0) | (t >= len(CAMERAS))
    if bad.any():
        camera_index(int(t[bad][0]))  # raises the standard InputError
    return t


@dataclass(frozen=True)
class NoiseContext:
    """Conditioning of a batch of noise patches.

    Attributes:
        clean: clean packed raw patches ``[B, 4, H, W]`` in normalised units ``[0, 1]``.
        iso: LongTensor ``[B]`` of ISO values (100, 400, …).
        camera: LongTensor ``[B]`` of camera indices (IP=0, GP=1, S6=2, N6=3, G4=4).
        nlf: optional float64 ``[B, 2]``: each image's metadata noise-level function ``(beta1, beta2)`` (the DNG
            NoiseProfile), or ``[B, C, 2]`` one pair per channel (a darktable profile mapped into packed units, a
            per-plane NoiseProfile); used by :class:`~visionflows.noise.CameraNLF` instead of its table and by
            the parameter-conditioned Noise Flow.

    Build it with :meth:`create`, which validates; the plain constructor does not.
    """

    clean: Tensor
    iso: Tensor
    camera: Tensor
    nlf: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.clean.shape[0])

    def to(self, dtype: torch.dtype | torch.device | str | None = None,
           device: torch.device | str | None = None) -> NoiseContext:
        """A copy with ``clean`` converted to ``dtype`` and/or every tensor moved to ``device``.

        Like ``Tensor.to``, a device may also be given as the first argument (``ctx.to("cuda")``).
        """
        if dtype is not None and not isinstance(dtype, torch.dtype):
            dtype, device = None, dtype
        clean = self.clean.to(device=device, dtype=dtype) if dtype is not None else self.clean.to(device=device)
        if device is None:
            return NoiseContext(clean, self.iso, self.camera, self.nlf)
        nlf = self.nlf.to(device) if self.nlf is not None else None
        return NoiseContext(clean, self.iso.to(device), self.camera.to(device), nlf)

    def __getitem__(self, idx: Any) -> NoiseContext:
        """The sub-batch ``idx`` (slice, index tensor or mask)."""
        nlf = self.nlf[idx] if self.nlf is not None else None
        return NoiseContext(self.clean[idx], self.iso[idx], self.camera[idx], nlf)

    def with_nlf(self, nlf: Any) -> NoiseContext:
        """A copy carrying per-sample metadata NLF ``(beta1, beta2)`` (each a scalar or ``[B]``, or one ``[B, 2]``
        tensor), or per channel (a ``[B, C, 2]`` tensor or array). InputError unless finite with
        ``beta1 >= 0``; ``beta2 <= 0`` becomes 1e-6 (as SIDD does)."""
        b, dev = self.batch_size, self.clean.device
        if isinstance(nlf, (Tensor, np.ndarray)) and np.ndim(nlf) == 3:
            t = torch.as_tensor(nlf, dtype=torch.float64, device=dev)
            c = self.clean.shape[1]
            if tuple(t.shape) != (b, c, 2):
                raise InputError(f"per-channel NLF must be [{b}, {c}, 2], got {tuple(t.shape)}.",
                                 "give one (beta1, beta2) per sample and channel.")
            if not bool(torch.isfinite(t).all()) or bool((t[..., 0] < 0).any()):
                raise InputError("per-channel NLF beta1/beta2 must be finite and beta1 >= 0.",
                                 "map the profile first (values <= 0 of beta2 become 1e-6).")
            t = torch.stack([t[..., 0], torch.where(t[..., 1] <= 0, torch.full_like(t[..., 1], 1e-6), t[..., 1])], -1)
            return NoiseContext(self.clean, self.iso, self.camera, t)
        if isinstance(nlf, (Tensor, np.ndarray)) and np.ndim(nlf) == 2:
            if tuple(nlf.shape) != (b, 2):
                raise InputError(f"per-sample NLF must be [{b}, 2] (beta1, beta2 per sample), got "
                                 f"{tuple(nlf.shape)}.", "give one (beta1, beta2) pair per sample, or [B, C, 2] "
                                 "per channel.")
            nlf = (nlf[:, 0], nlf[:, 1])
        try:
            b1 = torch.as_tensor(nlf[0], dtype=torch.float64, device=dev).reshape(-1).expand(b)
            b2 = torch.as_tensor(nlf[1], dtype=torch.float64, device=dev).reshape(-1).expand(b)
        except (TypeError, IndexError, RuntimeError) as err:
            raise InputError(f"per-sample NLF must be (beta1, beta2), each a scalar or [{b}] ({err}).",
                             "read them from the image metadata (NoiseProfile).") from err
        if not (torch.isfinite(b1).all() and torch.isfinite(b2).all()) or bool((b1 < 0).any()):
            raise InputError("per-sample NLF beta1/beta2 must be finite and beta1 >= 0.",
                             "read them from the image metadata (NoiseProfile); values <= 0 become 1e-6.")
        b2 = torch.where(b2 <= 0, torch.full_like(b2, 1e-6), b2)
        return NoiseContext(self.clean, self.iso, self.camera, torch.stack([b1, b2], dim=1))

    @classmethod
    def create(
        cls,
        clean: Tensor,
        iso: Any,
        camera: Any,
        noise: Tensor | None = None,
        allowed_isos: Sequence[int] | None = ISOS,
        channels: int | None = 4,
        num_cameras: int | None = len(CAMERAS),
    ) -> NoiseContext:
        """Validate and build a context.

        Args:
            clean: ``[B, C, H, W]`` (or ``[C, H, W]`` for one patch) in ``[0, 1]``, finite.
            iso: an int or a sequence / tensor ``[B]`` of ints.
            camera: a code (``'S6'``), an index, or a sequence / tensor ``[B]`` of either.
            noise: if given, must have the shape of ``clean``.
            allowed_isos: refuse ISOs outside this list (``None`` accepts any positive ISO).
            channels: required channel count (``None``: any).
            num_cameras: camera indices must be below it (``None``: any index ≥ 0; see :func:`as_camera_tensor`).

        Raises:
            InputError: naming the bad value and how to fix it.
        """
        if not isinstance(clean, Tensor):
            raise InputError(f"clean must be a torch.Tensor, got {type(clean).__name__}.", "use torch.as_tensor.")
        if clean.dim() == 3:
            clean = clean[None]
        if clean.dim() != 4 or (channels is not None and clean.shape[1] != channels):
            raise InputError(
                f"clean must be [B, {channels or 'C'}, H, W] packed raw, got shape {tuple(clean.shape)}.",
                "pack the Bayer image into 4 channels (RGGB-style planes) and add a batch dimension.",
            )
        if not clean.is_floating_point():
            raise InputError(f"clean must be floating point in [0, 1], got dtype {clean.dtype}.",
                             "normalise raw values: (DN - black) / (white - black).")
        if clean.numel() == 0:
            raise InputError(f"clean holds no pixels (shape {tuple(clean.shape)}).",
                             "pass a batch of at least one patch of at least 1×1.")
        if noise is not None:
            if not isinstance(noise, Tensor):
                raise InputError(f"noise must be a torch.Tensor, got {type(noise).__name__}.", "use torch.as_tensor.")
            if not noise.is_floating_point():
                raise InputError(f"noise must be floating point (noisy − clean), got dtype {noise.dtype}.",
                                 "pass the noise as a float tensor, e.g. (noisy - clean).float().")
            if noise.dim() == 3 and clean.shape[0] == 1:
                noise = noise[None]
            if tuple(noise.shape) != tuple(clean.shape):
                raise InputError(
                    f"noise shape {tuple(noise.shape)} does not match clean shape {tuple(clean.shape)}.",
                    "pass noise and clean patches of the same [B, 4, H, W] shape.",
                )
            # one reduction instead of an elementwise mask: a NaN/Inf anywhere makes the sum non-finite
            if not math.isfinite(float(noise.detach().sum())) and not torch.isfinite(noise).all():
                raise InputError(f"noise contains {int((~torch.isfinite(noise)).sum())} NaN/Inf value(s).",
                                 "clean the data first (SIDD: NaN -> 0).")
        check_raw_values(clean)
        b = clean.shape[0]
        iso_t = as_iso_tensor(iso, b, clean.device)
        if allowed_isos is not None:
            allowed = torch.tensor(list(allowed_isos), device=iso_t.device)
            ok = (iso_t[:, None] == allowed[None]).any(dim=1)
            if not ok.all():
                bad = int(iso_t[~ok][0])
                raise InputError(
                    f"ISO {bad} is not one of the model's ISO levels {', '.join(map(str, allowed_isos))}.",
                    "use a listed ISO, or a model configured with continuous_iso=True (log-ISO interpolation).",
                )
        cam_t = as_camera_tensor(camera, b, clean.device, num_cameras)
        return cls(clean, iso_t, cam_t)
