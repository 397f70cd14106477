"""A plain eager Wavelet Flow level (the official conditional-Glow level, ``docs/waveletflow.md`` §3), written the
straightforward way: the reference the visionflows level is timed against (``bench_wavelet.py``).

Each step is ActNorm (scale factor 3) → invertible 1×1 convolution (a full matrix as an ``nn.Conv2d``-style
``F.conv2d``, ``slogdet``) → affine coupling ``zb = (xb + t)·exp(tanh(r))`` whose network sees ``[xa, low-pass]``:
1×1 conv → ActNorm → ReLU, ``res_blocks`` × (3×3 conv → ActNorm → ReLU → 1×1 conv → ActNorm → + → ReLU), then a
zero-initialised 3×3 conv scaled by ``exp(3·logs)``. After the steps a final ActNorm and the standard-normal
prior. Stock modules, NCHW, no fusion and no custom kernels. :meth:`ReferenceLevel.from_level` copies the weights of
a :class:`visionflows.wavelet.WaveletLevel`, so both compute the same function (the benchmark checks it).

Shapes: details ``[B, 3C, s, s]`` given the low-pass ``[B, C, s, s]``; log-densities in nats per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RefActNorm(nn.Module):
    """``z = (x − loc)·exp(−3·log_scale)`` per channel; ``log|det| = −3·Σ log_scale·H·W``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = (x - self.loc.view(1, -1, 1, 1)) * torch.exp(-3.0 * self.log_scale).view(1, -1, 1, 1)
        return z, (-3.0 * self.log_scale.sum() * x.shape[2] * x.shape[3]).expand(x.shape[0])


class RefHiddenNorm(RefActNorm):
    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x)[0]


class RefResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm1 = RefHiddenNorm(width)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.norm2 = RefHiddenNorm(width)

    def forward(self, h: Tensor) -> Tensor:
        r = torch.relu(self.norm1(self.conv1(h)))
        return torch.relu(h + self.norm2(self.conv2(r)))


class RefCouplingNet(nn.Module):
    def __init__(self, cin: int, cout: int, width: int, res_blocks: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cin, width, 1, bias=False)
        self.norm_in = RefHiddenNorm(width)
        self.blocks = nn.Sequential(*[RefResBlock(width) for _ in range(res_blocks)])
        self.out = nn.Conv2d(width, cout, 3, padding=1)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(torch.relu(self.norm_in(self.conv_in(x))))
        return self.out(h) * torch.exp(3.0 * self.logs)


class RefStep(nn.Module):
    def __init__(self, channels: int, cond: int, width: int, res_blocks: int) -> None:
        super().__init__()
        self.actnorm = RefActNorm(channels)
        self.weight = nn.Parameter(torch.eye(channels))
        self.split = channels // 2
        self.net = RefCouplingNet(self.split + cond, 2 * (channels - self.split), width, res_blocks)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        x, ld = self.actnorm(x)
        c = x.shape[1]
        x = F.conv2d(x, self.weight.view(c, c, 1, 1))
        ld = ld + torch.linalg.slogdet(self.weight.double())[1].float() * x.shape[2] * x.shape[3]
        xa, xb = x[:, : self.split], x[:, self.split:]
        h = self.net(torch.cat([xa, cond], dim=1))
        k = c - self.split
        log_scale, shift = torch.tanh(h[:, :k]), h[:, k:]
        zb = (xb + shift) * torch.exp(log_scale)
        return torch.cat([xa, zb], dim=1), ld + log_scale.sum(dim=(1, 2, 3))


class ReferenceLevel(nn.Module):
    """``log p(details | low)`` of one Wavelet Flow level above 0 (nats ``[B]``)."""

    def __init__(self, channels: int = 9, cond: int = 3, steps: int = 8, width: int = 128,
                 res_blocks: int = 3) -> None:
        super().__init__()
        self.steps = nn.ModuleList([RefStep(channels, cond, width, res_blocks) for _ in range(steps)])
        self.final = RefActNorm(channels)

    def forward(self, details: Tensor, cond: Tensor) -> Tensor:
        z, ld = details, torch.zeros(details.shape[0])
        for step in self.steps:
            z, d = step(z, cond)
            ld = ld + d
        z, d = self.final(z)
        prior = -0.5 * (z**2).sum(dim=(1, 2, 3)) - 0.5 * math.log(2 * math.pi) * z[0].numel()
        return prior + ld + d

    @classmethod
    def from_level(cls, level) -> ReferenceLevel:
        """The same function as a (conditional, initialised) :class:`visionflows.wavelet.WaveletLevel`."""
        ref = cls(level.data_channels, level.cond_channels, level.steps, level.width, level.res_blocks)
        layers = list(level.transform.layers)
        with torch.no_grad():
            for step, vf in zip(ref.steps, layers[:-1]):
                an, conv, coup = vf.layers
                step.actnorm.loc.copy_(an.loc)
                step.actnorm.log_scale.copy_(an.log_scale)
                step.weight.copy_(conv.matrix)
                _copy_net(step.net, coup.net)
            ref.final.loc.copy_(layers[-1].loc)
            ref.final.log_scale.copy_(layers[-1].log_scale)
        return ref


def _copy_norm(dst: RefActNorm, src) -> None:
    dst.loc.copy_(src.actnorm.loc)
    dst.log_scale.copy_(src.actnorm.log_scale)


def _copy_net(dst: RefCouplingNet, src) -> None:
    dst.conv_in.weight.copy_(src.conv_in.weight)
    _copy_norm(dst.norm_in, src.norm_in)
    for d, s in zip(dst.blocks, src.blocks):
        d.conv1.weight.copy_(s.conv1.weight)
        _copy_norm(d.norm1, s.norm1)
        d.conv2.weight.copy_(s.conv2.weight)
        _copy_norm(d.norm2, s.norm2)
    dst.out.weight.copy_(src.out.conv.weight)
    dst.out.bias.copy_(src.out.conv.bias)
    dst.logs.copy_(src.out.logs)
