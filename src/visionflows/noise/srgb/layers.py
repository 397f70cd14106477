"""The layers of the sRGB Noise Flow (Kousha et al., CVPR 2022): conditional linear and affine coupling."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionflows.errors import ConfigError, InputError
from visionflows.flows import AffineCoupling, Bijector, Compose, LUInvertibleConv1x1
from visionflows.flows.base import logdet_dtype
from visionflows.noise.layers import EdgeBiasZeroConv
from visionflows.noise.srgb.context import SRGBContext, _ctx

__all__ = ["FixedScale", "ConditionalLinear", "SignalDependentScale", "ScaleEmbedding", "ActNorm2d", "NORMS",
           "SRGBCouplingNet", "ConditionalAffineCoupling", "CheckerboardCoupling", "cac_step"]


class FixedScale(Bijector):
    """``z = x / s0`` with a fixed (buffer) scale ``s0``; ``log|det| = −D·ln s0``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"FixedScale needs a positive scale, got {scale}.")
        self.register_buffer("log_scale0", torch.tensor(math.log(scale)))

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.log_scale0.to(x.dtype)
        return x * torch.exp(-s), (-s * x[0].numel()).to(logdet_dtype(x)).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.log_scale0.to(z.dtype)
        return z * torch.exp(s), (s * z[0].numel()).to(logdet_dtype(z)).expand(z.shape[0])


class ConditionalLinear(Bijector):
    """CL2: per (ISO, camera) and channel, ``z = x·exp(s) + b`` (tables ``[n_iso·n_cam, C]``, zero init);
    ``log|det| = H·W·Σ_c s``."""

    def __init__(self, n_iso: int, n_cam: int, channels: int = 3) -> None:
        super().__init__()
        self.n_iso, self.n_cam, self.channels = int(n_iso), int(n_cam), int(channels)
        self.log_scale = nn.Parameter(torch.zeros(self.n_iso * self.n_cam, channels))
        self.bias = nn.Parameter(torch.zeros(self.n_iso * self.n_cam, channels))

    def _sb(self, context: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        ctx = _ctx(context, "ConditionalLinear")
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] != ctx.batch_size:
            raise InputError(f"CL2 expects [{ctx.batch_size}, {self.channels}, H, W], got {tuple(x.shape)}.")
        c = ctx.combo
        return self.log_scale[c].to(x.dtype), self.bias[c].to(x.dtype)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s, b = self._sb(context, x)
        z = x * torch.exp(s)[:, :, None, None] + b[:, :, None, None]
        return z, (s.to(logdet_dtype(x)).sum(1) * (x.shape[2] * x.shape[3]))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s, b = self._sb(context, z)
        x = (z - b[:, :, None, None]) * torch.exp(-s)[:, :, None, None]
        return x, -(s.to(logdet_dtype(z)).sum(1) * (z.shape[2] * z.shape[3]))


class SignalDependentScale(Bijector):
    """SDL: per (ISO, camera) and channel, ``z = x / sqrt(a·y + b)`` with ``y`` the clean image in [0, 1] and
    ``a = exp(log_a)``, ``b = exp(log_b)`` (tables ``[n_iso·n_cam, C]``, init ``a = b = ½``): the
    heteroscedastic noise level of a camera as one layer of the flow, so that adapting its rows to a new camera
    fits what a per-camera heteroscedastic model fits (not in the paper; the raw Noise Flow's signal-dependent
    layer in sRGB units). ``log|det| = −½·Σ log(a·y + b)``."""

    def __init__(self, n_iso: int, n_cam: int, channels: int = 3) -> None:
        super().__init__()
        self.n_iso, self.n_cam, self.channels = int(n_iso), int(n_cam), int(channels)
        half = math.log(0.5)
        self.log_a = nn.Parameter(torch.full((self.n_iso * self.n_cam, channels), half))
        self.log_b = nn.Parameter(torch.full((self.n_iso * self.n_cam, channels), half))

    def _log_std(self, context: Any, x: Tensor) -> Tensor:
        ctx = _ctx(context, "SignalDependentScale")
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] != ctx.batch_size:
            raise InputError(f"SDL expects [{ctx.batch_size}, {self.channels}, H, W], got {tuple(x.shape)}.")
        if ctx.clean.shape != x.shape:
            raise InputError(f"clean shape {tuple(ctx.clean.shape)} does not match noise {tuple(x.shape)}.",
                             "pass clean and noise of the same [B, 3, H, W] shape.")
        c = ctx.combo
        a = torch.exp(self.log_a[c]).to(x.dtype)[:, :, None, None]
        b = torch.exp(self.log_b[c]).to(x.dtype)[:, :, None, None]
        return 0.5 * torch.log(a * ctx.clean.to(x.dtype).clamp(0.0, 1.0) + b)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        ls = self._log_std(context, x)
        return x * torch.exp(-ls), -ls.to(logdet_dtype(x)).flatten(1).sum(1)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        ls = self._log_std(context, z)
        return z * torch.exp(ls), ls.to(logdet_dtype(z)).flatten(1).sum(1)


