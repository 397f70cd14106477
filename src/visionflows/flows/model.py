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

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from visionflows.flows.base import Bijector

__all__ = ["FlowModel", "batch_size_of"]


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

    # -- hooks -----------------------------------------------------------------------------------------
    def prepare_context(self, context: Any, x: Tensor | None = None) -> Any:
        """Validate ``context`` (against data ``x`` when given) and move it to the model's device.

        Unconditional models (``conditional = False``) refuse any context (a misplaced positional argument)."""
        if context is None:
            return None
        if not self.conditional:
            from visionflows.errors import InputError

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
        ctx = self.prepare_context(context, x)
        return self.transform(x.to(self.reference_tensor().device), ctx)

    def decode(self, z: Tensor, context: Any = None) -> Tensor:
        """Latent → data, exactly (no sampling)."""
        ctx = self.prepare_context(context, z)
        return self.transform.inverse(z.to(self.reference_tensor().device), ctx)[0]

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
        num_samples, context = split_sample_args(num_samples, context)
        ctx = self.prepare_context(context)
        if num_samples is None:
            if ctx is None:
                raise ValueError("give num_samples or a context")
            num_samples = batch_size_of(ctx)
        ref = self.reference_tensor()
        z = self.prior.sample(self.latent_shape(int(num_samples), ctx), temperature, generator, ref.device, ref.dtype)
        return self.postprocess(self.transform.inverse(z, ctx)[0])

    # -- examples --------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple[Tensor, Any]:
        """Small valid ``(x, context)`` for this model (harness, docs)."""
        raise NotImplementedError(f"{type(self).__name__} must define example_inputs() for the model harness")


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
