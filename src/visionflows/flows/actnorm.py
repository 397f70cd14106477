"""ActNorm (Glow): a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.base import Bijector, logdet_dtype

__all__ = ["ActNorm", "actnorm_statistics"]


def actnorm_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population variance of ``x`` over every dim but 1.

    Under ``torch.distributed`` the sums are all-reduced, so every rank gets the statistics of the *global*
    batch (identical on all ranks).
    """
    dims = [d for d in range(x.dim()) if d != 1]
    xd = x.detach().to(torch.float64)
    count = torch.tensor(float(xd.numel() // xd.shape[1]), dtype=torch.float64, device=x.device)
    s1 = xd.sum(dim=dims)
    s2 = (xd * xd).sum(dim=dims)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        packed = torch.cat([s1, s2, count[None]])
        dist.all_reduce(packed)
        c = x.shape[1]
        s1, s2, count = packed[:c], packed[c : 2 * c], packed[-1]
    mean = s1 / count
    var = (s2 / count - mean * mean).clamp_min(0.0)
    return mean, var


class ActNorm(Bijector):
    """Per-channel ``z = (x - loc) * exp(-scale_factor * log_scale)``; ``x: [B, C, ...]``.

    On the first forward in training mode (data-dependent init, DDI) ``loc`` becomes the channel mean and
    ``exp(scale_factor * log_scale)`` the channel std, so the output has zero mean and unit variance. The
    ``initialized`` flag is a persistent buffer: a reloaded model never re-initialises. Under DDP the
    statistics are all-reduced, so every rank initialises identically.

    ``scale_factor`` is Glow's "logscale factor" (3 in Wavelet Flow); ``eps`` is added to the variance.
    A channel whose variance is exactly zero in the init batch raises :class:`InputError`.
    """

    def __init__(self, channels: int, scale_factor: float = 1.0, eps: float = 1e-6, ddi: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.scale_factor = float(scale_factor)
        self.eps = float(eps)
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(not ddi, dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale_factor={self.scale_factor}"

    def _shape(self, x: Tensor) -> list[int]:
        return [1, self.channels] + [1] * (x.dim() - 2)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialisation from the batch ``x`` (all-reduced under torch.distributed)."""
        mean, var = actnorm_statistics(x)
        if (var == 0).any():
            bad = (var == 0).nonzero().flatten().tolist()
            raise InputError(
                f"ActNorm data-dependent init: channel(s) {bad} have zero variance in the init batch.",
                "initialise on a larger or more varied batch (constant channels cannot be normalised).",
            )
        std = torch.sqrt(var + self.eps)
        self.loc.copy_(mean.to(self.loc.dtype))
        self.log_scale.copy_((torch.log(std) / self.scale_factor).to(self.log_scale.dtype))
        self.initialized.fill_(True)
        self.__dict__["_initialized_seen"] = True

    def needs_init(self) -> bool:
        """True in training mode until DDI has run. Once the ``initialized`` buffer has been seen true, the answer
        is cached in Python (reset by ``load_state_dict``), so ``torch.compile`` traces no tensor→bool break."""
        if not self.training or self.__dict__.get("_initialized_seen", False):
            return False
        if bool(self.initialized):
            self.__dict__["_initialized_seen"] = True
            return False
        return True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.pop("_initialized_seen", None)
        super()._load_from_state_dict(*args, **kwargs)

    def _logdet(self, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()
        ld = -self.scale_factor * self.log_scale.to(logdet_dtype(x)).sum() * pixels
        return ld.expand(x.shape[0])

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        if x.shape[1] != self.channels:
            raise InputError(f"ActNorm expects {self.channels} channels, got shape {tuple(x.shape)}.")
        if self.needs_init():
            self.initialize(x)
        shape = self._shape(x)
        z = (x - self.loc.view(shape)) * torch.exp(-self.scale_factor * self.log_scale).view(shape)
        return z, self._logdet(x)

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        shape = self._shape(z)
        x = z * torch.exp(self.scale_factor * self.log_scale).view(shape) + self.loc.view(shape)
        return x, -self._logdet(z)
