"""The conditional Glow step of a Wavelet Flow level and its residual coupling network (official architecture,
``docs/waveletflow.md`` §3), with an eval/compile-friendly fused path (ActNorm folded into the convolutions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionflows.flows import ActNorm, AffineCoupling, Compose, InvertibleConv1x1, ZeroConv2d
from visionflows.wavelet import pointwise, winograd

__all__ = ["CouplingNet", "ResidualBlock", "coupling_net_factory", "flow_step", "set_fused", "HIDDEN_INIT_STD"]

HIDDEN_INIT_STD = 0.05


# ------------------------------------------------------------------------------------------------ coupling net
class _Norm(nn.Module):
    """ActNorm used as a hidden normalisation (Glow's ``actnorm`` after a bias-free conv); DDI-initialised.

    After initialisation it is applied *folded into the preceding conv* (:func:`_conv_norm`): ``ActNorm(conv(h))
    = conv(h; w·s, −loc·s)`` with ``s = exp(−3·log_scale)`` per output channel, one conv with a bias instead of a
    conv and two elementwise passes (same parameters and state dict, equal up to float32 rounding).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels, scale_factor=3.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.actnorm(x)[0]


def _conv_norm(conv: nn.Conv2d, norm: _Norm, h: Tensor) -> Tensor:
    """``ActNorm(conv(h))`` as one convolution with folded weight and bias (unfused for the DDI batch)."""
    if norm.actnorm.needs_init():
        return norm.actnorm(conv(h))[0]
    w, b = _folded(conv, norm)
    if h.is_contiguous(memory_format=torch.channels_last) and h.dim() == 4:
        w = w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(h, w, b, padding=conv.padding)


def _folded(conv: nn.Conv2d, norm: _Norm) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``ActNorm(conv(·))`` as one convolution (see :class:`_Norm`)."""
    s, b = _norm_scale(norm)
    return conv.weight * s.view(-1, 1, 1, 1), b


def _norm_scale(norm: _Norm) -> tuple[Tensor, Tensor]:
    """``ActNorm(conv(·)) = conv(·; weight · s) + b``: the per-output-channel ``(s, b)``, each ``[C]``."""
    an = norm.actnorm
    s = torch.exp(-an.scale_factor * an.log_scale)
    return s, -an.loc * s


def _folded_out(out: ZeroConv2d) -> tuple[Tensor, Tensor]:
    """The weight and bias of the output conv with its ``exp(gain·logs)`` scaling folded in."""
    g, b = _out_scale(out)
    return out.conv.weight * g.view(-1, 1, 1, 1), b


def _out_scale(out: ZeroConv2d) -> tuple[Tensor, Tensor]:
    """The output conv is ``conv(·; weight · g) + b``: the per-output-channel ``(g, b)``, each ``[C_out]``."""
    g = torch.exp(out.gain * out.logs).view(-1)
    return g, out.conv.bias * g


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, HIDDEN_INIT_STD)
    return conv


class ResidualBlock(nn.Module):
    """``h → ReLU(h + ActNorm(Conv1x1(ReLU(ActNorm(Conv3x3(h))))))``, width ``W`` (bias-free convs)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = _conv(width, width, 3)
        self.norm1 = _Norm(width)
        self.conv2 = _conv(width, width, 1)
        self.norm2 = _Norm(width)

    fused = True  # False: the plain conv → ActNorm → ReLU chain (the reference the benchmarks compare with)

    def forward(self, h: Tensor) -> Tensor:
        if not self.fused:
            r = torch.relu(self.norm1(self.conv1(h)))
            return torch.relu(h + self.norm2(self.conv2(r)))
        # the conv outputs are not saved by conv backward, so ReLU / the residual add can run in place
        r = _conv_norm(self.conv1, self.norm1, h).relu_()
        r = _conv_norm(self.conv2, self.norm2, r)
        return r.add_(h).relu_()


class CouplingNet(nn.Module):
    """Wavelet Flow coupling network ``[x1, cond] → [raw log-scale, shift]`` (doc §3).

    1×1 conv (no bias) → ActNorm → ReLU, ``res_blocks`` × :class:`ResidualBlock`, then a zero-initialised 3×3
    :class:`~visionflows.flows.ZeroConv2d` with ``exp(3·logs)`` output scaling. Hidden conv weights ~ N(0, 0.05).
    Hidden activations are kept channels-last (faster oneDNN convolutions on CPU); the ActNorms are folded
    into their convs (see :class:`_Norm`) and the ``exp(3·logs)`` scaling into the last conv.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, res_blocks: int = 3) -> None:
        super().__init__()
        self.conv_in = _conv(in_channels, width, 1)
        self.norm_in = _Norm(width)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(res_blocks)])
        self.out = ZeroConv2d(width, out_channels, 3, gain=3.0)

    fused = True  # see ResidualBlock.fused
    winograd = True  # with ``fused``: the channels-last Winograd path on the CPU where it applies (see below)

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused:
            return self.out(self.blocks(torch.relu(self.norm_in(self.conv_in(x)))))
        if self.winograd and self._winograd_applies(x):
            return self._forward_winograd(x)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        h = _conv_norm(self.conv_in, self.norm_in, x).relu_()
        h = self.blocks(h)
        w, bias = _folded_out(self.out)
        if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        return F.conv2d(h, w, bias, padding=self.out.conv.padding).contiguous()

    def _winograd_applies(self, x: Tensor) -> bool:
        """float32 on the CPU, at least 4×4 pixels, ActNorms initialised, no autocast or compile, kernels built."""
        if x.dim() != 4 or x.device.type != "cpu" or x.dtype != torch.float32 or min(x.shape[-2:]) < 4:
            return False
        if _cpu_autocast() or torch.compiler.is_compiling():
            return False
        if self.norm_in.actnorm.needs_init() or any(
            b.norm1.actnorm.needs_init() or b.norm2.actnorm.needs_init() for b in self.blocks
        ):
            return False
        return winograd.available() and pointwise.available()

    def _forward_winograd(self, x: Tensor) -> Tensor:
        """The fused network on channels-last ``[B·H·W, C]`` rows: 1×1 convolutions are matrix products with a
        fused bias/residual/ReLU epilogue (:mod:`visionflows.wavelet.pointwise`), 3×3 ones Winograd F(4×4, 3×3)
        (:mod:`visionflows.wavelet.winograd`); same parameters, same function."""
        b, c, hgt, wid = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        w, bias = _folded(self.conv_in, self.norm_in)
        h = pointwise.linear_epilogue(rows, w.flatten(1), bias, relu=True)
        width = h.shape[1]
        for blk in self.blocks:
            s1, b1 = _norm_scale(blk.norm1)  # the ActNorm scales go into the Winograd weight transform
            w2, b2 = _folded(blk.conv2, blk.norm2)
            # (one autograd node for the whole block, with the skip gradient accumulated in the kernel, measured
            # 7% slower than these nodes)
            r = winograd.winograd_conv3x3(h.view(b, hgt, wid, width), blk.conv1.weight, b1, relu=True, scale=s1)
            h = pointwise.linear_epilogue(r.view(-1, width), w2.flatten(1), b2, skip=h, relu=True)
        h = h.view(b, hgt, wid, width)
        g, bias = _out_scale(self.out)
        y = winograd.winograd_conv3x3(h, self.out.conv.weight, bias, scale=g)
        return y.permute(0, 3, 1, 2).contiguous()


def set_fused(module: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every coupling network in ``module`` between the fused fast path (default) and the plain chain."""
    for m in module.modules():
        if isinstance(m, (CouplingNet, ResidualBlock)):
            m.fused = bool(fused)
    return module


def coupling_net_factory(width: int, res_blocks: int = 3):
    """A ``net_factory`` for :class:`~visionflows.flows.AffineCoupling` building :class:`CouplingNet`."""

    def make(in_channels: int, out_channels: int) -> nn.Module:
        return CouplingNet(in_channels, out_channels, width, res_blocks)

    return make


def flow_step(channels: int, context_channels: int, width: int, res_blocks: int = 3) -> Compose:
    """One step: ActNorm(×3) → full invertible 1×1 conv → conditional affine coupling (shift first, tanh bound 1)."""
    return Compose(
        ActNorm(channels, scale_factor=3.0),
        InvertibleConv1x1(channels),
        AffineCoupling(
            channels,
            coupling_net_factory(width, res_blocks),
            split=channels // 2,
            context_channels=context_channels,
            scale_bound=1.0,
            shift_first=True,
        ),
    )
