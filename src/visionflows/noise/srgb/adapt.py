"""Adapting a trained sRGB Noise Flow to a camera it never saw, from a few pairs of that camera.

The sRGB Noise Flow is conditioned on (ISO, camera) in two places only: the CL2 tables (a per-channel log-scale
and bias per (ISO, camera) combination: the camera's gain and offset in every CL2 layer; likewise the SDL tables,
its noise variance ``a·y + b`` vs intensity, in the ``srgb_noiseflow_sdl`` preset) and the inputs of the
scalar embeddings ``e(ISO, camera)`` that scale every coupling's log-scale (the camera's column, and the
columns of ISOs new to the model, of each ``ScaleEmbedding``'s first linear layer). Everything else (the
coupling networks, the 1×1 convolutions, the embedding MLPs' other layers) is shared by all cameras.

:func:`adapt_srgb_flow` therefore

1. adds the camera (and any ISO of its pairs that the model does not know) to the vocabularies
   (:func:`extend_vocabulary`); the new entries start as copies of the learned "unknown" entries, so before
   any step the adapted model *is* the zero-shot model for that camera;
2. fits only those entries (a gradient mask keeps every other value fixed, BatchNorm uses its running
   statistics) by maximum likelihood on random patches of the camera's pairs (Adam, fresh dequantisation noise
   per batch).

With k = 1 pair of 512² pixels that is ~786k noise values for ~110 free numbers (the released architecture,
one new ISO), so even one pair determines them well.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from visionflows.errors import ConfigError, InputError
from visionflows.noise.srgb.context import dequantize_noise
from visionflows.noise.srgb.layers import ConditionalLinear, ScaleEmbedding, SignalDependentScale
from visionflows.noise.srgb.model import SRGBNoiseFlow

__all__ = ["extend_vocabulary", "camera_parameters", "adapt_srgb_flow"]


def _index_maps(old: SRGBNoiseFlow, new: SRGBNoiseFlow) -> tuple[list[int], list[int]]:
    """For each new ISO / camera index, the old index it starts from (0 = unknown for new entries)."""
    iso_map = [0] + [old._iso_index.get(v, 0) for v in new.isos]
    cam_map = [0] + [old._cam_index.get(c, 0) for c in new.cameras]
    return iso_map, cam_map


@torch.no_grad()
def extend_vocabulary(model: SRGBNoiseFlow, cameras: Sequence[str] = (), isos: Sequence[int] = ()) -> SRGBNoiseFlow:
    """A copy of ``model`` whose vocabularies also hold ``cameras`` / ``isos`` (appended; known ones ignored).

    Each new entry starts from the model's "unknown" entry (its CL2 rows and embedding-input columns are
    copied), so the extended model gives new cameras/ISOs exactly the densities the original gave them as
    unknown values; everything else is copied unchanged."""
    if not isinstance(model, SRGBNoiseFlow):
        raise ConfigError(f"only an sRGB Noise Flow can be adapted, got {type(model).__name__}.",
                          "pass a model from `visionflows srgb-noise train` (a baseline has no camera entries).")
    new_cams = list(model.cameras) + [c for c in dict.fromkeys(str(c).lower() for c in cameras)
                                      if c not in model.cameras]
    new_isos = list(model.isos) + [int(i) for i in dict.fromkeys(int(i) for i in isos) if int(i) not in model.isos]
    out = SRGBNoiseFlow(model.arch, model.width, new_cams, new_isos, model.noise_std, model.seed, model.norm)
    out.to(model.reference_tensor().device)
    same = out.state_dict()
    out.load_state_dict({k: v for k, v in model.state_dict().items() if same[k].shape == v.shape}, strict=False)
    iso_map, cam_map = _index_maps(model, out)
    combo = torch.tensor([i * model.n_cam + c for i in iso_map for c in cam_map])
    cols = torch.tensor(iso_map + [model.n_iso + c for c in cam_map])
    for m_old, m_new in zip(model.modules(), out.modules()):
        if isinstance(m_old, ConditionalLinear):
            m_new.log_scale.copy_(m_old.log_scale[combo])
            m_new.bias.copy_(m_old.bias[combo])
        elif isinstance(m_old, SignalDependentScale):
            m_new.log_a.copy_(m_old.log_a[combo])
            m_new.log_b.copy_(m_old.log_b[combo])
        elif isinstance(m_old, ScaleEmbedding):
            m_new.inp.weight.copy_(m_old.inp.weight[:, cols])
    out.train(model.training)
    return out


def camera_parameters(model: SRGBNoiseFlow, camera: str, isos: Sequence[int] = ()) -> list[tuple[Tensor, Tensor]]:
    """``[(parameter, mask)]``: the entries of ``camera`` (every CL2 row of its (ISO, camera) combinations, its
    column of every embedding input) and the embedding-input columns of ``isos`` (1 = free, 0 = fixed)."""
    cam = str(camera).lower()
    if cam not in model._cam_index:
        raise InputError(f"camera {camera!r} is not in the model's vocabulary.", "extend_vocabulary() first.")
    c = model._cam_index[cam]
    iso_cols = [model._iso_index[int(i)] for i in isos if int(i) in model._iso_index]
    out = []
    for m in model.modules():
        if isinstance(m, (ConditionalLinear, SignalDependentScale)):
            tables = (m.log_scale, m.bias) if isinstance(m, ConditionalLinear) else (m.log_a, m.log_b)
            mask = torch.zeros(m.n_iso, m.n_cam, 1, device=tables[0].device)
            mask[:, c] = 1.0
            mask = mask.reshape(m.n_iso * m.n_cam, 1).expand_as(tables[0])
            out += [(t, mask) for t in tables]
        elif isinstance(m, ScaleEmbedding):
            mask = torch.zeros_like(m.inp.weight)
            mask[:, m.n_iso + c] = 1.0
            for i in iso_cols:
                mask[:, i] = 1.0
            out.append((m.inp.weight, mask))
    return out


def adapt_srgb_flow(model: SRGBNoiseFlow, pairs: Any, camera: str, steps: int = 300, batch_size: int = 32,
                    patch: int = 32, lr: float = 0.01, seed: int = 0,
                    max_seconds: float | None = None) -> tuple[SRGBNoiseFlow, list[dict[str, float]]]:
    """Fit the camera-specific part of a trained sRGB Noise Flow on ``pairs`` of ``camera`` (see the module
    docstring). ``pairs``: :class:`~visionflows.data.srgb_pairs.SRGBPairs` (their own camera names are
    ignored: every pair is taken as ``camera``, at its ISO; unknown ISOs use the unknown-ISO entry).

    Returns ``(adapted model in eval mode, history)``: a copy; ``model`` is not changed. The history holds the
    training NLL (nats/dim) every ``max(1, steps // 20)`` steps. Deterministic given ``seed``."""
    if len(pairs) == 0:
        raise InputError("no pairs to adapt on.", "pass at least one pair of the camera.")
    if steps < 0 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"invalid adaptation settings steps={steps}, batch_size={batch_size}, lr={lr}.",
                          "use steps >= 0, batch_size >= 1, lr > 0.")
    cam = str(camera).lower()
    isos = sorted({int(i) for i in pairs.isos if i})
    new_isos = [i for i in isos if i not in model.isos]
    adapted = extend_vocabulary(model, [cam], isos)
    free = camera_parameters(adapted, cam, new_isos)
    free_ids = {id(p) for p, _ in free}
    for p in adapted.parameters():
        p.requires_grad_(id(p) in free_ids)
    masks = {id(p): m for p, m in free}
    params = [p for p, _ in free]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    adapted.eval()  # BatchNorm: running statistics, not updated
    # gradient steps: the plain layers (the native kernel's backward would recompute them anyway, after a forward
    # pass of its own and a re-folding of the changed parameters each step)
    kernels_on = getattr(adapted.transform, "use_kernels", None)
    if kernels_on is not None:
        adapted.transform.use_kernels = False
    history: list[dict[str, float]] = []
    every = max(1, steps // 20)
    t0 = time.monotonic()
    for step in range(steps):
        b = pairs.random_patches(batch_size, patch, gen)
        noise = dequantize_noise(b["noisy"], b["clean"], gen)
        nll = adapted.nll_per_dim(noise, b["clean"], b["iso"], cam).mean()
        opt.zero_grad(set_to_none=True)
        nll.backward()
        for p in params:
            if p.grad is not None:
                p.grad.mul_(masks[id(p)])
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "nll_per_dim": float(nll.detach())})
        if max_seconds is not None and time.monotonic() - t0 > max_seconds:
            break
    for p in adapted.parameters():
        p.requires_grad_(True)
    if kernels_on is not None:
        adapted.transform.use_kernels = kernels_on
    return adapted.eval(), history
