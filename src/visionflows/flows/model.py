"""The model contract: every density model of visionflows is a :class:`FlowModel`, a bijector plus a prior.

``log p(x | c) = log p_Z(f(preprocess(x); c)) + log|det ∂f/∂x|``

Rules every subclass MUST keep (the model harness :func:`visionflows.testing.check_model` checks them):

* ``kind`` (class attribute) names its file kind and ``model_config()`` returns JSON-able constructor arguments:
  ``type(m)(**m.model_config())`` (or ``type(m).from_config(...)``) rebuilds it, so
  :func:`visionflows.save_model` / :func:`visionflows.load_model` round-trip every model.
* ``encode(x, context) -> (z, logdet [B])`` maps data → latent exactly and deterministically, on the flow's data
  space (what :meth:`preprocess` returns); ``decode(z, context) -> x`` is its exact inverse.
* ``log_prob(x, context, *, generator=None) -> [B]`` is the log-density in nats per sample of ``x`` in the
  user's space, equal to ``prior.log_prob(z) + logdet`` of ``encode(preprocess(x, generator), context)``.
  ``preprocess`` is the identity for continuous data; image models dequantise integer pixels with noise drawn
  from ``generator``.
* ``sample(num_samples | context, *, temperature=1.0, generator=None)`` returns ``[B, ...]`` samples in the same
  space as ``log_prob``'s input (``postprocess(decode(z))``); the same generator state gives the same samples;
  ``temperature`` scales the latent (0 decodes the latent mode).
* One typed context per family (``None`` for unconditional models), validated once by :meth:`prepare_context`;
  a context has ``batch_size`` (or is a tensor whose first dimension is the batch).
* :meth:`example_inputs` returns small valid ``(x, context)`` for the harness and the docs.
* Nothing is logged inside ``forward``/``log_prob``; eval mode never changes state.

Paper-specific sugar (``noise_model.sample(clean, iso, camera)``, ``wavelet.super_resolve``) lives on the
subclasses as thin wrappers over these methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.base import Bijector
from visionflows.validation import MAX_TEMPERATURE

__all__ = ["FlowModel", "batch_size_of", "check_data", "check_generator", "check_image_batch", "check_num_samples",
           "check_temperature"]



def check_temperature(temperature: Any, anneal: bool = False) -> float:
    """A finite sampling temperature in ``[0, MAX_TEMPERATURE]`` (``> 0`` when annealing) as a float;
    :class:`~visionflows.errors.InputError` if not."""
    if isinstance(temperature, bool) or (isinstance(temperature, Tensor) and temperature.numel() != 1):
        raise InputError(f"temperature must be a number, got {temperature!r}.", "pass e.g. 0.8.")
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"temperature must be a number, got {temperature!r}.", "pass e.g. 0.8.") from None
    if not math.isfinite(t):
        raise InputError(f"temperature must be finite, got {t}.", "pass a temperature like 0.8 or 1.0.")
    if anneal and t <= 0.0:
        raise InputError(
            f"annealed sampling needs a temperature T > 0 (it targets p^γ with γ = 1/T²), got {t}.",
            "pass a temperature in (0, 1], e.g. 0.97 (the paper's), or use T = 0 without annealing for the mode.",
        )
    if t < 0.0:
        raise InputError(f"temperature must be ≥ 0, got {t}.", "pass a temperature in [0, 1], e.g. 0.8.")
    if t > MAX_TEMPERATURE:
        raise InputError(f"temperature {t:g} is above {MAX_TEMPERATURE:g}: the latent would be scaled so far that "
                         "samples overflow into meaningless values.", "pass a temperature in [0, 1], e.g. 0.8.")
    return t


def check_num_samples(num_samples: Any, name: str = "num_samples") -> int:
    """``num_samples`` as an int ≥ 1 (an int or a 0-d integer tensor; bools, floats and strings are refused)."""
    n = num_samples
    if isinstance(n, Tensor) and n.dim() == 0 and not n.is_floating_point() and n.dtype != torch.bool:
        n = int(n)
    if hasattr(n, "__index__") and not isinstance(n, (bool, Tensor)):
        n = int(n.__index__())  # numpy integers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        got = (f"a {num_samples.dtype} tensor of shape {tuple(num_samples.shape)}" if isinstance(num_samples, Tensor)
               else f"{num_samples!r} ({type(num_samples).__name__})")
        raise InputError(f"{name} must be an integer ≥ 1, got {got}.",
                         "pass the number of samples to draw as a positive int, e.g. sample(4).")
    return n


def check_generator(generator: Any) -> torch.Generator | None:
    """``generator`` if it is ``None`` or a :class:`torch.Generator`; :class:`InputError` otherwise."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.",
                         "pass generator=torch.Generator().manual_seed(seed).")
    return generator