class ScaleEmbedding(nn.Module):
    """``e(ISO, camera) = 1 + MLP(onehot(iso) ⊕ onehot(camera))``: Linear → ``blocks`` residual blocks
    (``h + W2·relu(W1·h)``) → ReLU → Linear(·, 1) (zero init). Output ``[B]``."""

    def __init__(self, n_iso: int, n_cam: int, hidden: int = 5, blocks: int = 3) -> None:
        super().__init__()
        self.n_iso, self.n_cam = int(n_iso), int(n_cam)
        self.inp = nn.Linear(self.n_iso + self.n_cam, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                                    for _ in range(blocks))
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, ctx: SRGBContext) -> Tensor:
        dtype = self.inp.weight.dtype
        x = torch.cat([F.one_hot(ctx.iso_idx, self.n_iso), F.one_hot(ctx.cam_idx, self.n_cam)], 1).to(dtype)
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk(h)
        return 1.0 + self.out(F.relu(h))[:, 0]


class ActNorm2d(nn.Module):
    """Per-channel affine ``(x + b)·exp(s)`` whose ``b``, ``s`` are set on the first training batch so that the
    output has zero mean and unit variance per channel (Glow's ActNorm, as a plain layer inside a network).
    Unlike BatchNorm it computes the same function in training and in evaluation."""

    def __init__(self, channels: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                mean = x.mean((0, 2, 3), keepdim=True)
                std = x.std((0, 2, 3), keepdim=True)
                self.bias.copy_(-mean)
                self.log_scale.copy_(-torch.log(std + self.eps))
                self.initialized.fill_(1)
        return (x + self.bias.to(x.dtype)) * torch.exp(self.log_scale.to(x.dtype))


#: normalisation layers of the coupling networks (``norm=`` of :class:`SRGBCouplingNet` / the model)
NORMS = ("batch", "act", "none")


class SRGBCouplingNet(nn.Module):
    """Coupling network of CAC: conv3×3 → norm → ReLU → conv1×1 → norm → ReLU →
    :class:`~visionflows.noise.layers.EdgeBiasZeroConv` (zero init, so the coupling starts as the identity).

    ``norm``: ``"batch"`` (the paper's BatchNorm, affine, eps 1e-4), ``"act"`` (:class:`ActNorm2d`: the same
    function in training and evaluation) or ``"none"``."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 4, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"unknown coupling-network norm {norm!r}.", f"use one of {', '.join(NORMS)}.")
        make = {"batch": lambda: nn.BatchNorm2d(width, eps=1e-4), "act": lambda: ActNorm2d(width),
                "none": nn.Identity}[norm]
        self.l_1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn_1 = make()
        self.l_2 = nn.Conv2d(width, width, 1)
        self.bn_2 = make()
        self.l_last = EdgeBiasZeroConv(width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn_1(self.l_1(x)))
        h = F.relu(self.bn_2(self.l_2(h)))
        return self.l_last(h)


class ConditionalAffineCoupling(AffineCoupling):
    """CAC coupling: :class:`~visionflows.flows.AffineCoupling` (split 1 | 2, shift then raw log-scale, learned
    bound λ) whose net sees ``[x_a, clean]`` and whose log-scale is multiplied by ``e(ISO, camera)``."""

    def __init__(self, n_iso: int, n_cam: int, channels: int = 3, width: int = 4, split: int = 1,
                 scale_bound: float = 1.0, norm: str = "batch") -> None:
        super().__init__(channels, lambda i, o: SRGBCouplingNet(i, o, width, norm), split=split,
                         context_channels=channels,
                         scale_bound=scale_bound, learn_scale_bound=True, shift_first=False, zero_init=False)
        self.embed = ScaleEmbedding(n_iso, n_cam)

    def _params(self, xa: Tensor, context: Any) -> tuple[Tensor, Tensor]:
        ctx = _ctx(context, "ConditionalAffineCoupling")
        if ctx.clean.shape[0] != xa.shape[0] or ctx.clean.shape[2:] != xa.shape[2:]:
            raise InputError(f"clean shape {tuple(ctx.clean.shape)} does not match noise {tuple(xa.shape)}.",
                             "pass clean and noise of the same [B, 3, H, W] shape.")
        h = self.net(torch.cat([xa, ctx.clean.to(xa.dtype)], dim=1))
        k = self.transformed
        shift, raw = h[:, :k], h[:, k:]
        e = self.embed(ctx).to(raw.dtype)[:, None, None, None]
        return shift, self.scale_bound.to(raw.dtype) * torch.tanh(raw) * e


class CheckerboardCoupling(Bijector):
    """Spatial affine coupling (RealNVP's checkerboard mask) conditioned like CAC: the pixels of one checkerboard
    colour (``(h + w + parity)`` even) are transformed, all 3 channels at once, given the pixels of the other
    colour, the clean image and the mask: ``z = x·exp(ℓ) + t`` there, identity elsewhere, with ``[t, r] =
    net([x·(1 − m), clean, 1 − m])`` and ``ℓ = λ·tanh(r)·e(ISO, camera)``; ``log|det| = Σ_masked ℓ``.

    Not in the paper: its CAC couplings only split channels, so its latent cannot whiten noise that is
    correlated between neighbouring pixels (demosaicking, in-camera denoising), which real sRGB noise is
    (``docs/denoising.md``). Two of these with opposite parities (arch token ``SPC``) transform every pixel.
    """

    def __init__(self, n_iso: int, n_cam: int, channels: int = 3, width: int = 4, parity: int = 0,
                 scale_bound: float = 1.0, norm: str = "batch") -> None:
        super().__init__()
        if parity not in (0, 1):
            raise ConfigError(f"checkerboard parity must be 0 or 1, got {parity}.")
        self.channels, self.parity = int(channels), int(parity)
        self.net = SRGBCouplingNet(2 * channels + 1, 2 * channels, width, norm)
        self.embed = ScaleEmbedding(n_iso, n_cam)
        self.scale_bound = nn.Parameter(torch.tensor(float(scale_bound)))

    def _mask(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        idx = torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)[None, :] + self.parity
        return (idx % 2 == 0).to(x.dtype)[None, None]

    def _params(self, fixed: Tensor, keep: Tensor, context: Any) -> tuple[Tensor, Tensor]:
        ctx = _ctx(context, "CheckerboardCoupling")
        if fixed.dim() != 4 or fixed.shape[1] != self.channels or ctx.clean.shape != fixed.shape:
            raise InputError(f"CheckerboardCoupling expects noise and clean of one [B, {self.channels}, H, W] "
                             f"shape, got {tuple(fixed.shape)} and {tuple(ctx.clean.shape)}.")
        h = self.net(torch.cat([fixed, ctx.clean.to(fixed.dtype), keep.expand(fixed.shape[0], 1, -1, -1)], 1))
        c = self.channels
        e = self.embed(ctx).to(h.dtype)[:, None, None, None]
        return h[:, :c], self.scale_bound.to(h.dtype) * torch.tanh(h[:, c:]) * e

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        m = self._mask(x)
        shift, ls = self._params(x * (1 - m), 1 - m, context)
        z = x + m * (x * torch.expm1(ls) + shift)
        return z, (m * ls).to(logdet_dtype(x)).sum((1, 2, 3))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        m = self._mask(z)
        shift, ls = self._params(z * (1 - m), 1 - m, context)
        x = z + m * ((z - shift) * torch.exp(-ls) - z)
        return x, -(m * ls).to(logdet_dtype(z)).sum((1, 2, 3))


def cac_step(n_iso: int, n_cam: int, width: int = 4, generator: torch.Generator | None = None,
             norm: str = "batch") -> Compose:
    """One CAC step: LU 1×1 conv (3×3) then :class:`ConditionalAffineCoupling`."""
    return Compose(LUInvertibleConv1x1(3, generator=generator),
                   ConditionalAffineCoupling(n_iso, n_cam, width=width, norm=norm))
