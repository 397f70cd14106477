"""Load the officially released Noise Flow checkpoint (TensorFlow tensor bundle) into :class:`NoiseFlow`.

The user downloads ``models/NoiseFlow/ckpt/model.ckpt.best.{index,data-00000-of-00001}`` from the official
repository (``BorealisAI/noise_flow``, CC BY-NC-SA 4.0) and points :func:`load_official` at it; no TensorFlow
is needed (:func:`visionflows.io.tf_bundle.read_tf_checkpoint`). Mapping facts (reference ``noiseflow.md`` §3):

* coupling networks in **training order**: template ``''`` → bijector 1, ``_1`` → 2, ``_2`` → 3, ``_3`` → 4,
  ``_4`` → 6, ``_5`` → 7, ``_6`` → 8, ``_7`` → 9 (``template_order="reversed"`` reproduces the official
  sampler's mis-wiring, b1 ← ``_7`` … b9 ← ``''``, for detection tests only);
* LU triangles from 6-vectors ``v`` (TF ``fill_triangular``): L rows 1..3 = ``[v3]``, ``[v5, v4]``,
  ``[v2, v1, v0]``; U rows 0..2 = ``[v0, v1, v2]``, ``[v4, v5]``, ``[v3]`` above the diagonal;
* conv weights ``[kh, kw, in, out]`` → ``[out, in, kh, kw]``; BN running mean/var from ``bn_nvp_conv_{1,2}``.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from visionflows.errors import CheckpointError, ConfigError
from visionflows.flows import AffineCoupling, LUInvertibleConv1x1
from visionflows.io.tf_bundle import read_tf_checkpoint
from visionflows.noise.layers import GainLayer, NoiseFlowCouplingNet, SignalDependentLayer
from visionflows.noise.model import PRESETS, NoiseFlow

__all__ = ["load_official", "official_state", "template_mapping", "lower_from_vector", "upper_from_vector"]


def lower_from_vector(v: np.ndarray) -> np.ndarray:
    """Strictly lower 4×4 triangle from the official 6-vector."""
    m = np.zeros((4, 4), dtype=np.float64)
    m[1, 0] = v[3]
    m[2, 0], m[2, 1] = v[5], v[4]
    m[3, 0], m[3, 1], m[3, 2] = v[2], v[1], v[0]
    return m


def upper_from_vector(v: np.ndarray) -> np.ndarray:
    """Strictly upper 4×4 triangle from the official 6-vector."""
    m = np.zeros((4, 4), dtype=np.float64)
    m[0, 1], m[0, 2], m[0, 3] = v[0], v[1], v[2]
    m[1, 2], m[1, 3] = v[4], v[5]
    m[2, 3] = v[3]
    return m


def template_mapping(coupling_bijectors: list[int], order: str = "training") -> dict[int, str]:
    """Bijector index → template scope suffix (``''``, ``'_1'``, …)."""
    suffixes = [""] + [f"_{i}" for i in range(1, len(coupling_bijectors))]
    if order == "training":
        return dict(zip(coupling_bijectors, suffixes))
    if order == "reversed":
        return dict(zip(coupling_bijectors, reversed(suffixes)))
    raise ConfigError(f"unknown template_order {order!r}.", "use 'training' (correct) or 'reversed'.")


def _get(tensors: dict[str, np.ndarray], name: str, path: str) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(
            f"{path} has no tensor {name!r}; it is not a Noise Flow checkpoint of this architecture.",
            "point to the official models/NoiseFlow/ckpt folder (model.ckpt.best.*) or pass the matching arch.",
        )
    return np.asarray(tensors[name], dtype=np.float64)


def official_state(model: NoiseFlow, tensors: dict[str, np.ndarray], template_order: str = "training",
                   path: str = "checkpoint") -> None:
    """Copy official tensors into ``model`` in place (float64 → the model's dtype)."""
    arch = model.arch.split("|")
    coupling_b = [b for b, t in enumerate(arch) if t == "unc"]
    mapping = template_mapping(coupling_b, template_order)

    def put(dst: torch.Tensor, value: np.ndarray) -> None:
        v = torch.from_numpy(np.ascontiguousarray(value)).to(dst.dtype).reshape(dst.shape)
        dst.copy_(v)

    with torch.no_grad():
        for b, tok in enumerate(arch):
            scale0 = _get(tensors, f"level0/bijector{b}/rescaling_scale0", path)
            if tok in ("sdn5", "sdn4"):
                sdn = model.layer(f"sdn{b}")
                assert isinstance(sdn, SignalDependentLayer)
                put(sdn.beta1, _get(tensors, "model/sdn_gain/beta1", path))
                put(sdn.beta2, _get(tensors, "model/sdn_gain/beta2", path))
                put(sdn.gain_params, _get(tensors, "model/sdn_gain/gain_params", path))
                if sdn.camera_params:
                    put(sdn.cam_params, _get(tensors, "model/sdn_gain/cam_params", path))
                put(sdn.unused_rescaling_scale, scale0)
            elif tok == "gain4":
                gain = model.layer(f"gain{b}")
                assert isinstance(gain, GainLayer)
                put(gain.gain_val, _get(tensors, "model/sdn_gain/gain_val", path))
                put(gain.unused_rescaling_scale, scale0)
            else:
                conv = model.layer(f"conv1x1_{b}")
                assert isinstance(conv, LUInvertibleConv1x1)
                pre = f"level0/bijector{b}/Conv2d_1x1_{b}/"
                suf = f"_matpar_lu_conv2d_1x1_{b}_0"
                put(conv.permutation, _get(tensors, f"{pre}P{suf}", path))
                conv.set_triangles(
                    torch.from_numpy(lower_from_vector(_get(tensors, f"{pre}L_vec{suf}", path))),
                    torch.from_numpy(upper_from_vector(_get(tensors, f"{pre}U_vec{suf}", path))),
                )
                put(conv.log_s, _get(tensors, f"{pre}log_S{suf}", path))
                put(conv.sign_s, _get(tensors, f"{pre}sign_S{suf}", path))
                coupling = model.layer(f"coupling_{b}")
                assert isinstance(coupling, AffineCoupling)
                put(coupling.scale_bound, scale0)
                net = coupling.net
                assert isinstance(net, NoiseFlowCouplingNet)
                t = f"model/real_nvp_conv_template{mapping[b]}/"
                put(net.l_1.weight, _get(tensors, t + "l_1/W", path).transpose(3, 2, 0, 1))
                put(net.l_1.bias, _get(tensors, t + "l_1/b", path))
                put(net.l_2.weight, _get(tensors, t + "l_2/W", path).transpose(3, 2, 0, 1))
                put(net.l_2.bias, _get(tensors, t + "l_2/b", path))
                put(net.l_last.conv.weight, _get(tensors, t + "l_last/W", path).transpose(3, 2, 0, 1))
                put(net.l_last.conv.bias, _get(tensors, t + "l_last/b", path))
                put(net.l_last.logs, _get(tensors, t + "l_last/logs", path))
                put(net.bn_1.running_mean, _get(tensors, t + "bn_nvp_conv_1/mean", path))
                put(net.bn_1.running_var, _get(tensors, t + "bn_nvp_conv_1/var", path))
                put(net.bn_2.running_mean, _get(tensors, t + "bn_nvp_conv_2/mean", path))
                put(net.bn_2.running_var, _get(tensors, t + "bn_nvp_conv_2/var", path))


def load_official(
    ckpt_dir: str | os.PathLike,
    template_order: Literal["training", "reversed"] = "training",
    arch: str = PRESETS["noiseflow"][0],
    dtype: torch.dtype = torch.float32,
    continuous_iso: bool = False,
) -> NoiseFlow:
    """The released Noise Flow from an official checkpoint folder or prefix, in eval mode.

    Args:
        ckpt_dir: folder holding ``model.ckpt.best.index`` + ``.data-00000-of-00001`` (or the prefix itself).
        template_order: ``"training"`` (correct). ``"reversed"`` reproduces the official sampler's bug
            (``NoiseFlowWrapper``); only for tests that must detect it.
        arch: the checkpoint's architecture string (the released one by default).
        dtype: parameter dtype (float64 reproduces the reference to ~1e-15).
    """
    tensors = read_tf_checkpoint(ckpt_dir)
    model = NoiseFlow(arch=arch, width=4, continuous_iso=continuous_iso, seed=None)
    model = model.to(torch.float64)
    official_state(model, tensors, template_order=template_order, path=str(ckpt_dir))
    model = model.to(dtype)
    model.eval()
    return model
