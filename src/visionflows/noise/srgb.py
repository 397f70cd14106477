"""sRGB Noise Flow (Kousha, Maleky, Brubaker & Brown, "Modeling sRGB Camera Noise with Normalizing Flows",
CVPR 2022), its Gaussian baselines and the 8-bit metrics; ``docs/noiseflow.md`` §12.

Units and dequantisation (every model here):

* ``clean`` is the 8-bit clean image divided by 255, ``[B, 3, H, W]`` in [0, 1] (the conditioning input).
* ``noise`` is in **8-bit levels** (DN): for 8-bit noisy ``x`` and clean ``y``, the dequantised noise is
  ``n = x − y + u − ½`` with ``u ~ U[0, 1)`` (:func:`dequantize_noise`), so ``x = round(y + n)``. This equals the
  paper's ``x̃ = (x + u)/256`` with its log-det ``−ln 256`` per dimension counted: the density of ``n`` in
  DN units is the density of ``x̃`` divided by 256, so ``−log p(n)/D`` upper-bounds the NLL of the discrete 8-bit
  values (positive, ~3 nats/dim, comparable with the paper's table). The clean image is not dequantised.
* Samples are continuous noise in DN; :func:`quantize_noisy` turns them into 8-bit noisy images.

Model (data → latent): a fixed scale (``noise_std``, set from the training noise at fit time; a constant
speeding up short trainings, log-det counted), then the arch string, default
``CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC`` (the released model):

* ``CL2`` (:class:`ConditionalLinear`): per (ISO, camera) and channel ``z = x·exp(s) + b``, zero init.
* ``CAC``: :class:`~visionflows.flows.LUInvertibleConv1x1` (3×3) then :class:`ConditionalAffineCoupling`, split
  1 | 2; the net sees ``[x_a, clean]`` (conv3×3-BN-ReLU, conv1×1-BN-ReLU, edge-padded zero conv); ``ℓ = λ·tanh(r)·
  e(ISO, camera)``, ``e`` a residual MLP (:class:`ScaleEmbedding`).

Camera and ISO vocabularies come from the training data (stored in ``model_config``); index 0 of each is a
learned "unknown" entry, used for missing values (e.g. SIDD crops) and for values unseen at fit time.
Deviation from the paper: the embedding MLP has no BatchNorm1d (a batch often holds one (ISO, camera), which
makes batch statistics degenerate) and outputs ``1 + MLP(·)`` with a zero-initialised last layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionflows.errors import ConfigError, InputError
from visionflows.flows import AffineCoupling, Bijector, Compose, LUInvertibleConv1x1, StandardNormal, sum_except_batch
from visionflows.flows.base import logdet_dtype
from visionflows.io import register_model_kind
from visionflows.noise.layers import EdgeBiasZeroConv

__all__ = [
    "DEFAULT_ARCH",
    "SRGBContext",
    "FixedScale",
    "ConditionalLinear",
    "ScaleEmbedding",
    "SRGBCouplingNet",
    "ConditionalAffineCoupling",
    "SRGBNoiseFlow",
    "SRGBGaussianNoise",
    "SRGBHeteroscedasticNoise",
    "SRGBNoiseTask",
    "dequantize_noise",
    "quantize_noisy",
    "integer_noise",
    "nll_per_dim",
    "marginal_kl",
    "evaluate_srgb_noise_models",
    "fit_srgb_noise_flow",
]

DEFAULT_ARCH = "CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC|CL2|CAC|CAC"


# ----------------------------------------------------------------------------------------------- context
@dataclass(frozen=True)
class SRGBContext:
    """Conditioning: ``clean [B, 3, H, W]`` in [0, 1]; ``iso_idx``/``cam_idx`` LongTensor ``[B]`` (0 = unknown)
    into vocabularies of ``n_iso``/``n_cam`` entries (unknown included)."""

    clean: Tensor
    iso_idx: Tensor
    cam_idx: Tensor
    n_iso: int
    n_cam: int

    @property
    def batch_size(self) -> int:
        return int(self.clean.shape[0])

    @property
    def combo(self) -> Tensor:
        """Index of the (ISO, camera) pair, ``iso_idx·n_cam + cam_idx``."""
        return self.iso_idx * self.n_cam + self.cam_idx

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SRGBContext:
        clean = self.clean.to(device=device, dtype=dtype) if dtype is not None else self.clean.to(device=device)
        return SRGBContext(clean, self.iso_idx.to(device=device), self.cam_idx.to(device=device), self.n_iso,
                           self.n_cam)


def _ctx(context: Any, name: str) -> SRGBContext:
    if not isinstance(context, SRGBContext):
        raise InputError(f"{name} needs an SRGBContext, got {type(context).__name__}.",
                         "build one with SRGBNoiseFlow.context(clean, iso, camera).")
    return context


# ------------------------------------------------------------------------------------------------ layers
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


class SRGBCouplingNet(nn.Module):
    """Coupling network of CAC: conv3×3 → BN(affine, eps 1e-4) → ReLU → conv1×1 → BN → ReLU →
    :class:`~visionflows.noise.layers.EdgeBiasZeroConv` (zero init, so the coupling starts as the identity)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.l_1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(width, eps=1e-4)
        self.l_2 = nn.Conv2d(width, width, 1)
        self.bn_2 = nn.BatchNorm2d(width, eps=1e-4)
        self.l_last = EdgeBiasZeroConv(width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn_1(self.l_1(x)))
        h = F.relu(self.bn_2(self.l_2(h)))
        return self.l_last(h)