def check_data(x: Any, name: str = "x", finite: bool = True) -> Tensor:
    """``x`` if it is a non-empty floating-point tensor (and finite, when ``finite``): the checks every public
    entry point on a flow's continuous data makes before any work. :class:`InputError` naming the problem."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.", "convert it with torch.as_tensor.")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor (the flow's continuous data), got dtype {x.dtype}.",
                         "image models: score pixels with log_prob(images), or dequantise them first with "
                         "model.preprocess(images); otherwise convert with x.float().")
    if x.dim() == 0 or x.shape[0] == 0:
        raise InputError(f"{name} has no samples (shape {tuple(x.shape)}).", "pass a batch of at least one sample.")
    if finite and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN/Inf value(s).",
                         "clean the data first (e.g. torch.nan_to_num) or drop the affected samples.")
    return x



def check_image_batch(x: Any, channels: int, resolution: int, what: str = "dequantised") -> Tensor:
    """:func:`check_data`, and ``x`` is ``[B, channels, resolution, resolution]``: the continuous input of an image
    flow's ``encode`` (``what`` names its scaling in the message)."""
    check_data(x, "encode's input x")
    want = (channels, resolution, resolution)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise InputError(f"encode expects {what} images [B, {want[0]}, {want[1]}, {want[2]}], got {tuple(x.shape)}.",
                         "dequantise pixels first with model.preprocess(images).")
    return x

