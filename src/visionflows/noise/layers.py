"""Noise Flow layers (Abdelhamed, Brubaker & Brown, "Noise Flow", ICCV 2019), as :class:`Bijector` s.

Direction: ``forward`` maps **noise → latent** (density evaluation; the official code calls it ``inverse``),
``inverse`` maps latent → noise (sampling). The context is a validated :class:`NoiseContext`.

* :class:`SignalDependentLayer` (``sdn5`` / ``sdn4``): ``z = n / s(y)`` with
  ``s(y) = sqrt(β̂1·y/γ + β̂2)``; ``γ = exp(g_k·ψ2)·ISO``, ``β̂1 = exp(β1·ψ0)``, ``β̂2 = exp(β2·ψ1)``,
  ``ψ = exp(cam_params[:, camera])`` (``sdn4``: ``ψ = 1``, no camera parameters).
* :class:`GainLayer` (``gain4``): ``z = x / g`` with one learned scalar ``g``.
* :func:`unconditional_step` (``unc``): an LU 1×1 convolution (row-vector convention) then an affine coupling
  with :class:`NoiseFlowCouplingNet` and a learned log-scale bound ``λ`` (init 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionflows.cameras import CAMERAS, ISOS
from visionflows.errors import InputError
from visionflows.flows import AffineCoupling, Bijector, Compose, LUInvertibleConv1x1, logdet_dtype, sum_except_batch
from visionflows.noise.context import NoiseContext

__all__ = [
    "SignalDependentLayer",
    "GainLayer",
    "NoiseFlowCouplingNet",
    "EdgeBiasZeroConv",
    "unconditional_step",
    "COUPLING_INIT_STD",
]

#: std of the initial ``l_1``/``l_2`` weights: width/512·0.05 for width 4 (official ``init_params``).
COUPLING_INIT_STD = 4 / 512 * 0.05


def _require_context(context: Any, name: str) -> NoiseContext:
    if not isinstance(context, NoiseContext):
        raise InputError(
            f"{name} is conditional and needs a NoiseContext, got {type(context).__name__}.",
            "build one with NoiseContext.create(clean, iso, camera).",
        )
    return context


class SignalDependentLayer(Bijector):
    """Signal-dependent noise layer S (``sdn5``; ``sdn4`` with ``camera_params=False``).

    ``forward`` (noise → latent): ``z = n / s(y)``, ``log|det| = −Σ log s(y)``; ``inverse``: ``n = z·s(y)``.

    Parameters: scalars ``beta1``, ``beta2``; ``gain_params [K]`` (one per ISO of ``isos``); ``cam_params [3, M]``
    (rows ψ0: β1, ψ1: β2, ψ2: gain; columns IP, GP, S6, N6, G4) when ``camera_params``. Init as the official
    code: β1 = −5, β2 = 0, gain_params = −5, cam_params = 1.

    ``continuous_iso=True`` accepts any positive ISO: ``g`` is linearly interpolated between the two listed
    ISOs around it in log-ISO, and held at the end value outside ``[min, max]`` (``γ`` still scales with ISO).
    Without it an unlisted ISO must be refused before the layer (see :meth:`NoiseContext.create`); the layer
    maps it to index 0 silently to stay sync-free.
    """

    def __init__(
        self,
        camera_params: bool = True,
        isos: Sequence[int] = ISOS,
        num_cameras: int = len(CAMERAS),
        continuous_iso: bool = False,
    ) -> None:
        super().__init__()
        self.camera_params = bool(camera_params)
        self.continuous_iso = bool(continuous_iso)
        self.register_buffer("isos", torch.tensor(list(isos), dtype=torch.long), persistent=False)
        self.beta1 = nn.Parameter(torch.tensor(-5.0))
        self.beta2 = nn.Parameter(torch.tensor(0.0))
        self.gain_params = nn.Parameter(torch.full((len(isos),), -5.0))
        if self.camera_params:
            self.cam_params = nn.Parameter(torch.ones(3, num_cameras))
        # the official graph creates an unused `rescaling_scale0` for every bijector; kept for checkpoint fidelity
        self.register_buffer("unused_rescaling_scale", torch.tensor(1e-4))

    def extra_repr(self) -> str:
        return f"camera_params={self.camera_params}, isos={self.isos.tolist()}, continuous_iso={self.continuous_iso}"

    def _gain_param(self, iso: Tensor) -> Tensor:
        """``g`` per sample ``[B]`` for ISO values ``iso [B]``."""
        if not self.continuous_iso:
            idx = ((iso[:, None] == self.isos[None]).long() * torch.arange(len(self.isos), device=iso.device)).sum(1)
            return self.gain_params[idx]
        knots = self.isos.to(torch.float64).log()
        x = iso.to(torch.float64).log()
        k = len(self.isos)
        if k == 1:
            return self.gain_params[0].expand(iso.shape[0])
        hi = torch.searchsorted(knots, x).clamp(1, k - 1)
        lo = hi - 1
        w = ((x - knots[lo]) / (knots[hi] - knots[lo])).clamp(0.0, 1.0).to(self.gain_params.dtype)
        return self.gain_params[lo] * (1 - w) + self.gain_params[hi] * w

    def scale(self, context: NoiseContext) -> Tensor:
        """``s(y)`` ``[B, C, H, W]``: the per-pixel std this layer divides by."""
        a, c = self.coefficients(context)
        y = _require_context(context, "SignalDependentLayer").clean
        return torch.sqrt(a[:, None, None, None] * y + c[:, None, None, None])

    def coefficients(self, context: NoiseContext) -> tuple[Tensor, Tensor]:
        """``(β̂1/γ, β̂2)`` per sample ``[B]`` in the clean patch's dtype: ``s(y) = sqrt(β̂1/γ · y + β̂2)``."""
        ctx = _require_context(context, "SignalDependentLayer")
        y = ctx.clean
        g = self._gain_param(ctx.iso)
        if self.camera_params:
            psi = torch.exp(self.cam_params[:, ctx.camera])  # [3, B]
            g = g * psi[2]
            b1 = self.beta1 * psi[0]
            b2 = self.beta2 * psi[1]
        else:
            b1 = self.beta1.expand_as(g)
            b2 = self.beta2.expand_as(g)
        gamma = torch.exp(g) * ctx.iso.to(g.dtype)  # [B]
        return (torch.exp(b1) / gamma).to(y.dtype), torch.exp(b2).to(y.dtype)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.scale(context).to(x.dtype)
        self._check(x, s)
        return x / s, -sum_except_batch(torch.log(s))

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        s = self.scale(context).to(z.dtype)
        self._check(z, s)
        return z * s, sum_except_batch(torch.log(s))

    @staticmethod
    def _check(x: Tensor, s: Tensor) -> None:
        if x.shape != s.shape:
            raise InputError(f"noise shape {tuple(x.shape)} does not match clean shape {tuple(s.shape)}.",
                             "pass noise and clean patches of the same [B, 4, H, W] shape.")


