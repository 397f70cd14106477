"""Invertible 1x1 convolutions (Glow), plain and LU-parameterised."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import InputError
from visionflows.flows.base import Bijector, logdet_dtype

__all__ = ["InvertibleConv1x1", "LUInvertibleConv1x1", "random_rotation"]


def random_rotation(channels: int, generator: torch.Generator | None = None) -> Tensor:
    """A random orthogonal ``[C, C]`` matrix (Q of the QR decomposition of a Gaussian matrix), float64."""
    a = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))[None, :]


def _mix_channels(w: Tensor, x: Tensor) -> Tensor:
    """``z[:, o] = Σ_i w[o, i] x[:, i]`` per pixel as one batched matmul ``[C, C] @ [B, C, H·W]``.

    Same values as ``F.conv2d(x, w[:, :, None, None])`` up to float rounding, but much faster for the few
    channels of flows (oneDNN's NCHW 1×1 convolution is slow and allocates reordered copies)."""
    b, c, h, wd = x.shape
    # bmm on an expanded weight: the same kernel with and without autograd (matmul's path depends on it)
    return torch.bmm(w.expand(b, -1, -1), x.reshape(b, c, h * wd)).view(b, w.shape[0], h, wd)


class _Conv1x1Base(Bijector):
    channels: int

    def weight(self) -> Tensor:  # [C, C]: z[:, o] = sum_i W[o, i] x[:, i]
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        raise NotImplementedError

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InputError(f"1x1 conv expects [B, {self.channels}, H, W], got shape {tuple(x.shape)}.")

    def _weights(self, dtype: torch.dtype, inverse: bool) -> tuple[Tensor, Tensor]:
        """``(W or W⁻¹ in dtype, log|det W|)``. Under ``no_grad`` (eval, sampling) the result is cached until a
        parameter or buffer changes (keyed on their storage and version counters); with grad it is rebuilt."""
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if cacheable:
            key = (dtype, inverse, *((t.data_ptr(), t._version) for t in self._state_tensors()))
            cache = self.__dict__.get("_weight_cache")
            if cache is not None and cache[0] == key:
                return cache[1]
        w = self.weight()
        if inverse:
            w = torch.linalg.inv(w.to(torch.float64))
        out = (w.to(dtype), self.log_abs_det())
        if cacheable:
            self.__dict__["_weight_cache"] = (key, out)
        return out

    def _state_tensors(self) -> list[Tensor]:
        return [*self.parameters(recurse=False), *self.buffers(recurse=False)]

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        w, lad = self._weights(x.dtype, inverse=False)
        ld = (lad.to(logdet_dtype(x)) * (x.shape[2] * x.shape[3])).expand(x.shape[0])
        return _mix_channels(w, x), ld

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        self._check(z)
        w_inv, lad = self._weights(z.dtype, inverse=True)
        ld = -(lad.to(logdet_dtype(z)) * (z.shape[2] * z.shape[3])).expand(z.shape[0])
        return _mix_channels(w_inv, z), ld


class InvertibleConv1x1(_Conv1x1Base):
    """``z = W x`` per pixel with a full ``[C, C]`` weight, initialised to a random rotation.

    ``log|det| = H·W·log|det W|`` computed with ``slogdet`` in float64.
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.matrix = nn.Parameter(random_rotation(channels, generator).float())

    def weight(self) -> Tensor:
        return self.matrix

    def log_abs_det(self) -> Tensor:
        return torch.linalg.slogdet(self.matrix.to(torch.float64))[1].to(self.matrix.dtype)


class LUInvertibleConv1x1(_Conv1x1Base):
    """LU-parameterised 1x1 conv: ``A = P · L · (U + diag(sign · exp(log_s)))`` (Glow / Noise Flow).

    ``P`` (permutation) and ``sign`` are buffers; ``L`` is unit lower-triangular, ``U`` strictly upper.
    ``log|det| = H·W·Σ log_s``. With ``row_vector=True`` the map is ``z = x A`` for a row vector ``x``
    (TensorFlow's convention, used by the official Noise Flow), i.e. the conv weight is ``Aᵀ``; otherwise
    the weight is ``A``.
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None, row_vector: bool = False) -> None:
        super().__init__()
        import scipy.linalg

        self.channels = channels
        self.row_vector = bool(row_vector)
        w = random_rotation(channels, generator).numpy()
        p, lower, upper = scipy.linalg.lu(w)
        s = upper.diagonal().copy()
        rows, cols = torch.tril_indices(channels, channels, -1)
        self.register_buffer("tril_index", torch.stack([rows, cols]), persistent=False)
        self.register_buffer("permutation", torch.from_numpy(p).float())
        self.register_buffer("sign_s", torch.from_numpy(s).sign().float())
        # only the free entries are parameters: C(C−1)/2 below and above the diagonal
        self.lower = nn.Parameter(torch.from_numpy(lower).float()[rows, cols])
        self.upper = nn.Parameter(torch.from_numpy(upper).float()[cols, rows])
        self.log_s = nn.Parameter(torch.from_numpy(abs(s)).log().float())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, row_vector={self.row_vector}"

    def lower_matrix(self) -> Tensor:
        """Unit lower-triangular ``L`` ``[C, C]``."""
        rows, cols = self.tril_index
        m = torch.eye(self.channels, device=self.lower.device, dtype=self.lower.dtype)
        return m.index_put((rows, cols), self.lower)

    def upper_matrix(self) -> Tensor:
        """``U + diag(sign·exp(log_s))`` ``[C, C]``."""
        rows, cols = self.tril_index
        m = torch.diag(self.sign_s.to(self.log_s.dtype) * torch.exp(self.log_s))
        return m.index_put((cols, rows), self.upper)

    @torch.no_grad()
    def set_triangles(self, lower: Tensor, upper: Tensor) -> None:
        """Set the free entries from full ``[C, C]`` strictly lower / strictly upper matrices."""
        rows, cols = self.tril_index
        self.lower.copy_(torch.as_tensor(lower, dtype=self.lower.dtype)[rows, cols])
        self.upper.copy_(torch.as_tensor(upper, dtype=self.upper.dtype)[cols, rows])

    def matrix(self) -> Tensor:
        """``A = P L (U + diag(sign·exp(log_s)))`` as ``[C, C]``."""
        return self.permutation.to(self.lower.dtype) @ self.lower_matrix() @ self.upper_matrix()

    def weight(self) -> Tensor:
        a = self.matrix()
        return a.t() if self.row_vector else a

    def log_abs_det(self) -> Tensor:
        return self.log_s.sum()
