"""One property-test protocol for every invertible layer (also for users' own layers).

:func:`check_bijector` builds a layer, runs one training-mode forward (data-dependent init happens), perturbs
every parameter by ``0.1·randn`` (so zero-initialised layers are not the identity and every log-det term is
exercised), switches to eval mode, then checks:

* finite outputs of the right shape and dtype, log-dets of shape ``[B]``;
* round trip relative error < 1e-5 (float32) and < 1e-10 (float64);
* the float64 log-det summed over the batch equals ``log|det|`` of the full autograd Jacobian of the batch;
* forward and inverse log-dets sum to zero;
* a non-zero gradient reaches every trainable parameter;
* a ``state_dict`` round trip into a fresh instance gives identical outputs (and no re-initialisation);
* eval-mode outputs are the same with and without autograd.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["BijectorCase", "check_bijector", "context_to"]


@dataclass
class BijectorCase:
    """An example for the harness: ``make()`` builds a fresh layer; ``x`` (≤ 1,024 values) and ``context``."""

    name: str
    make: Callable[[], Any]
    x: Tensor
    context: Any = None
    rtol32: float = 1e-5
    rtol64: float = 1e-10
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:
        return f"BijectorCase({self.name!r}, x={tuple(self.x.shape)})"


def context_to(context: Any, dtype: torch.dtype) -> Any:
    """Convert the floating tensors of a context (None, a tensor, or an object with ``.to(dtype)``)."""
    if context is None:
        return None
    if isinstance(context, Tensor):
        return context.to(dtype) if context.is_floating_point() else context
    return context.to(dtype)


def _rel_err(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) / scale


def _fail(name: str, msg: str) -> None:
    raise AssertionError(f"[{name}] {msg}")


def check_bijector(case: BijectorCase, perturb: float = 0.1, seed: int = 0) -> dict[str, float]:
    """Run the full protocol on ``case``; raise ``AssertionError`` naming the failing property.

    Returns the measured errors (``roundtrip32``, ``roundtrip64``, ``logdet_vs_jacobian``, ``logdet_sum``).
    """
    name = case.name
    torch.manual_seed(seed)
    layer = case.make()
    x32 = case.x.to(torch.float32)
    ctx32 = context_to(case.context, torch.float32)
    if x32.numel() > 1024:
        _fail(name, f"example input has {x32.numel()} values; keep it at most 1,024 for the Jacobian check")

    # 1. training-mode forward (data-dependent init), then perturb every parameter.
    layer.train()
    layer(x32, ctx32)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    layer.eval()
    report: dict[str, float] = {}

    # 2. float32: shapes, finiteness, round trip.
    z, ld = layer(x32, ctx32)
    b = x32.shape[0]
    if not (isinstance(ld, Tensor) and ld.shape == (b,)):
        _fail(name, f"log-det must be a tensor of shape ({b},), got {getattr(ld, 'shape', type(ld))}")
    if z.dtype != torch.float32 or ld.dtype != torch.float32:
        _fail(name, f"float32 input gave z {z.dtype}, logdet {ld.dtype}")
    if z.shape[0] != b or not torch.isfinite(z).all() or not torch.isfinite(ld).all():
        _fail(name, "non-finite output or wrong batch size")
    x_back, ld_inv = layer.inverse(z, ctx32)
    if x_back.shape != x32.shape:
        _fail(name, f"inverse shape {tuple(x_back.shape)} != input shape {tuple(x32.shape)}")
    report["roundtrip32"] = _rel_err(x_back, x32)
    if report["roundtrip32"] > case.rtol32:
        _fail(name, f"float32 round trip relative error {report['roundtrip32']:.3g} > {case.rtol32}")

    # 3. float64: round trip, Jacobian log-det, log-det cancellation.
    layer64 = copy.deepcopy(layer).to(torch.float64)
    x64 = case.x.to(torch.float64)
    ctx64 = context_to(case.context, torch.float64)
    z64, ld64 = layer64(x64, ctx64)
    if z64.dtype != torch.float64 or ld64.dtype != torch.float64:
        _fail(name, f"float64 input gave z {z64.dtype}, logdet {ld64.dtype}")
    xb64, ldi64 = layer64.inverse(z64, ctx64)
    report["roundtrip64"] = _rel_err(xb64, x64)
    if report["roundtrip64"] > case.rtol64:
        _fail(name, f"float64 round trip relative error {report['roundtrip64']:.3g} > {case.rtol64}")
    report["logdet_sum"] = float((ld64 + ldi64).detach().abs().max())
    if report["logdet_sum"] > 1e-8 * max(1.0, float(ld64.detach().abs().max())):
        _fail(name, f"forward and inverse log-dets do not cancel (max |sum| {report['logdet_sum']:.3g})")

    def flat_forward(v: Tensor) -> Tensor:
        return layer64(v.view_as(x64), ctx64)[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(flat_forward, x64.reshape(-1), vectorize=True)
    if jac.shape[0] != jac.shape[1]:
        _fail(name, f"the layer changes the number of values ({jac.shape[1]} -> {jac.shape[0]})")
    sign, logabsdet = torch.linalg.slogdet(jac.detach())
    if sign == 0:
        _fail(name, "the Jacobian is singular")
    report["logdet_vs_jacobian"] = abs(float(logabsdet) - float(ld64.detach().sum()))
    if report["logdet_vs_jacobian"] > 1e-8 * max(1.0, abs(float(logabsdet))):
        _fail(
            name,
            f"log-det {float(ld64.sum()):.10g} != log|det J| {float(logabsdet):.10g} of the autograd Jacobian",
        )

    # 4. gradients reach every trainable parameter.
    layer.zero_grad(set_to_none=True)
    zg, ldg = layer(x32, ctx32)
    weights = torch.randn(zg.shape, generator=gen)
    if any(p.requires_grad for p in layer.parameters()):
        ((zg * weights).sum() + (zg * zg).sum() + ldg.sum()).backward()
    missing = [
        n for n, p in layer.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    if missing:
        _fail(name, f"no gradient reaches parameter(s) {missing}")
    layer.zero_grad(set_to_none=True)

    # 5. state_dict round trip into a fresh instance (no re-initialisation on reload).
    fresh = case.make()
    fresh.load_state_dict(copy.deepcopy(layer.state_dict()))
    fresh.eval()
    with torch.no_grad():
        z_ref, ld_ref = layer(x32, ctx32)
        z_new, ld_new = fresh(x32, ctx32)
    if not (torch.equal(z_ref, z_new) and torch.equal(ld_ref, ld_new)):
        _fail(name, "a fresh instance loaded from state_dict gives different outputs")
    before = {k: v.clone() for k, v in fresh.state_dict().items() if k.endswith(("loc", "log_scale"))}
    fresh.train()
    with torch.no_grad():
        fresh(x32, ctx32)
    after = fresh.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    if changed:
        _fail(name, f"reloaded layer re-initialised {changed} on its first training forward")

    # 6. eval output identical with and without autograd.
    z_grad, ld_grad = layer(x32, ctx32)
    if not (torch.equal(z_grad.detach(), z_ref) and torch.equal(ld_grad.detach(), ld_ref)):
        _fail(name, "eval-mode output differs with and without autograd")
    return report
