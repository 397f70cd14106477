"""The fast CPU path of the Noise Flow transform: the native kernels of :mod:`visionflows.kernels` (``noiseflow.cpp``).

:class:`NoiseFlowTransform` is the :class:`~visionflows.flows.Compose` of a :class:`~visionflows.noise.NoiseFlow`.
Its ``forward`` (noise → latent) and ``inverse`` (latent → noise) use the kernels when :func:`fast_path_reason`
finds nothing against it (float32 CPU tensors, the layer types of the official architectures, the library built),
and the plain layer-by-layer PyTorch path otherwise; :attr:`NoiseFlowTransform.use_kernels` ``= False`` (or the
environment variable ``VISIONFLOWS_KERNELS=0``) forces the plain path. Both give the same values up to float32
rounding (``tests/test_noise_kernels.py``).

* **eval mode** (NLL, sampling, encode/decode): one kernel call runs every layer of a sample in cache-sized
  zero-padded planes (BatchNorm, the ``exp(3·logs)`` gain and the edge ring folded into the convolutions, as in
  :meth:`NoiseFlowCouplingNet.eval_params`). With autograd the gradients are those of the plain path, recomputed
  in the backward pass; the forward values are the kernel's, the same with and without autograd.
* **training mode**: each ``unc`` step (1×1 convolution + coupling, batch-statistics BatchNorm) is one fused
  forward kernel that keeps only the batch statistics, and one backward kernel that recomputes the activations;
  the BatchNorm running statistics are updated as ``nn.BatchNorm2d`` does; the signal-dependent layer has its own
  kernels and a gain is folded into the next 1×1 convolution (:mod:`visionflows.noise.kernel_ops`).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from visionflows import kernels
from visionflows.flows import AffineCoupling, Compose, logdet_dtype
from visionflows.flows.conv1x1 import _Conv1x1Base
from visionflows.noise.context import NoiseContext
from visionflows.noise.kernel_ops import _P, _padded_map, kernel_library, sdn_train, squared_norm, unc_train
from visionflows.noise.layers import GainLayer, NoiseFlowCouplingNet, SignalDependentLayer
from visionflows.noise.param_layers import ParamGainLayer, ParamSignalLayer

__all__ = ["NoiseFlowTransform", "fast_path_reason", "kernel_library", "squared_norm"]

# ------------------------------------------------------------------------------------------------ structure
def _unc_ok(conv: Any, coupling: Any) -> bool:
    if not (isinstance(conv, _Conv1x1Base) and conv.channels == 4 and type(coupling) is AffineCoupling):
        return False
    net = coupling.net
    if not (coupling.split == 2 and coupling.channels == 4 and coupling.context_channels == 0
            and not coupling.shift_first and type(net) is NoiseFlowCouplingNet):
        return False
    wd = net.l_1.out_channels
    return (wd in (4, 8) and net.l_1.in_channels == 2 and net.l_1.kernel_size == (3, 3) and net.l_1.padding == (1, 1)
            and net.l_last.conv.out_channels == 4 and net.l_last.conv.in_channels == wd + 1
            and all(bn.momentum is not None and bn.track_running_stats and not bn.affine and bn.num_features == wd
                    for bn in (net.bn_1, net.bn_2)))


def _structure(layers: Any) -> list[tuple] | None:
    """``[(kind, *modules)]`` with kind ``sdn`` / ``sdnp`` / ``gain`` / ``gainp`` / ``unc`` (conv, coupling), or
    ``None`` when a layer has no kernel."""
    ops: list[tuple] = []
    i, n = 0, len(layers)
    while i < n:
        layer = layers[i]
        kind = {SignalDependentLayer: "sdn", ParamSignalLayer: "sdnp", GainLayer: "gain",
                ParamGainLayer: "gainp"}.get(type(layer))
        if kind is not None:
            ops.append((kind, layer))
            i += 1
        elif i + 1 < n and _unc_ok(layer, layers[i + 1]):
            ops.append(("unc", layer, layers[i + 1]))
            i += 2
        else:
            return None
    if len({op[2].net.l_1.out_channels for op in ops if op[0] == "unc"}) > 1:
        return None  # one kernel call has one coupling width
    return ops


def _is_plain(t: Any) -> bool:
    """A strided CPU float32 tensor (not a subclass) the kernels can read through its pointer; functorch wrappers
    are excluded by :func:`fast_path_reason` (no functorch transform may be active)."""
    return ((type(t) is Tensor or type(t) is torch.nn.Parameter) and t.dtype == torch.float32
            and t.device.type == "cpu" and t.layout == torch.strided)


def _flat_state(transform: Compose) -> tuple[list[Tensor], list[Tensor]]:
    """``(parameters, buffers)`` of every submodule (parameters without duplicates)."""
    params: dict[int, Tensor] = {}
    buffers: list[Tensor] = []
    for m in transform.modules():
        for p in m._parameters.values():
            if p is not None:
                params.setdefault(id(p), p)
        buffers.extend(b for b in m._buffers.values() if b is not None)
    return list(params.values()), buffers


def mode_reason(transform: Compose) -> str | None:
    """Why no native kernel may run in the current mode, whatever the inputs (``None``: one may): switched off,
    compiling or tracing, or inside a functorch transform. Shared by the raw and the sRGB Noise Flow kernels."""
    if not getattr(transform, "use_kernels", True):
        return "use_kernels is False"
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return "compiling or tracing"
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return "inside a torch.func transform (vmap, grad, jacrev, ...)"
    return None


def fast_path_reason(transform: Compose, x: Tensor, context: Any,
                     params: list[Tensor] | None = None) -> str | None:
    """Why ``transform(x, context)`` would take the plain PyTorch path (``None``: it takes the kernels)."""
    reason = mode_reason(transform)
    if reason is not None:
        return reason
    if not _is_plain(x) or x.dim() != 4 or x.shape[1] != 4 or x.shape[0] == 0 or x.shape[2] * x.shape[3] == 0:
        return "input is not a non-empty float32 CPU tensor [B, 4, H, W]"
    if not isinstance(context, NoiseContext) or not _is_plain(context.clean) or context.clean.shape != x.shape:
        return "context clean patch is not a float32 CPU tensor of the input's shape"
    if context.clean.requires_grad or (context.nlf is not None and context.nlf.requires_grad):
        return "the context requires a gradient"
    ops = _ops(transform)
    if ops is None:
        return "a layer without a kernel"
    if not all(_is_plain(p) for p in (_flat_state(transform)[0] if params is None else params)):
        return "parameters are not float32 CPU tensors"
    modes = {op[2].net.training for op in ops if op[0] == "unc"}
    if len(modes) > 1:
        return "coupling networks in mixed train/eval modes"
    if modes == {True} and x.shape[0] * x.shape[2] * x.shape[3] < 2:
        return "training-mode BatchNorm of a single value (plain path raises)"
    if kernel_library() is None:
        return f"kernels unavailable ({kernels.build_error('noiseflow') or 'disabled'})"
    return None


def _ops(transform: Compose) -> list[tuple] | None:
    key = tuple(id(m) for m in transform.layers)
    cached = transform.__dict__.get("_vf_structure")
    if cached is None or cached[0] != key:
        cached = (key, _structure(transform.layers))
        transform.__dict__["_vf_structure"] = cached
    return cached[1]


def _training(ops: list[tuple]) -> bool:
    return any(op[0] == "unc" and op[2].net.training for op in ops)


# ----------------------------------------------------------------------------------------------- eval mode
def _unc_eval_params(conv: Any, coupling: AffineCoupling, height: int, width: int, inverse: bool) -> Tensor:
    """Packed eval parameters of one unc step: ``M[16] w1 b1 w2 b2 w3 λ bm`` (``M⁻¹`` for the inverse)."""
    m, _ = conv._weights(torch.float32, inverse=inverse)
    w1, b1, w2, b2, w3, bias_map = coupling.net.eval_params(height, width, torch.float32)
    lam = coupling.scale_bound.to(torch.float32).reshape(1)
    return torch.cat([m.reshape(-1), w1.reshape(-1), b1, w2.reshape(-1), b2, w3.reshape(-1), lam,
                      _padded_map(bias_map, width).reshape(-1)]).contiguous()


def _layer_logdet(op: tuple, x: Tensor, context: NoiseContext) -> Tensor | None:
    """The forward log-det ``[B]`` of a layer the kernel does not count (1×1 convolutions, gains); else None."""
    kind = op[0]
    b, n = x.shape[0], x[0].numel()
    if kind == "unc":
        lad = op[1].log_abs_det()
        return (lad.to(logdet_dtype(x)) * (x.shape[2] * x.shape[3])).expand(b)
    if kind == "gain":
        return (-n * torch.log(op[1].gain_val.to(x.dtype).abs())).to(logdet_dtype(x)).expand(b)
    if kind == "gainp":
        return (-n * op[1].log_gain(context, x.shape[1])).to(logdet_dtype(x))
    return None


def _eval_plan(transform: Compose, ops: list[tuple], x: Tensor, context: NoiseContext, inverse: bool,
               state: tuple[list[Tensor], list[Tensor]] | None = None) -> tuple[list[int], list[Tensor], Tensor]:
    """Kernel op types, their packed parameter tensors, and the log-det ``[B]`` of the layers the kernel leaves
    out (in the direction of ``inverse``). The unc parameters are cached until a parameter or buffer of the
    transform is replaced or modified in place (``state``: :func:`_flat_state`)."""
    b, _, h, w = x.shape
    params, buffers = _flat_state(transform) if state is None else state
    key = (h, w, inverse, tuple((t.data_ptr(), t._version) for t in (*params, *buffers)))
    cache = transform.__dict__.get("_vf_eval_cache")
    if cache is not None and cache[0] == key:
        unc_params, extra = cache[1]
    else:
        unc_params = [_unc_eval_params(op[1], op[2], h, w, inverse) for op in ops if op[0] == "unc"]
        extra = None
        for op in ops:
            if op[0] == "unc":
                ld = _layer_logdet(op, x[:1], context)
                extra = ld if extra is None else extra + ld
        transform.__dict__["_vf_eval_cache"] = (key, (unc_params, extra))
    types: list[int] = []
    params: list[Tensor] = []
    unc_iter = iter(unc_params)
    extra_ld = torch.zeros(b, dtype=torch.float32) if extra is None else extra.expand(b).clone()
    for op in ops:
        kind = op[0]
        if kind == "unc":
            types.append(2)
            params.append(next(unc_iter))
            continue
        if kind in ("sdn", "sdnp"):
            a, c = op[1].coefficients(context)
            if a.dim() == 1:
                a, c = a[:, None].expand(b, 4), c[:, None].expand(b, 4)
            types.append(0)
            params.append(torch.cat([a.reshape(-1), c.reshape(-1)]).to(torch.float32).contiguous())
            continue
        types.append(1)
        if kind == "gain":
            params.append(op[1].gain_val.to(torch.float32).reshape(1).expand(b).contiguous())
        else:
            params.append(torch.exp(op[1].log_gain(context, 4)).to(torch.float32).contiguous())
        extra_ld = extra_ld + _layer_logdet(op, x, context)
    return types, params, (-extra_ld if inverse else extra_ld)


def _eval_kernel(transform: Compose, ops: list[tuple], x: Tensor, context: NoiseContext, inverse: bool,
                 want_sq: bool = False, state: tuple[list[Tensor], list[Tensor]] | None = None,
                 ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(z, log-det [B], Σ z² [B] or None)`` of every layer in one kernel call (no autograd)."""
    with torch.no_grad():
        types, params, extra = _eval_plan(transform, ops, x, context, inverse, state)
        x = x.detach().contiguous()
        clean = context.clean.detach().contiguous()
        z = torch.empty_like(x)
        ld = torch.empty(x.shape[0], dtype=torch.float32)
        sq = torch.empty(x.shape[0], dtype=torch.float32) if want_sq else None
        wd = next(op[2].net.l_1.out_channels for op in ops if op[0] == "unc") if any(o[0] == "unc" for o in ops) else 4
        n = len(types)
        rc = kernel_library().nf_eval(
            x.data_ptr(), z.data_ptr(), ld.data_ptr(), None if sq is None else sq.data_ptr(), x.shape[0], x.shape[2],
            x.shape[3], clean.data_ptr(), n,
            ctypes.cast((ctypes.c_int * n)(*types), _P), ctypes.cast((_P * n)(*[p.data_ptr() for p in params]), _P),
            int(inverse), wd, torch.get_num_threads())
        if rc != 0:
            raise RuntimeError(f"nf_eval failed ({rc})")
        return z, ld.add_(extra), sq


