"""Few-frame adaptation of a Noise Flow to a new camera: fit only the camera-specific parameters.

* **Camera one-hot models** (the released Noise Flow, ``sdn5``): :func:`add_camera` appends a column to the
  signal layer's ``cam_params`` (initialised to the mean of the existing cameras: the "before" of adaptation)
  under a new name; :func:`adapt_camera` then fits that column's three numbers (β1, β2 and gain multipliers of
  the new camera) by maximum likelihood on the given patches, everything else frozen (eval-mode BatchNorm).
  The official model gains a sixth camera.
* **Measured-parameter models** (``noiseflow_nlf``): the camera-specific parameters *are* the per-channel
  ``(K_c, σ²_c)``. They start from a per-channel heteroscedastic maximum-likelihood fit of the patches (or, with
  no fit, the median of the cameras already registered) and are then fitted through the flow's own likelihood;
  the result (the better of start and refinement on the given patches) is registered in the model
  (``camera_nlf``) under the camera's name.

The patches come from k noisy/clean pairs, or dark + flat frames (:mod:`visionflows.data.adaptation`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from visionflows.errors import ConfigError, InputError
from visionflows.noise.baselines import _fit_pair
from visionflows.noise.context import NoiseContext
from visionflows.noise.layers import SignalDependentLayer
from visionflows.noise.model import NoiseFlow
from visionflows.validation import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_number

__all__ = ["add_camera", "adapt_camera", "fit_measured_params", "camera_parameter_count"]


def _check_name(model: NoiseFlow, name: str) -> None:
    if not name or not name.strip():
        raise InputError("the new camera needs a name.", "pass --camera NAME.")
    if any(c.lower() == name.strip().lower() for c in model.camera_names):
        raise InputError(f"the model already has a camera {name!r}.", "choose another name.")


def add_camera(model: NoiseFlow, name: str) -> NoiseFlow:
    """A copy of ``model`` with one more camera called ``name`` (see the module docstring); ``model`` is kept."""
    _check_name(model, name)
    cfg = model.model_config()
    names = [*model.camera_names, name.strip()]
    if model.uses_measured_params:
        new = NoiseFlow(**{**cfg, "camera_names": names})
        state = model.state_dict()
        table = state.pop("camera_nlf")
        fill = table.median(dim=0).values[None] if table.shape[0] else torch.full_like(new.camera_nlf[:1], 1e-4)
        new.load_state_dict({**state, "camera_nlf": torch.cat([table, fill])})
        return new.eval()
    sdn = next((m for m in model.modules() if isinstance(m, SignalDependentLayer) and m.camera_params), None)
    if sdn is None:
        raise ConfigError(f"Noise Flow {model.arch!r} has no camera parameters to adapt.",
                          "adapt the released architecture (sdn5) or a measured-parameter model (noiseflow_nlf).")
    new = NoiseFlow(**{**cfg, "num_cameras": model.num_cameras + 1, "camera_names": names})
    state = model.state_dict()
    key = next(k for k in state if k.endswith("cam_params"))
    state[key] = torch.cat([state[key], state[key].mean(dim=1, keepdim=True)], dim=1)
    new.load_state_dict(state)
    return new.eval()


def camera_parameter_count(model: NoiseFlow) -> int:
    """Number of numbers :func:`adapt_camera` fits: 3 (a ``cam_params`` column) or ``2·channels``."""
    return 2 * model.channels if model.uses_measured_params else 3


def fit_measured_params(noise: Tensor, clean: Tensor, max_values: int = 200_000, seed: int = 0) -> Tensor:
    """``[C, 2]`` float64: per-channel maximum-likelihood ``(K_c, σ²_c)`` of ``n ~ N(0, K·y + σ²)``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in range(noise.shape[1]):
        y, n = clean[:, c].reshape(-1).double(), noise[:, c].reshape(-1).double()
        if y.numel() > max_values:
            pick = torch.randperm(y.numel(), generator=gen)[:max_values]
            y, n = y[pick], n[pick]
        out.append(_fit_pair(y, n, 50, 0.0))
    return torch.tensor(out, dtype=torch.float64)


