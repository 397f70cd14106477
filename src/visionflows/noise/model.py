"""The Noise Flow model (Abdelhamed, Brubaker & Brown, ICCV 2019) and its presets.

``NoiseFlow(arch)`` builds the bijector stack of an official architecture string (``sdn5``, ``sdn4``,
``gain4``, ``unc`` separated by ``|``) over a standard-normal prior on all ``4·H·W`` dimensions.

Every noise model of :mod:`visionflows.noise` (flows and baselines) is a :class:`~visionflows.noise.base.NoiseModel`
(a :class:`~visionflows.flows.FlowModel` over noise given a :class:`NoiseContext`); see there for the API.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.cameras import CAMERAS
from visionflows.errors import ConfigError, InputError
from visionflows.flows import Bijector, Compose, StandardNormal
from visionflows.noise.base import NoiseModel, resolve_context
from visionflows.noise.context import NoiseContext
from visionflows.noise.fused import NoiseFlowTransform, squared_norm
from visionflows.noise.layers import GainLayer, SignalDependentLayer, unconditional_step
from visionflows.noise.param_layers import ParamGainLayer, ParamSignalLayer
from visionflows.registry import register_model

__all__ = [
    "NoiseFlow",
    "PRESETS",
    "PARAM_PRESETS",
    "create_model",
    "list_models",
    "count_parameters",
    "resolve_context",
]

#: name -> (arch string, paper name, official trainable-parameter count incl. unused scalars, §6)
PRESETS: dict[str, tuple[str, str, int]] = {
    "noiseflow": ("sdn5|unc|unc|unc|unc|gain4|unc|unc|unc|unc", "S-Ax4-G-Ax4-CAM (released Noise Flow)", 2433),
    "noiseflow_s_ax1_g_ax1": ("sdn5|unc|gain4|unc", "S-Ax1-G-Ax1-CAM", 627),
    "noiseflow_s_g_cam": ("sdn5|gain4", "S-G-CAM", 25),
    "noiseflow_s_g": ("sdn4|gain4", "S-G (no camera parameters)", 10),
    "noiseflow_unconditional": ("unc|unc|unc|unc", "Ax4 (unconditional)", 1204),
}
#: Noise Flow conditioned on measured noise parameters (a visionflows preset beside the paper's; see
#: :mod:`visionflows.noise.param_layers`): name -> (arch, description)
PARAM_PRESETS: dict[str, tuple[str, str]] = {
    "noiseflow_nlf": ("sdnp|unc|unc|unc|unc|gainp|unc|unc|unc|unc",
                      "S(K, σ²)-Ax4-G(K, σ²)-Ax4: the released architecture with the camera one-hot replaced by "
                      "measured per-channel noise parameters (any camera)"),
}
_TOKENS = ("sdn5", "sdn4", "gain4", "unc", "sdnp", "gainp")
_LOG_2PI = math.log(2 * math.pi)


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    """Number of trainable parameter values; ``trainable=False`` adds the fixed unused ``rescaling_scale0``
    scalars (the official count, as TF counts trainable variables)."""
    total = 0
    seen: set[int] = set()
    for m in module.modules():
        for _name, p in m.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            total += p.numel()
        if not trainable:
            for name, b in m.named_buffers(recurse=False):
                if name == "unused_rescaling_scale":
                    total += b.numel()
    return total


class NoiseFlow(NoiseModel):
    """Noise Flow: ``log p(n | y, ISO, camera) = log N(f(n); 0, I) + log|det ∂f/∂n|``.

    Args:
        arch: ``|``-separated layers, noise → latent order: ``sdn5`` (signal-dependent, camera parameters),
            ``sdn4`` (no camera parameters), ``gain4`` (one scalar gain), ``unc`` (LU 1×1 conv + affine coupling),
            ``sdnp`` / ``gainp`` (signal-dependent layer and gain from the context's measured noise parameters
            ``nlf``, :mod:`visionflows.noise.param_layers`; such a model ignores ISO and camera, which it does
            not need: every context must carry ``nlf``).
        width: hidden channels of the coupling networks (4 in the paper).
        channels: packed raw channels (4).
        continuous_iso: accept any positive ISO, interpolating the ISO gain in log-ISO (see
            :class:`SignalDependentLayer`); otherwise refuse ISOs outside ``ISOS``.
        num_cameras: columns of the camera parameters (5: IP, GP, S6, N6, G4; more for a model trained on other
            cameras or adapted to a new one, see :mod:`visionflows.noise.adapt`).
        seed: seed of the random orthogonal 1×1-conv and coupling initialisation.

    Layer ``transform.layers[i]`` with names in :attr:`layer_names` (``sdn0``, ``conv1x1_1``, ``coupling_1``, …;
    the index is the official bijector index).
    """

    kind = "noiseflow"
    #: in eval mode without autograd, batches are processed in chunks of at most this many values (256 patches of
    #: 32×32×4): bounded temporaries stay cache-sized and avoid the allocator's page faults on large buffers
    eval_chunk_values: int = 1 << 20

    def __init__(
        self,
        arch: str = PRESETS["noiseflow"][0],
        width: int = 4,
        channels: int = 4,
        continuous_iso: bool = False,
        seed: int | None = 0,
        num_cameras: int | None = len(CAMERAS),
        camera_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(arch, str):
            raise ConfigError(f"Noise Flow arch must be a string like {PRESETS['noiseflow'][0]!r}, got {arch!r}.",
                              f"use '|'-separated layers from {_TOKENS}.")
        for name, v in (("width", width), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"Noise Flow {name} must be an integer ≥ 1, got {v!r}.",
                                  f"pass {name} as a positive int (the released model: width 4, channels 4).")
        if num_cameras is not None and (isinstance(num_cameras, bool) or not isinstance(num_cameras, int)
                                        or num_cameras < 1):
            raise ConfigError(f"Noise Flow num_cameras must be an integer ≥ 1 or None, got {num_cameras!r}.",
                              "pass the number of cameras of the one-hot (5 for SIDD).")
        tokens = [t.strip() for t in arch.split("|") if t.strip()]
        unknown = [t for t in tokens if t not in _TOKENS]
        if not tokens or unknown:
            raise ConfigError(f"invalid Noise Flow arch {arch!r} (unknown layers {unknown}).",
                              f"use '|'-separated layers from {_TOKENS}.")
        arch = "|".join(tokens)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        layers: list[Bijector] = []
        names: list[str] = []
        for b, tok in enumerate(tokens):
            if tok in ("sdn5", "sdn4"):
                layers.append(SignalDependentLayer(camera_params=tok == "sdn5", continuous_iso=continuous_iso,
                                                   num_cameras=len(CAMERAS) if num_cameras is None else num_cameras))
                names.append(f"sdn{b}")
            elif tok == "gain4":
                layers.append(GainLayer())
                names.append(f"gain{b}")
            elif tok == "sdnp":
                layers.append(ParamSignalLayer())
                names.append(f"sdnp{b}")
            elif tok == "gainp":
                layers.append(ParamGainLayer())
                names.append(f"gainp{b}")
            else:
                if gen is not None:
                    fork = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                        step = unconditional_step(channels, width, generator=fork)
                else:
                    step = unconditional_step(channels, width)
                layers.extend(step.layers)
                names.extend([f"conv1x1_{b}", f"coupling_{b}"])
        super().__init__(NoiseFlowTransform(*layers), StandardNormal())
        self.arch, self.width, self.channels = arch, int(width), int(channels)
        self.uses_measured_params = any(t in ("sdnp", "gainp") for t in tokens)
        if self.uses_measured_params:  # nothing is indexed by ISO or camera
            continuous_iso, num_cameras = True, None
        self.continuous_iso, self.seed = bool(continuous_iso), seed
        self.num_cameras = None if num_cameras is None else int(num_cameras)
        self.layer_names = names
        if camera_names is None:
            n = self.num_cameras or 0
            camera_names = CAMERAS[:n] + tuple(f"camera {i}" for i in range(len(CAMERAS), n))
        self.camera_names = tuple(str(c) for c in camera_names)
        if self.num_cameras is not None and len(self.camera_names) != self.num_cameras:
            raise ConfigError(f"{len(self.camera_names)} camera names for {self.num_cameras} cameras.",
                              "give one name per camera column.")
        if self.uses_measured_params:  # measured (K, σ²) per channel of registered cameras (`noise adapt`)
            self.register_buffer("camera_nlf", torch.zeros(len(self.camera_names), channels, 2, dtype=torch.float64))

    # -- config ---------------------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "channels": self.channels,
                "continuous_iso": self.continuous_iso, "seed": self.seed, "num_cameras": self.num_cameras,
                "camera_names": list(self.camera_names)}

    def camera_index(self, name: str) -> int:
        """Index of camera ``name`` among :attr:`camera_names` (case-insensitive; SIDD codes too)."""
        for i, c in enumerate(self.camera_names):
            if c.lower() == name.strip().lower():
                return i
        raise InputError(f"Unknown camera {name!r}: this model has no such camera.",
                         f"use one of {', '.join(self.camera_names) or 'none (pass measured noise parameters)'}, "
                         "or add it with `visionflows noise adapt`.")

    def context(self, clean: Tensor | NoiseContext, iso: Any = None, camera: Any = None,
                noise: Tensor | None = None, nlf: Any = None) -> NoiseContext:
        """:meth:`NoiseModel.context`, with camera names of this model (e.g. an adapted sixth camera) and, for a
        measured-parameter model, the registered cameras' (K, σ²) when no ``nlf`` is given."""
        if isinstance(camera, str) and camera.strip().upper() not in CAMERAS:
            camera = self.camera_index(camera)
        elif isinstance(camera, (list, tuple)) and any(isinstance(c, str) for c in camera):
            camera = [self.camera_index(c) if isinstance(c, str) and c.strip().upper() not in CAMERAS else c
                      for c in camera]
        ctx = super().context(clean, iso, camera, noise=noise, nlf=nlf)
        if self.uses_measured_params and ctx.nlf is None and len(self.camera_names):
            if bool((ctx.camera < len(self.camera_names)).all()):
                ctx = ctx.with_nlf(self.camera_nlf[ctx.camera.to(self.camera_nlf.device)].to(ctx.clean.device))
        return ctx

    @property
    def signal_dependent(self) -> bool:
        """Whether the noise distribution depends on the clean signal (has a signal-dependent layer)."""
        return any(isinstance(m, (SignalDependentLayer, ParamSignalLayer)) for m in self.transform.layers)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None,
                       size: int = 8) -> tuple[Tensor, NoiseContext]:
        """Noise and a context (with measured per-channel noise parameters when the arch uses them)."""
        noise, ctx = super().example_inputs(batch_size, generator, size)
        if self.uses_measured_params:
            k = torch.tensor([2e-4, 1e-4, 3e-4, 1e-4], dtype=torch.float64)
            nlf = torch.stack([k, k * 1e-2], dim=-1)[None] * torch.linspace(1, 4, batch_size,
                                                                           dtype=torch.float64)[:, None, None]
            ctx = ctx.with_nlf(nlf)
        return noise, ctx

    def num_parameters(self, official: bool = False) -> int:
        """Free trainable values (LU triangles as vectors); ``official=True`` adds the unused scalars (§6)."""
        return count_parameters(self, trainable=not official)

    def layer(self, name: str) -> Bijector:
        """The layer called ``name`` (e.g. ``'coupling_6'``)."""
        try:
            return self.transform.layers[self.layer_names.index(name)]
        except ValueError:
            raise KeyError(f"no layer {name!r}; layers: {self.layer_names}") from None

    # -- exact maps -----------------------------------------------------------------------------------
    def _transform(self, inverse: bool, x: Tensor, ctx: NoiseContext) -> tuple[Tensor, Tensor]:
        """The transform (or its inverse), chunked over the batch when every layer is in eval mode and autograd is
        off (samples are then independent; same values up to float rounding). The native fast path
        (:mod:`visionflows.noise.fused`) works per sample already and is not chunked."""
        if isinstance(self.transform, NoiseFlowTransform):
            out = self.transform.run_fast(x, ctx, inverse=inverse)
            if out is not None:
                return out[0], out[1]
            fn = functools.partial(Compose.inverse if inverse else Compose.forward, self.transform)
        else:
            fn = self.transform.inverse if inverse else self.transform
        per_sample = max(1, x[0].numel())
        size = max(1, self.eval_chunk_values // per_sample)
        if (x.shape[0] <= size or torch.is_grad_enabled() or torch.compiler.is_compiling()
                or any(m.training for m in self.modules())):
            return fn(x, ctx)
        outs = [fn(x[i : i + size], ctx[i : i + size]) for i in range(0, x.shape[0], size)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def log_prob(self, x: Tensor, context: Tensor | NoiseContext = None, iso: Any = None, camera: Any = None,
                 nlf: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(noise | clean, iso, camera)`` in nats per patch, ``[B]`` (see :class:`NoiseModel`); on the native
        fast path in eval mode the kernel also returns ``Σ z²`` for the standard-normal prior."""
        if isinstance(self.transform, NoiseFlowTransform) and type(self.prior) is StandardNormal:
            x = _batched(x)
            ctx = self.context(context, iso, camera, noise=x, nlf=nlf)
            x = x.to(ctx.clean.device)
            out = self.transform.run_fast(x, ctx, sq_norm=True)
            if out is None:
                z, logdet = self._transform(False, x, ctx)
                return self.prior.log_prob(z) + logdet
            z, logdet, sq = out
            if sq is None:  # training or autograd: the same prior in one pass each way
                sq = squared_norm(z)
            return logdet - 0.5 * (sq + x[0].numel() * _LOG_2PI)
        return super().log_prob(x, context, iso, camera, nlf=nlf, generator=generator)

    def trace(self, noise: Tensor, clean: Tensor | NoiseContext, iso: Any = None,
              camera: Any = None) -> tuple[list[Tensor], list[Tensor]]:
        """Noise → latent state and cumulative log-det after every layer (input first)."""
        noise = _batched(noise)
        ctx = self.context(clean, iso, camera, noise=noise)
        return self.transform.trace(noise.to(ctx.clean.device), ctx)

    def trace_inverse(self, z: Tensor, clean: Tensor | NoiseContext, iso: Any = None,
                      camera: Any = None) -> list[Tensor]:
        """Latent → noise state after every inverse layer (latent first; layers in reverse order)."""
        z = _batched(z)
        ctx = self.context(clean, iso, camera, noise=z)
        states = [z.to(ctx.clean.device)]
        for layer in reversed(self.transform.layers):
            states.append(layer.inverse(states[-1], ctx)[0])
        return states


def _batched(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}.", "use torch.as_tensor.")
    return x[None] if x.dim() == 3 else x


def list_models() -> list[str]:
    """Names of the Noise Flow presets (all registered in :mod:`visionflows.registry`, family ``noise``)."""
    return list(PRESETS)


def create_model(name: str = "noiseflow", **kwargs: Any) -> NoiseFlow:
    """A freshly initialised preset (``list_models()``); ``kwargs`` go to :class:`NoiseFlow`."""
    if name in PARAM_PRESETS:
        return NoiseFlow(arch=PARAM_PRESETS[name][0], **kwargs)
    if name not in PRESETS:
        raise ConfigError(f"unknown Noise Flow preset {name!r}.",
                          f"choose one of {', '.join([*PRESETS, *PARAM_PRESETS])}.")
    return NoiseFlow(arch=PRESETS[name][0], **kwargs)


def _register_preset(name: str) -> None:
    arch, paper_name, official_count = PRESETS[name]

    def preset(**overrides: Any) -> NoiseFlow:
        return NoiseFlow(**{"arch": arch, **overrides})

    preset.__doc__ = f"Noise Flow {paper_name}: arch {arch!r}, {official_count} parameters (official count)."
    preset.__qualname__ = preset.__name__ = name
    register_model(name, family="noise")(preset)


for _name in PRESETS:
    _register_preset(_name)


@register_model("noiseflow_nlf", family="noise")
def noiseflow_nlf(**overrides: Any) -> NoiseFlow:
    """Noise Flow conditioned on measured per-channel noise parameters (K, σ²) instead of a camera one-hot:
    the released architecture with ``sdnp``/``gainp`` layers; applies to cameras it never saw."""
    return NoiseFlow(**{"arch": PARAM_PRESETS["noiseflow_nlf"][0], **overrides})
