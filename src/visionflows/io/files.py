"""Versioned, self-describing model files.

A model file is a ``.safetensors`` file whose metadata holds ``format`` (``"visionflows"``),
``format_version``, the model ``kind`` and its JSON ``config``; :func:`load_model` rebuilds the model from the
class registered for that kind (:mod:`visionflows.registry`) and loads the weights (no pickle). Files are
written atomically (:mod:`visionflows.io.atomic`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionflows.errors import CheckpointError
from visionflows.io.atomic import atomic_write_bytes

__all__ = [
    "FORMAT_VERSION",
    "register_model_kind",
    "model_kinds",
    "build_from_config",
    "save_model",
    "load_model",
    "read_model_file",
    "clean_state_dict",
]

FORMAT = "visionflows"
FORMAT_VERSION = 1
_LEGACY_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_model_kind(kind: str) -> Callable[[Callable[[dict[str, Any]], nn.Module]], Callable]:
    """Decorator registering a ``builder(config) -> model`` for files of ``kind`` (for models outside the
    registry; registered presets get their file kind from :func:`visionflows.registry.register_model`)."""

    def deco(fn: Callable[[dict[str, Any]], nn.Module]) -> Callable[[dict[str, Any]], nn.Module]:
        _LEGACY_BUILDERS[kind] = fn
        return fn

    return deco


def model_kinds() -> list[str]:
    """Every file kind :func:`load_model` can rebuild."""
    from visionflows.registry import list_kinds

    return sorted(set(list_kinds()) | set(_LEGACY_BUILDERS))


def build_from_config(kind: str, config: dict[str, Any]) -> nn.Module:
    """A fresh model of file ``kind`` from its ``model_config()`` (``cls.from_config`` or ``cls(**config)``)."""
    from visionflows.registry import _KINDS, _load_families

    _load_families()
    if kind in _LEGACY_BUILDERS and kind not in _KINDS:
        return _LEGACY_BUILDERS[kind](config)
    if kind not in _KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}.", f"known kinds: {', '.join(model_kinds())}.")
    cls = _KINDS[kind]
    from_config = getattr(cls, "from_config", None)
    return from_config(config) if from_config is not None else cls(**config)


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes; make tensors contiguous CPU copies."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        k = k.replace("._orig_mod.", ".").replace(".module.", ".") if "_orig_mod" in k else k
        out[k] = v.detach().cpu().contiguous()
    return out


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` (which must have ``kind`` and ``model_config()``) to a ``.safetensors`` file atomically."""
    from safetensors.torch import save

    kind = getattr(model, "kind", None)
    if kind is None or not hasattr(model, "model_config"):
        raise TypeError(f"{type(model).__name__} needs a `kind` attribute and a `model_config()` method")
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(model.model_config()),
    }
    meta.update(extra or {})
    state = clean_state_dict(model.state_dict())
    # safetensors refuses shared storage; clone aliases
    seen: dict[int, str] = {}
    for k, v in list(state.items()):
        ptr = v.data_ptr()
        if ptr in seen and v.numel() > 0:
            state[k] = v.clone()
        seen[ptr] = k
    atomic_write_bytes(path, save(state, metadata=meta))
    return Path(path)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a model file: ``(metadata, state_dict)``. Raises :class:`CheckpointError` when unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        path = _resolve_dir(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist.", "check the path (a .safetensors file or run dir).")
    try:
        data = path.read_bytes()
        state = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} is not a readable visionflows model file ({err}).",
            "the file is corrupt or truncated: re-export it or use an earlier checkpoint.",
        ) from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a visionflows model file (no visionflows metadata).")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version}; this visionflows reads up to {FORMAT_VERSION}.",
            "upgrade visionflows.",
        )
    return meta, state


def _resolve_dir(path: Path) -> Path:
    """A run dir or checkpoint dir → its newest ``model.safetensors``."""
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    ckpts = sorted((path / "checkpoints").glob("step-*/model.safetensors")) if (path / "checkpoints").is_dir() else []
    if ckpts:
        return ckpts[-1]
    raise CheckpointError(f"no model.safetensors found in {path}.", "point to a model file or a run directory.")


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild and load a model saved with :func:`save_model` (or a run / checkpoint directory)."""
    meta, state = read_model_file(path)
    kind = meta.get("kind", "")
    try:
        model = build_from_config(kind, json.loads(meta["config"]))
    except CheckpointError as err:
        raise CheckpointError(f"{path} holds a model of unknown kind {kind!r}.", err.fix) from err
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: its {kind} configuration cannot be rebuilt ({err}).",
                              "the file was written by an incompatible visionflows version: re-export it.") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match a {kind} model: {err}".splitlines()[0]) from err
    model.to(map_location)
    model.eval()
    model.file_metadata = meta
    return model