def adapt_camera(model: NoiseFlow, name: str, noise: Tensor, clean: Tensor, iso: int, steps: int = 150,
                 lr: float = 0.05, batch_size: int = 64, seed: int = 0, init: str = "fit") -> tuple[NoiseFlow, dict]:
    """``(adapted copy of model, info)``: ``name`` added (:func:`add_camera`) and its parameters fitted on
    ``noise``/``clean`` ``[N, 4, H, W]`` at ``iso`` (module docstring). ``init`` (measured-parameter models):
    ``"fit"`` (heteroscedastic fit of the patches) or ``"median"`` (of the registered cameras).

    ``info``: ``{"camera", "index", "parameters", "nll_before", "nll_after"}`` (nats/dim on the given patches).
    """
    if not isinstance(noise, Tensor) or not isinstance(clean, Tensor):
        raise InputError(f"adaptation data must be tensors, got {type(noise).__name__} and {type(clean).__name__}.",
                         "convert them with torch.as_tensor.")
    check_number(steps, "steps", NON_NEGATIVE_INT)
    check_number(batch_size, "batch_size", POSITIVE_INT)
    check_number(lr, "lr", POSITIVE)
    if noise.shape != clean.shape or noise.dim() != 4 or noise.shape[0] == 0:
        raise InputError(f"adaptation data must be noise and clean [N, 4, H, W] of one shape, got "
                         f"{tuple(noise.shape)} and {tuple(clean.shape)}.", "give at least one pair of patches.")
    if noise.shape[1] != model.channels:
        raise InputError(f"adaptation patches have {noise.shape[1]} channels, the model {model.channels}.",
                         "pack the Bayer frames into 4 channels.")
    if init not in ("fit", "median"):
        raise ConfigError(f"unknown init {init!r}.", "use 'fit' or 'median'.")
    new = add_camera(model, name)
    index = len(new.camera_names) - 1
    for p in new.parameters():
        p.requires_grad_(False)
    if new.uses_measured_params:
        if init == "fit":
            new.camera_nlf[index] = fit_measured_params(noise, clean, seed=seed)
        theta = torch.log(new.camera_nlf[index].clone()).requires_grad_(True)
        params = [theta]
    else:
        sdn = next(m for m in new.modules() if isinstance(m, SignalDependentLayer) and m.camera_params)
        sdn.cam_params.requires_grad_(True)
        mask = torch.zeros_like(sdn.cam_params)
        mask[:, index] = 1
        params = [sdn.cam_params]
    handle = None if new.uses_measured_params else sdn.cam_params.register_hook(lambda g: g * mask)
    new.eval()

    def nll(idx: Tensor | slice) -> Tensor:
        ctx = NoiseContext.create(clean[idx], iso, index, allowed_isos=None, num_cameras=None)
        if new.uses_measured_params:
            ctx = ctx.with_nlf(torch.exp(theta)[None].expand(ctx.batch_size, -1, -1))
        return -new.log_prob(noise[idx], ctx).mean() / noise[0].numel()

    with torch.no_grad():
        before = float(nll(slice(None)))
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, noise.shape[0], (min(batch_size, noise.shape[0]),), generator=gen)
        loss = nll(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        if new.uses_measured_params:
            start = new.camera_nlf[index].clone()
            new.camera_nlf[index] = torch.exp(theta.detach())
            after = float(nll(slice(None)))
            if not after <= before:  # keep the better of the start and the refinement (on these patches)
                new.camera_nlf[index] = start
                theta.data.copy_(torch.log(start))
                after = before
        else:
            after = float(nll(slice(None)))
    if handle is not None:
        handle.remove()
    for p in new.parameters():
        p.requires_grad_(True)
    new.eval()
    if not math.isfinite(after):
        raise InputError(f"adapting to {name} diverged (NLL {after}).", "lower the learning rate or check the data.")
    return new, {"camera": name, "index": index, "parameters": camera_parameter_count(new),
                 "nll_before": before, "nll_after": after}