class ConditionalAffineCoupling(AffineCoupling):
    """CAC coupling: :class:`~visionflows.flows.AffineCoupling` (split 1 | 2, shift then raw log-scale, learned
    bound λ) whose net sees ``[x_a, clean]`` and whose log-scale is multiplied by ``e(ISO, camera)``."""

    def __init__(self, n_iso: int, n_cam: int, channels: int = 3, width: int = 4, split: int = 1,
                 scale_bound: float = 1.0) -> None:
        super().__init__(channels, lambda i, o: SRGBCouplingNet(i, o, width), split=split, context_channels=channels,
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


def cac_step(n_iso: int, n_cam: int, width: int = 4, generator: torch.Generator | None = None) -> Compose:
    """One CAC step: LU 1×1 conv (3×3) then :class:`ConditionalAffineCoupling`."""
    return Compose(LUInvertibleConv1x1(3, generator=generator), ConditionalAffineCoupling(n_iso, n_cam, width=width))


# ------------------------------------------------------------------------------------------------ helpers
def _as_clean(clean: Tensor | np.ndarray) -> Tensor:
    if isinstance(clean, np.ndarray):
        clean = torch.from_numpy(clean)
    if not isinstance(clean, Tensor):
        raise InputError(f"clean must be a tensor, got {type(clean).__name__}.", "use torch.as_tensor.")
    if clean.dtype == torch.uint8:
        clean = clean.float() / 255.0
    if clean.dim() == 3:
        clean = clean[None]
    if clean.dim() != 4 or clean.shape[1] != 3:
        raise InputError(f"clean must be [B, 3, H, W] sRGB, got shape {tuple(clean.shape)}.",
                         "pass NCHW RGB images (uint8, or float in [0, 1]).")
    if not clean.is_floating_point() or not torch.isfinite(clean).all():
        raise InputError("clean must be finite floating point in [0, 1] (or uint8).", "divide 8-bit values by 255.")
    lo, hi = float(clean.min()), float(clean.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"clean values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}].", "divide 8-bit values by 255.")
    return clean


def _as_list(v: Any, b: int, name: str) -> list:
    if v is None or isinstance(v, (str, int, np.integer)):
        return [v] * b
    if isinstance(v, Tensor):
        v = v.reshape(-1).tolist() if v.dim() else [v.item()] * b
    v = list(v)
    if len(v) != b:
        raise InputError(f"{name} has {len(v)} entries for a batch of {b}.", f"pass one {name} or one per sample.")
    return v


def dequantize_noise(noisy: Tensor, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dequantised noise in 8-bit levels, ``n = x − y + u − ½``, ``u ~ U[0, 1)`` (uint8 inputs ``[B, 3, H, W]``)."""
    if noisy.shape != clean.shape:
        raise InputError(f"noisy {tuple(noisy.shape)} and clean {tuple(clean.shape)} differ in shape.",
                         "pass aligned pairs of the same size.")
    u = torch.rand(noisy.shape, generator=generator)
    return noisy.float() - clean.float() + u.to(noisy.device) - 0.5


def quantize_noisy(clean: Tensor, noise: Tensor) -> Tensor:
    """8-bit noisy image ``clip(round(y + n), 0, 255)`` (uint8) for clean ``y`` (uint8, or float in [0, 1])."""
    y = clean.float() if clean.dtype == torch.uint8 else clean * 255.0
    return torch.clamp(torch.round(y + noise), 0, 255).to(torch.uint8)


def integer_noise(noisy: Tensor, clean: Tensor) -> Tensor:
    """Integer noise ``noisy − clean`` (int16) of 8-bit images."""
    return noisy.to(torch.int16) - clean.to(torch.int16)


# -------------------------------------------------------------------------------------------------- model
class _SRGBNoiseModel(nn.Module):
    """Shared API of the sRGB noise models: vocabularies, context building, NLL, sampling."""

    domain = "srgb"
    channels = 3

    def __init__(self, cameras: Sequence[str] = (), isos: Sequence[int] = ()) -> None:
        super().__init__()
        self.cameras = [str(c).lower() for c in cameras]
        self.isos = [int(i) for i in isos]
        self._cam_index = {c: i + 1 for i, c in enumerate(self.cameras)}
        self._iso_index = {v: i + 1 for i, v in enumerate(self.isos)}

    @property
    def n_iso(self) -> int:
        return len(self.isos) + 1

    @property
    def n_cam(self) -> int:
        return len(self.cameras) + 1

    def context(self, clean: Tensor | SRGBContext, iso: Any = None, camera: Any = None) -> SRGBContext:
        """Validated :class:`SRGBContext`. ``iso``: int / sequence / tensor (0 or None = unknown); ``camera``:
        name / sequence of names (None = unknown). Values not in the fit-time vocabulary map to "unknown"."""
        ref = next(iter(self.buffers()), None)
        ref = next(self.parameters(), ref)
        device = ref.device if ref is not None else torch.device("cpu")
        if isinstance(clean, SRGBContext):
            return clean.to(device=device)
        clean = _as_clean(clean)
        b = clean.shape[0]
        isos = _as_list(iso, b, "iso")
        cams = _as_list(camera, b, "camera")
        iso_idx = [self._iso_index.get(int(i), 0) if i is not None else 0 for i in isos]
        cam_idx = [self._cam_index.get(str(c).lower(), 0) if c is not None else 0 for c in cams]
        return SRGBContext(clean.to(device), torch.tensor(iso_idx, device=device),
                           torch.tensor(cam_idx, device=device), self.n_iso, self.n_cam)

    def nll_per_dim(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        """NLL in nats per dimension ``[B]`` (noise in 8-bit levels: the discrete 8-bit NLL bound)."""
        return -self.log_prob(noise, clean, iso, camera) / noise[0].numel()

    def _check_noise(self, noise: Tensor, ctx: SRGBContext) -> Tensor:
        if not isinstance(noise, Tensor):
            raise InputError(f"noise must be a tensor, got {type(noise).__name__}.", "use torch.as_tensor.")
        noise = noise[None] if noise.dim() == 3 else noise
        if tuple(noise.shape) != tuple(ctx.clean.shape):
            raise InputError(f"noise shape {tuple(noise.shape)} does not match clean {tuple(ctx.clean.shape)}.",
                             "pass noise and clean of the same [B, 3, H, W] shape.")
        if not torch.isfinite(noise).all():
            raise InputError("noise contains NaN/Inf.", "clean the data first.")
        return noise.to(device=ctx.clean.device, dtype=ctx.clean.dtype)


class SRGBNoiseFlow(_SRGBNoiseModel):
    """sRGB Noise Flow ``log p(n | clean, ISO, camera)`` over ``3·H·W`` noise values (in 8-bit levels).

    Args:
        arch: ``|``-separated ``CL2`` / ``CAC`` tokens, noise → latent order (default: the released model).
        width: hidden channels of the coupling nets (4 in the paper).
        cameras, isos: fit-time vocabularies (lower-case camera names, ISO values); index 0 = unknown.
        noise_std: fixed initial scale (DN) applied first (``FixedScale``); the fit sets it to the training std.
        seed: seed of the random 1×1-conv initialisation.
    """

    kind = "srgb_noiseflow"

    def __init__(self, arch: str = DEFAULT_ARCH, width: int = 4, cameras: Sequence[str] = (),
                 isos: Sequence[int] = (), noise_std: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(cameras, isos)
        tokens = [t.strip().upper() for t in arch.split("|") if t.strip()]
        bad = [t for t in tokens if t not in ("CL2", "CAC")]
        if not tokens or bad:
            raise ConfigError(f"invalid sRGB Noise Flow arch {arch!r} (unknown layers {bad}).",
                              "use '|'-separated CL2 and CAC layers.")
        self.arch, self.width, self.noise_std, self.seed = "|".join(tokens), int(width), float(noise_std), seed
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        layers: list[Bijector] = [FixedScale(self.noise_std)]
        for t in tokens:
            if t == "CL2":
                layers.append(ConditionalLinear(self.n_iso, self.n_cam))
            else:
                layers.extend(cac_step(self.n_iso, self.n_cam, self.width, gen).layers)
        self.transform = Compose(*layers)
        self.prior = StandardNormal()

    def model_config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "cameras": self.cameras, "isos": self.isos,
                "noise_std": self.noise_std, "seed": self.seed}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def encode(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> tuple[Tensor, Tensor]:
        """Noise → latent ``(z, log|det| [B])``."""
        ctx = self.context(clean, iso, camera)
        return self.transform(self._check_noise(noise, ctx), ctx)

    def decode(self, z: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        """Latent → noise (exact)."""
        ctx = self.context(clean, iso, camera)
        return self.transform.inverse(self._check_noise(z, ctx), ctx)[0]

    def log_prob(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        """``log p(noise | clean, iso, camera)`` in nats per image/patch ``[B]``."""
        z, ld = self.encode(noise, clean, iso, camera)
        return self.prior.log_prob(z) + ld

    def forward(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        return self.log_prob(noise, clean, iso, camera)

    @torch.no_grad()
    def sample(self, clean: Any, iso: Any = None, camera: Any = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """Noise samples in 8-bit levels ``[B, 3, H, W]`` (use eval mode)."""
        ctx = self.context(clean, iso, camera)
        y = ctx.clean
        eps = torch.randn(tuple(y.shape), generator=generator, dtype=y.dtype).to(y.device)
        return self.transform.inverse(eps * temperature, ctx)[0]


class SRGBGaussianNoise(_SRGBNoiseModel):
    """Baseline: i.i.d. zero-mean Gaussian noise with one variance (DN²), fitted as the unbiased sample variance
    of all training noise values (dequantised)."""

    kind = "srgb_gaussian"

    def __init__(self, variance: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("variance", torch.tensor(float(variance)))

    @classmethod
    def fit(cls, noise: Tensor) -> SRGBGaussianNoise:
        return cls(float(noise.double().var()))

    def model_config(self) -> dict[str, Any]:
        return {"variance": float(self.variance)}

    def _var(self, ctx: SRGBContext) -> Tensor:
        return self.variance.to(ctx.clean.dtype).expand_as(ctx.clean)

    def log_prob(self, noise: Tensor, clean: Any, iso: Any = None, camera: Any = None) -> Tensor:
        ctx = self.context(clean, iso, camera)
        n = self._check_noise(noise, ctx)
        var = self._var(ctx)
        return -0.5 * sum_except_batch(math.log(2 * math.pi) + torch.log(var) + n * n / var)

    @torch.no_grad()
    def sample(self, clean: Any, iso: Any = None, camera: Any = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        ctx = self.context(clean, iso, camera)
        eps = torch.randn(tuple(ctx.clean.shape), generator=generator, dtype=ctx.clean.dtype).to(ctx.clean.device)
        return eps * temperature * torch.sqrt(self._var(ctx))


class SRGBHeteroscedasticNoise(SRGBGaussianNoise):
    """Baseline: heteroscedastic Gaussian per channel, ``var_c = a_c·clean_c + b_c`` (DN², clean in [0, 1]),
    fitted by least squares of the squared training noise on the clean value, floored at ``min_variance``."""

    kind = "srgb_heteroscedastic"

    def __init__(self, a: Sequence[float] = (0.0, 0.0, 0.0), b: Sequence[float] = (1.0, 1.0, 1.0),
                 min_variance: float = 1.0 / 12.0) -> None:
        _SRGBNoiseModel.__init__(self)
        self.register_buffer("a", torch.tensor([float(v) for v in a]))
        self.register_buffer("b", torch.tensor([float(v) for v in b]))
        self.min_variance = float(min_variance)

    @classmethod
    def fit(cls, noise: Tensor, clean: Tensor | None = None) -> SRGBHeteroscedasticNoise:  # type: ignore[override]
        if clean is None:
            raise InputError("the heteroscedastic baseline needs the clean images to fit.", "pass clean.")
        clean = _as_clean(clean).double()
        n2 = noise.double() ** 2
        a, b = [], []
        for c in range(3):
            y, v = clean[:, c].reshape(-1), n2[:, c].reshape(-1)
            ym, vm = y.mean(), v.mean()
            cov = ((y - ym) * (v - vm)).mean()
            slope = float(cov / ((y - ym) ** 2).mean().clamp_min(1e-12))
            a.append(slope)
            b.append(float(vm - slope * ym))
        return cls(a, b)

    def model_config(self) -> dict[str, Any]:
        return {"a": self.a.tolist(), "b": self.b.tolist(), "min_variance": self.min_variance}

    def _var(self, ctx: SRGBContext) -> Tensor:
        y = ctx.clean
        var = self.a.to(y.dtype)[None, :, None, None] * y + self.b.to(y.dtype)[None, :, None, None]
        return var.clamp_min(self.min_variance)


@register_model_kind("srgb_noiseflow")
def _build_flow(config: dict[str, Any]) -> SRGBNoiseFlow:
    return SRGBNoiseFlow(**config)


@register_model_kind("srgb_gaussian")
def _build_gauss(config: dict[str, Any]) -> SRGBGaussianNoise:
    return SRGBGaussianNoise(**config)


@register_model_kind("srgb_heteroscedastic")
def _build_hetero(config: dict[str, Any]) -> SRGBHeteroscedasticNoise:
    return SRGBHeteroscedasticNoise(**config)


# ------------------------------------------------------------------------------------------------ metrics
@torch.no_grad()
def nll_per_dim(model: nn.Module, patches: dict, seed: int = 0, batch_size: int = 256) -> float:
    """Mean NLL (nats/dim) of 8-bit ``patches`` (dict of uint8 ``noisy``/``clean``, ``iso``, ``camera``) under
    ``model``, with the dequantisation noise ``u`` drawn from ``seed`` (the same ``u`` for every model)."""
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    n = patches["noisy"].shape[0]
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        noise = dequantize_noise(patches["noisy"][sl], patches["clean"][sl], gen)
        lp = model.log_prob(noise, patches["clean"][sl], patches["iso"][sl], patches["camera"][sl])
        total += float(-lp.double().sum())
        count += noise.numel()
    model.train(was)
    return total / count


def _hist(x: Tensor) -> Tensor:
    """Counts of integer values −255…255 per row of ``x [N, D]`` → ``[N, 511]``."""
    idx = (x.long() + 255).clamp(0, 510)
    out = torch.zeros(x.shape[0], 511, dtype=torch.float64)
    return out.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def marginal_kl(real: Tensor, model: Tensor) -> float:
    """Mean over patches of ``KL(p‖q)`` between the histograms of integer noise (one bin per level) of the real
    patches ``p`` and the model's ``q`` (``[N, ...]`` each); bins where ``p`` or ``q`` is empty are dropped, as in
    the official Noise Flow protocol (``docs/noiseflow.md`` §8)."""
    if real.shape[0] != model.shape[0]:
        raise InputError(f"marginal_kl needs the same number of patches, got {real.shape[0]} and {model.shape[0]}.")
    p = _hist(real.reshape(real.shape[0], -1))
    q = _hist(model.reshape(model.shape[0], -1))
    p = p / p.sum(1, keepdim=True)
    q = q / q.sum(1, keepdim=True)
    mask = (p > 0) & (q > 0)
    kl = torch.where(mask, p * torch.log(torch.where(mask, p / q, torch.ones_like(p))), torch.zeros_like(p))
    return float(kl.sum(1).mean())


@torch.no_grad()
def evaluate_srgb_noise_models(models: dict[str, nn.Module], patches: dict, seed: int = 0,
                               batch_size: int = 256) -> dict[str, dict[str, float]]:
    """NLL/dim and marginal KL of every model on held-out 8-bit ``patches``; samples at T = 1 (eval mode),
    quantised with :func:`quantize_noisy`. Returns ``{name: {"nll_per_dim", "kl"}}``."""
    real = integer_noise(patches["noisy"], patches["clean"])
    out = {}
    for name, model in models.items():
        was = model.training
        model.eval()
        gen = torch.Generator().manual_seed(seed + 1)
        fake = []
        for i in range(0, real.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            n = model.sample(patches["clean"][sl], patches["iso"][sl], patches["camera"][sl], 1.0, gen)
            fake.append(integer_noise(quantize_noisy(patches["clean"][sl], n.cpu()), patches["clean"][sl]))
        model.train(was)
        out[name] = {"nll_per_dim": nll_per_dim(model, patches, seed, batch_size),
                     "kl": marginal_kl(real, torch.cat(fake))}
    return out


# ------------------------------------------------------------------------------------------------ training
class SRGBNoiseTask:
    """:class:`~visionflows.training.TrainTask` fitting :class:`SRGBNoiseFlow` on random patches of 8-bit pairs.

    Loss: NLL in nats/dim of the dequantised noise (fresh ``u`` per batch). ``evaluate``: NLL/dim on ``test``
    grid patches (at most ``eval_patches``), if given.
    """

    name = "srgb-noiseflow"
    unit = "nats/dim"

    def __init__(self, train: Any, batch_size: int = 32, patch: int = 32, test: Any = None,
                 eval_patches: int = 256, arch: str = DEFAULT_ARCH, width: int = 4, seed: int = 0) -> None:
        self.train_pairs, self.test_pairs = train, test
        self.batch_size, self.patch, self.eval_patches = int(batch_size), int(patch), int(eval_patches)
        self.arch, self.width, self.seed = arch, int(width), int(seed)
        gen = torch.Generator().manual_seed(12345)
        probe = train.random_patches(512, patch, gen)
        self.noise_std = float(dequantize_noise(probe["noisy"], probe["clean"], gen).std())
        self.cameras, self.isos = train.vocab()
        self._eval = test.grid_patches(patch, eval_patches, seed) if test is not None else None

    def build_model(self) -> SRGBNoiseFlow:
        return SRGBNoiseFlow(self.arch, self.width, self.cameras, self.isos, self.noise_std, self.seed)

    def config(self) -> dict[str, Any]:
        return {"data": getattr(self.train_pairs, "root", ""), "train_images": list(self.train_pairs.names),
                "batch_size": self.batch_size, "patch": self.patch, "arch": self.arch, "width": self.width,
                "noise_std": self.noise_std, "cameras": self.cameras, "isos": self.isos}

    def batch(self, step: int, generator: torch.Generator) -> dict:
        p = self.train_pairs.random_patches(self.batch_size, self.patch, generator)
        p["noise"] = dequantize_noise(p["noisy"], p["clean"], generator)
        return p

    def loss(self, model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        nll = model.nll_per_dim(batch["noise"], batch["clean"], batch["iso"], batch["camera"]).mean()
        return nll, {"per_dim": float(nll.detach())}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self._eval is None:
            return {}
        return {"test_nll_per_dim": nll_per_dim(model, self._eval, self.seed)}


def fit_srgb_noise_flow(train: Any, run_dir: Any, steps: int = 1000, batch_size: int = 32, patch: int = 32,
                        lr: float = 1e-3, test: Any = None, seed: int = 0, width: int = 4, progress: bool = False,
                        resume: bool = False, overwrite: bool = False, **train_kwargs: Any) -> SRGBNoiseFlow:
    """Train an :class:`SRGBNoiseFlow` on ``train`` (:class:`~visionflows.data.srgb_pairs.SRGBPairs`) with the
    shared trainer into ``run_dir``; returns the trained model in eval mode."""
    from visionflows.training import TrainConfig
    from visionflows.training import train as run_train

    task = SRGBNoiseTask(train, batch_size, patch, test, width=width, seed=seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, tensorboard=False,
                      checkpoint_every=max(steps, 1), log_every=max(1, steps // 20), device="cpu", **train_kwargs)
    return run_train(task, cfg, run_dir, resume=resume, overwrite=overwrite).model.eval()
