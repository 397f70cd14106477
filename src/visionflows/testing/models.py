"""The model harness: one protocol for every registered model (see :mod:`visionflows.flows.model`).

:func:`check_model` builds a preset (with the reduced size its registry entry states, if any), brings it into a
usable state (one training-mode pass for data-dependent initialisation, the entry's ``setup``), then checks in eval
mode, for density models (:class:`~visionflows.flows.FlowModel`):

* ``log_prob(x, context)`` is finite, of shape ``[B]``, and equals ``prior.log_prob(z) + logdet`` of
  ``encode(preprocess(x))`` under the same generator (the contract's definition);
* ``decode(encode(x))`` returns ``x`` (relative error < 1e-4 in float32) and the log-det has shape ``[B]``;
* ``sample`` returns the data's shape, the same samples for the same generator seed and different ones for
  another seed, and finite values;
* ``save_model`` → ``load_model`` gives an identical ``log_prob``, and so does a ``state_dict`` round trip into a
  freshly created preset;
* a gradient reaches the trainable parameters through ``log_prob`` (if it has any).

Non-density models (denoisers) get the forward-shape, determinism, save/load and state-dict checks. Presets marked
``construct_only`` are built at their reduced size, their parameter count compared with the stated full-size one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_model"]


def _fail(name: str, msg: str) -> None:
    raise AssertionError(f"[{name}] {msg}")


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(model: Any, x: Tensor, context: Any, seed: int, temperature: float = 0.9) -> Tensor:
    if context is None:
        return model.sample(x.shape[0], temperature=temperature, generator=_gen(seed))
    return model.sample(context, temperature=temperature, generator=_gen(seed))


def check_model(name: str, batch_size: int = 2, seed: int = 0, **overrides: Any) -> dict[str, float]:
    """Run the model protocol on registered preset ``name``; raise ``AssertionError`` naming the failed property.

    ``overrides`` are added to the registry entry's harness overrides. Returns the measured errors.
    """
    from visionflows.flows.model import FlowModel
    from visionflows.io import load_model, save_model
    from visionflows.registry import create_model, model_info

    info = model_info(name)
    spec = info.harness
    kwargs = {**spec.overrides, **overrides}
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    report: dict[str, float] = {}
    if spec.construct_only:
        built = sum(p.numel() for p in model.parameters())
        if spec.reduced_param_count is None or built != spec.reduced_param_count:
            _fail(name, f"the reduced build has {built} parameters; its entry states {spec.reduced_param_count}")
        if spec.param_count is None or spec.param_count <= built:
            _fail(name, f"the full-size parameter count {spec.param_count} must be stated and exceed the reduced one")
        report["parameters_reduced"] = float(built)
        report["parameters_full"] = float(spec.param_count)
        return report
    if not hasattr(model, "example_inputs"):
        _fail(name, "the model has no example_inputs()")
    x, context = model.example_inputs(batch_size, _gen(seed + 1))
    if spec.setup is not None:
        spec.setup(model, x, context)
    density = isinstance(model, FlowModel)
    if density != info.density:
        _fail(name, f"registry says density={info.density} but the model is {type(model).__name__}")

    # data-dependent initialisation happens in a first training-mode pass
    model.train()
    if density:
        model.log_prob(x, context, generator=_gen(seed + 2))
    else:
        model(x)
    model.eval()

    def score(m: Any) -> Tensor:
        with torch.no_grad():
            return m.log_prob(x, context, generator=_gen(seed + 3)) if density else m(x)

    ref = score(model)
    if density:
        if ref.shape != (x.shape[0],):
            _fail(name, f"log_prob must have shape ({x.shape[0]},), got {tuple(ref.shape)}")
        if not torch.isfinite(ref).all():
            _fail(name, f"log_prob is not finite: {ref.tolist()}")
        with torch.no_grad():
            data = model.preprocess(x, _gen(seed + 3))
            z, logdet = model.encode(data, context)
            via_prior = model.prior.log_prob(z) + logdet
            back = model.decode(z, context)
        if logdet.shape != (x.shape[0],):
            _fail(name, f"encode's log-det must have shape ({x.shape[0]},), got {tuple(logdet.shape)}")
        report["log_prob_vs_encode"] = _rel(ref, via_prior)
        if report["log_prob_vs_encode"] > 1e-5:
            err = report["log_prob_vs_encode"]
            _fail(name, f"log_prob differs from prior.log_prob(encode(x)) + logdet by {err:.3g} (relative)")
        report["roundtrip"] = _rel(back, data)
        if report["roundtrip"] > 1e-4:
            _fail(name, f"decode(encode(x)) differs from x by {report['roundtrip']:.3g} (relative)")
        s1, s2, s3 = (_sample(model, x, context, s) for s in (seed + 4, seed + 4, seed + 5))
        if tuple(s1.shape) != tuple(x.shape):
            _fail(name, f"sample has shape {tuple(s1.shape)}, the data {tuple(x.shape)}")
        if not torch.isfinite(s1).all():
            _fail(name, "samples are not finite")
        if not torch.equal(s1, s2):
            _fail(name, "sample is not deterministic under a generator")
        if torch.equal(s1, s3):
            _fail(name, "samples for different generator seeds are identical")
        trainable = [p for p in model.parameters() if p.requires_grad]
        if trainable:
            model.zero_grad(set_to_none=True)
            model.log_prob(x, context, generator=_gen(seed + 3)).sum().backward()
            if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable):
                _fail(name, "no gradient reaches any parameter through log_prob")
            model.zero_grad(set_to_none=True)
    else:
        if tuple(ref.shape) != tuple(x.shape):
            _fail(name, f"output shape {tuple(ref.shape)} != input shape {tuple(x.shape)}")
        if not torch.equal(ref, score(model)):
            _fail(name, "eval-mode output is not deterministic")

    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / f"{name}.safetensors")
        loaded = load_model(path)
    if type(loaded) is not type(model):
        _fail(name, f"load_model returned {type(loaded).__name__}, saved {type(model).__name__}")
    if not torch.equal(score(loaded), ref):
        _fail(name, "save_model -> load_model changes the output")
    fresh = create_model(name, **kwargs)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    if not torch.equal(score(fresh), ref):
        _fail(name, "a fresh preset loaded from state_dict gives a different output")
    return report