class _EvalWithGrad(torch.autograd.Function):
    """Kernel values forward; the plain path's gradients backward (recomputed there)."""

    @staticmethod
    def forward(ctx, transform, context, inverse, x, *params):  # noqa: ANN001
        ops = _ops(transform)
        ctx.transform, ctx.context, ctx.inverse = transform, context, inverse
        ctx.save_for_backward(x, *params)
        z, ld, _ = _eval_kernel(transform, ops, x, context, inverse)
        return z, ld

    @staticmethod
    @once_differentiable
    def backward(ctx, gz, gld):  # noqa: ANN001
        return (None, None, None, *plain_path_gradients(ctx, ctx.needs_input_grad[3:], gz, gld))


def plain_path_gradients(ctx: Any, need: tuple[bool, ...], gz: Tensor, gld: Tensor) -> list[Tensor | None]:
    """Backward of a kernel's eval-mode values: the gradients of the saved ``(x, *params)`` (where ``need``) from the
    plain layer-by-layer path of ``ctx.transform`` (its :class:`Compose` methods), recomputed with autograd."""
    x, *params = ctx.saved_tensors
    with torch.enable_grad():
        xr = x.detach().requires_grad_(need[0])
        plain = Compose.inverse if ctx.inverse else Compose.forward
        z, ld = plain(ctx.transform, xr, ctx.context)
        inputs = [t for t, k in zip([xr, *params], need) if k]
        grads = iter(torch.autograd.grad((z, ld), inputs, (gz, gld), allow_unused=True))
    return [next(grads) if k else None for k in need]