class GainLayer(Bijector):
    """Gain layer G (``gain4``): ``z = x / g`` with one learned scalar ``g`` (init 1), ``log|det| = −HWC·log g``.

    The official ``gain4`` ignores ISO and camera (their gain lives in S's ``γ``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gain_val = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("unused_rescaling_scale", torch.tensor(1e-4))

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        g = self.gain_val.to(x.dtype)
        n = x[0].numel()
        return x / g, (-n * torch.log(g.abs())).to(logdet_dtype(x)).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        g = self.gain_val.to(z.dtype)
        n = z[0].numel()
        return z * g, (n * torch.log(g.abs())).to(logdet_dtype(z)).expand(z.shape[0])


def _state_key(module: nn.Module) -> tuple:
    """Identity + version of every parameter and buffer of ``module``: changes whenever one is replaced or
    modified in place (optimizer step, ``load_state_dict``, ``.to``, BN running-stat update)."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


def _conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """1×1 convolution ``[B, I, H, W] -> [B, O, H, W]`` with ``weight [O, I]`` as one batched matmul (oneDNN's
    NCHW 1×1 convolution is slow for a handful of channels)."""
    b, c, h, w = x.shape
    out = torch.bmm(weight.expand(b, -1, -1), x.reshape(b, c, h * w)).view(b, weight.shape[0], h, w)
    return out if bias is None else out.add_(bias[None, :, None, None])


_RING_TAPS: dict[tuple, Tensor] = {}