class FlowModel(nn.Module):
    """A bijector ``transform`` (data → latent) and a ``prior`` over its latent.

    Args:
        transform: the bijector ``f``.
        prior: a module with ``log_prob(z) -> [B]`` and ``sample(shape, temperature, generator, device, dtype)``.
        event_shape: the per-sample latent shape (e.g. ``(C, H, W)``) for unconditional sampling; conditional
            models override :meth:`latent_shape` instead.
    """

    kind: ClassVar[str] = "flow"
    #: whether the model takes a context (unconditional models refuse one)
    conditional: ClassVar[bool] = True

    def __init__(self, transform: Bijector, prior: nn.Module, event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.transform = transform
        self.prior = prior
        self.event_shape = tuple(event_shape) if event_shape is not None else None

    # -- configuration --------------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must define model_config() to be saved")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlowModel:
        """Rebuild an untrained model from :meth:`model_config`."""
        return cls(**config)

    def num_parameters(self, trainable: bool = True) -> int:
        """Number of (trainable) parameter values."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)

    def reference_tensor(self) -> Tensor:
        """A parameter or buffer (for device and dtype); a float32 CPU scalar for a model without any."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.zeros(())

    def _like_model(self, x: Tensor) -> Tensor:
        """``x`` on the model's device and, for a model with floating parameters or buffers, in their dtype."""
        ref = next(self.parameters(), None)
        if ref is None:
            ref = next((b for b in self.buffers() if b.is_floating_point()), None)
        return x.to(self.reference_tensor().device) if ref is None else x.to(ref.device, ref.dtype)

    # -- hooks -----------------------------------------------------------------------------------------
    def prepare_context(self, context: Any, x: Tensor | None = None) -> Any:
        """Validate ``context`` (against data ``x`` when given) and move it to the model's device.

        Unconditional models (``conditional = False``) refuse any context (a misplaced positional argument)."""
        if context is None:
            return None
        if not self.conditional:
            raise InputError(f"{type(self).__name__} is unconditional but got a context of type "
                             f"{type(context).__name__}.", "pass temperature and generator by keyword.")
        ref = self.reference_tensor()
        if isinstance(context, Tensor):
            return context.to(ref.device)
        to = getattr(context, "to", None)
        return to(device=ref.device) if to is not None else context

    def preprocess(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """User space → the flow's data space (identity; image models dequantise here)."""
        return x

    def postprocess(self, data: Tensor) -> Tensor:
        """The flow's data space → user space (identity; image models return pixels here)."""
        return data

    # -- exact maps ------------------------------------------------------------------------------------
    def encode(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """Data → latent: ``(z, log|det ∂z/∂x| [B])``. Deterministic."""
        check_data(x, "encode's input x")
        ctx = self.prepare_context(context, x)
        return self.transform(self._like_model(x), ctx)

    def decode(self, z: Tensor, context: Any = None) -> Tensor:
        """Latent → data, exactly (no sampling)."""
        check_data(z, "decode's latent z")
        ctx = self.prepare_context(context, z)
        if ctx is None and (not self.conditional or self.event_shape is not None):
            want = tuple(self.latent_shape(int(z.shape[0])))
            if tuple(z.shape) != want:
                raise InputError(f"decode expects latents of shape {want} ([B, ...] as encode returns), got "
                                 f"{tuple(z.shape)}.", "pass z from model.encode(x) (or of that shape).")
        return self.transform.inverse(self._like_model(z), ctx)[0]

    # -- densities -------------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Any = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Log-density in nats per sample, ``[B]``."""
        z, logdet = self.encode(self.preprocess(x, generator), context)
        return self.prior.log_prob(z) + logdet

    def forward(self, x: Tensor, context: Any = None) -> Tensor:  # what DDP / torch.compile wrap
        return self.log_prob(x, context)

    # -- sampling --------------------------------------------------------------------------------------
    def latent_shape(self, num_samples: int, context: Any = None) -> tuple[int, ...]:
        """The full latent shape ``[B, ...]`` to sample for ``num_samples`` (or the context's batch)."""
        if self.event_shape is None:
            raise ValueError(f"{type(self).__name__} has no event_shape; pass a context or override latent_shape")
        return (num_samples, *self.event_shape)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int | Any = None,
        context: Any = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw samples: prior sample at ``temperature``, decode, postprocess. Give ``num_samples`` or a context
        (a context may also be passed as the first argument)."""
        if not self.conditional and num_samples is not None and not _is_context_like(num_samples):
            num_samples = check_num_samples(num_samples)
        num_samples, context = split_sample_args(num_samples, context)
        temperature = check_temperature(temperature)
        check_generator(generator)
        ctx = self.prepare_context(context)
        if num_samples is None:
            if ctx is None:
                raise InputError(f"{type(self).__name__}.sample needs num_samples or a context.",
                                 "call model.sample(n) (or model.sample(context) for a conditional model).")
            num_samples = batch_size_of(ctx)
        num_samples = check_num_samples(num_samples)
        ref = self.reference_tensor()
        z = self.prior.sample(self.latent_shape(num_samples, ctx), temperature, generator, ref.device, ref.dtype)
        return self.postprocess(self.transform.inverse(z, ctx)[0])

    # -- examples --------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple[Tensor, Any]:
        """Small valid ``(x, context)`` for this model (harness, docs)."""
        raise NotImplementedError(f"{type(self).__name__} must define example_inputs() for the model harness")


def _is_context_like(value: Any) -> bool:
    """A tensor of at least one dimension (or a context object) passed where ``num_samples`` goes."""
    return (isinstance(value, Tensor) and value.dim() > 0) or hasattr(value, "batch_size")


def split_sample_args(num_samples: Any, context: Any) -> tuple[int | None, Any]:
    """``sample(context)`` is allowed: a non-integer first argument is the context."""
    if num_samples is not None and not isinstance(num_samples, int) and context is None:
        if isinstance(num_samples, Tensor) and num_samples.dim() == 0:
            return int(num_samples), None
        return None, num_samples
    return (None if num_samples is None else int(num_samples)), context


def batch_size_of(context: Any) -> int:
    """The batch size of a context (a tensor's first dimension, or its ``batch_size``)."""
    if isinstance(context, Tensor):
        return int(context.shape[0])
    if hasattr(context, "batch_size"):
        return int(context.batch_size)
    raise ValueError(f"cannot infer the batch size from a context of type {type(context).__name__}")