# ---------------------------------------------------------------------------------------------- transform
class NoiseFlowTransform(Compose):
    """The layers of a Noise Flow (a :class:`Compose`), with the native fast path (module docstring)."""

    #: take the native kernels when possible (``False``: always the plain PyTorch path)
    use_kernels: bool = True

    def fast_path(self, x: Tensor, context: Any = None) -> bool:
        """Whether ``forward``/``inverse`` of ``x`` take the kernels (see :func:`fast_path_reason`)."""
        return fast_path_reason(self, x, context) is None

    def run_fast(self, x: Tensor, context: Any, inverse: bool = False,
                 sq_norm: bool = False) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """``(y, log-det [B], Σ y² [B] or None)`` through the kernels, or ``None`` when the plain path must be
        taken. ``sq_norm`` (eval mode, no autograd): also the per-sample sum of squares of the output."""
        if not self.use_kernels or torch.compiler.is_compiling():
            return None
        state = _flat_state(self)
        if fast_path_reason(self, x, context, state[0]) is not None:
            return None
        ops = _ops(self)
        if _training(ops):
            if inverse:  # a training-mode inverse (rare): plain
                return None
            return (*self._train_forward(ops, x, context), None)
        if torch.is_grad_enabled():
            params = [p for p in state[0] if p.requires_grad]
            if x.requires_grad or params:
                return (*_EvalWithGrad.apply(self, context, inverse, x, *params), None)
        return _eval_kernel(self, ops, x, context, inverse, want_sq=sq_norm, state=state)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        out = self.run_fast(x, context)
        return super().forward(x, context) if out is None else out[:2]

    def inverse(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        out = self.run_fast(z, context, inverse=True)
        return super().inverse(z, context) if out is None else out[:2]

    def _train_forward(self, ops: list[tuple], x: Tensor, context: NoiseContext) -> tuple[Tensor, Tensor]:
        logdet = torch.zeros(x.shape[0], dtype=logdet_dtype(x))
        gain = None
        for k, op in enumerate(ops):
            kind = op[0]
            if kind == "gain" and k + 1 < len(ops) and ops[k + 1][0] == "unc":
                gain = op[1].gain_val.to(x.dtype)  # folded into the next 1×1 convolution
                ld = _layer_logdet(op, x, context)
            elif kind == "unc":
                x, ld = unc_train(op[1], op[2], x, gain)
                gain = None
            elif kind in ("sdn", "sdnp"):
                x, ld = sdn_train(op[1], x, context)
            else:
                x, ld = op[1](x, context)
            logdet = logdet + ld
        return x, logdet