def _ring_taps(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[9, H·W]``: tap ``(ky, kx)`` of a 3×3 VALID convolution over the ``(H+2)×(W+2)`` ring channel (1 on the
    border, 0 inside) at each output pixel; a few sizes are cached."""
    key = (height, width, device, dtype)
    compiling = torch.compiler.is_compiling()
    taps = None if compiling else _RING_TAPS.get(key)
    if taps is None:
        ring = torch.ones(height + 2, width + 2, dtype=dtype)
        ring[1:-1, 1:-1] = 0
        taps = torch.stack([ring[ky : ky + height, kx : kx + width].reshape(-1) for ky in range(3) for kx in range(3)])
        taps = taps.to(device)
        if not compiling:
            if len(_RING_TAPS) >= 16:
                _RING_TAPS.clear()
            _RING_TAPS[key] = taps
    return taps


class EdgeBiasZeroConv(nn.Module):
    """``l_last`` of the official coupling network: zero-pad by 1, append a ring channel (1 on the padded
    border, 0 inside), 3×3 VALID conv ``(C+1) → out`` with bias, times ``exp(3·logs)`` per output channel.

    Weight, bias and ``logs`` start at zero. Computed without the concatenation: the ring channel is the same
    for every sample, so its contribution plus the bias is one ``[1, out, H, W]`` map (:meth:`folded`), and
    the gain is folded into the weights: ``out = conv3×3(h, g·W[:, :C]) + g·(conv(ring, W[:, C]) + b)``.
    """

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, padding=0)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.logscale_factor = logscale_factor
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()

    def folded(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """``(weight [out, C, 3, 3], bias map [1, out, H, W])`` with the gain and the ring channel folded in
        (differentiable in the parameters). The ring's 3×3 convolution is one ``[out, 9] @ [9, H·W]`` product
        with the (cached) indicator of where each tap lands on the ring."""
        w = self.conv.weight
        gain = torch.exp(self.logscale_factor * self.logs).reshape(-1)
        taps = _ring_taps(height, width, w.device, w.dtype)
        edge = (w[:, -1].reshape(w.shape[0], 9) @ taps + self.conv.bias[:, None]).view(1, -1, height, width)
        return w[:, :-1] * gain[:, None, None, None], edge * gain[None, :, None, None]

    def forward(self, h: Tensor) -> Tensor:
        weight, bias_map = self.folded(h.shape[-2], h.shape[-1])
        return F.conv2d(h, weight.to(h.dtype), padding=1).add_(bias_map.to(h.dtype))


class NoiseFlowCouplingNet(nn.Module):
    """The official coupling network (``real_nvp_conv_template``), width 4 by default.

    ``l_1`` 3×3 conv (SAME, bias) → BN (no affine, eps 1e-4) → ReLU → ``l_2`` 1×1 conv (bias) → BN → ReLU →
    :class:`EdgeBiasZeroConv`. ``l_1``/``l_2`` weights ~ N(0, (width/512·0.05)²), biases 0.

    In eval mode the BatchNorms (running statistics) are folded into ``l_1``/``l_2`` and the gain and ring
    channel into ``l_last`` (:meth:`eval_params`): three convolutions and two ReLUs per call. Under ``no_grad``
    the folded parameters are cached until a parameter or buffer changes.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.l_1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(width, eps=1e-4, momentum=0.1, affine=False)
        self.l_2 = nn.Conv2d(width, width, 1)
        self.bn_2 = nn.BatchNorm2d(width, eps=1e-4, momentum=0.1, affine=False)
        self.l_last = EdgeBiasZeroConv(width, out_channels)
        std = width / 512 * 0.05
        with torch.no_grad():
            for conv in (self.l_1, self.l_2):
                conv.weight.normal_(0.0, std)
                conv.bias.zero_()

    def eval_params(self, height: int, width: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """Eval-mode parameters ``(w1 [W, I, 3, 3], b1 [W], w2 [W, W], b2 [W], w3 [O, W, 3, 3], bias map
        [1, O, H, W])`` with BN ``(h − mean)/sqrt(var + eps)`` folded into ``l_1``/``l_2``."""
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if cacheable:
            key = (height, width, dtype, _state_key(self))
            cache = self.__dict__.get("_eval_cache")
            if cache is not None and cache[0] == key:
                return cache[1]
        folded = []
        for conv, bn in ((self.l_1, self.bn_1), (self.l_2, self.bn_2)):
            inv_std = torch.rsqrt(bn.running_var + bn.eps)
            folded.append(conv.weight * inv_std[:, None, None, None])
            folded.append((conv.bias - bn.running_mean) * inv_std)
        folded[2] = folded[2].flatten(1)
        folded.extend(self.l_last.folded(height, width))
        out = tuple(t.to(dtype) for t in folded)
        if cacheable:
            self.__dict__["_eval_cache"] = (key, out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            w1, b1, w2, b2, w3, bias_map = self.eval_params(x.shape[-2], x.shape[-1], x.dtype)
            # in place where autograd allows: fewer large temporaries (allocator page faults)
            h = F.relu(F.conv2d(x, w1, b1, padding=1), inplace=True)
            h = F.relu(_conv1x1(h, w2, b2), inplace=True)
            return F.conv2d(h, w3, padding=1).add_(bias_map)
        # training: channels-last halves oneDNN's convolution backward for these few channels
        x = x.contiguous(memory_format=torch.channels_last)
        h = F.relu(self.bn_1(self.l_1(x)), inplace=True)
        h = F.relu(self.bn_2(self.l_2(h)), inplace=True)
        return self.l_last(h).contiguous()


def _coupling_net(width: int):
    def make(in_channels: int, out_channels: int) -> nn.Module:
        return NoiseFlowCouplingNet(in_channels, out_channels, width)

    return make


def unconditional_step(channels: int = 4, width: int = 4, generator: torch.Generator | None = None) -> Compose:
    """One ``unc`` step: ``LUInvertibleConv1x1(row_vector=True)`` then an affine coupling on channels
    ``[0, C/2) | [C/2, C)`` (shift, then raw log-scale; ``ℓ = λ·tanh(raw)``, λ learned, init 1e-4)."""
    conv = LUInvertibleConv1x1(channels, generator=generator, row_vector=True)
    coupling = AffineCoupling(
        channels,
        _coupling_net(width),
        split=channels // 2,
        scale_bound=1e-4,
        learn_scale_bound=True,
        shift_first=False,
        zero_init=False,  # EdgeBiasZeroConv starts at zero already (weight, bias and logs)
    )
    return Compose(conv, coupling)

