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
    "find_model_files",
    "resolve_model_path",
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


def read_model_file(
    path: str | os.PathLike, accept: Callable[[str], bool] | None = None
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a model file: ``(metadata, state_dict)``. Raises :class:`CheckpointError` when unreadable.

    ``path`` may be a directory (see :func:`resolve_model_path`); ``accept(kind)`` chooses among the model files
    found below it."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        path = resolve_model_path(path, accept)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist.", "check the path (a .safetensors file or run dir).")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read model file {path}: {err.strerror or err}.",
                              "check the file's permissions, or copy it somewhere readable.") from err
    try:
        state = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as err:
        if data[:4] == b"PK\x03\x04" or data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
            raise CheckpointError(  # a torch.save zip archive or a raw pickle: no safetensors header
                f"{path} is a torch.save / pickle file (e.g. a plain state dict), not a visionflows model file.",
                "rebuild the model and save it in the versioned format: model = visionflows.create_model(name, "
                "...); model.load_state_dict(torch.load(path)); visionflows.save_model(model, "
                "'model.safetensors').") from None
        raise CheckpointError(
            f"{path} is not a readable visionflows model file ({err}).",
            "the file is corrupt or truncated: re-export it or use an earlier checkpoint.",
        ) from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a visionflows model file (no visionflows metadata).",
                              "a plain safetensors state dict: load it into visionflows.create_model(name, ...) with "
                              "load_state_dict, then write it with visionflows.save_model.")
    try:
        version = int(meta.get("format_version", "0"))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has an invalid format_version {meta.get('format_version')!r}.",
                              "the file's metadata is damaged: re-export it with visionflows.save_model.") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version}; this visionflows reads up to {FORMAT_VERSION}.",
            "upgrade visionflows.",
        )
    return meta, state


def _file_kind(path: Path) -> str | None:
    """The ``kind`` in a model file's header (reads only the header), or None if it is not a model file."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            meta = json.loads(fh.read(n)).get("__metadata__") or {}
    except (OSError, ValueError, json.JSONDecodeError, AttributeError):
        return None
    return meta.get("kind") if meta.get("format") == FORMAT else None


def _newest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*/model.safetensors")) if (run_dir / "checkpoints").is_dir() \
        else []
    return ckpts[-1] if ckpts else None


def find_model_files(root: str | os.PathLike, max_depth: int = 3) -> list[Path]:
    """Model files in ``root`` and up to ``max_depth`` folders below it: loose ``*.safetensors`` model files and
    the newest checkpoint of every run directory (shallowest first)."""
    root = Path(root)
    found: list[Path] = []
    frontier = [root]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in frontier:
            newest = _newest_checkpoint(d)
            if newest is not None:
                found.append(newest)
                continue  # a run directory: its checkpoints are one model
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for e in entries:
                if e.is_file() and e.suffix == ".safetensors" and _file_kind(e) is not None:
                    found.append(e)
                elif e.is_dir() and not e.name.startswith(".") and e.name not in ("tb", "logs"):
                    nxt.append(e)
        frontier = nxt
    return found


def resolve_model_path(path: str | os.PathLike, accept: Callable[[str], bool] | None = None) -> Path:
    """A directory → the model file it stands for: its ``model.safetensors``, the newest checkpoint of a run
    directory, or — for a folder other commands wrote (e.g. the demo's run dir) — the one model file below it of
    an accepted kind (the shallowest if several depths hold one). Several candidates at that depth are an error
    listing them."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    newest = _newest_checkpoint(path)
    if newest is not None:
        return newest
    candidates = [f for f in find_model_files(path) if accept is None or accept(_file_kind(f) or "")]
    if not candidates:
        what = "no model file" if accept is None else "no model file of the kind this command needs"
        raise CheckpointError(f"{what} found in {path} (nor in the folders below it).",
                              "point to a model file, a run directory, or a folder holding one.")
    depth = min(len(f.relative_to(path).parts) for f in candidates)
    best = [f for f in candidates if len(f.relative_to(path).parts) == depth]
    if len(best) > 1:
        listed = ", ".join(str(f) for f in best[:6]) + (" ..." if len(best) > 6 else "")
        raise CheckpointError(f"{path} holds {len(best)} suitable models: {listed}.", "pass one of them.")
    return best[0]


def _check_map_location(map_location: Any) -> torch.device:
    """``map_location`` as a device this process can use (:class:`ConfigError` naming it otherwise)."""
    from visionflows.errors import ConfigError
    from visionflows.validation import check_device

    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"map_location {map_location!r} is not a device.",
                          "use 'cpu', 'cuda', 'cuda:N' or a torch.device.") from None
    check_device(str(device), "map_location")
    return device


def _state_mismatch(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """What differs between a model's state dict and a file's (missing / unexpected / other-shape tensors)."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} in the file, {tuple(v.shape)} in the model" for k, v in want.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
            parts.append(f"{len(items)} tensor(s) {what} ({shown})")
    return "; ".join(parts)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", accept: Callable[[str], bool] | None = None,
    check_finite: bool = True,
) -> nn.Module:
    """Rebuild and load a model saved with :func:`save_model` (or a run / checkpoint directory, or a folder holding
    one model of a kind ``accept`` allows; see :func:`resolve_model_path`).

    :class:`~visionflows.errors.CheckpointError` for a file that is missing, not a visionflows model file (e.g. a
    plain ``torch.save`` state dict), of a newer format, inconsistent with its configuration, or (unless
    ``check_finite=False``, e.g. to inspect a diverged run) holding NaN/Inf weights;
    :class:`~visionflows.errors.ConfigError` for a ``map_location`` this machine does not have."""
    device = _check_map_location(map_location)
    meta, state = read_model_file(path, accept)
    kind = meta.get("kind", "")
    try:
        model = build_from_config(kind, json.loads(meta["config"]))
    except CheckpointError as err:
        raise CheckpointError(f"{path} holds a model of unknown kind {kind!r}.", err.fix) from err
    except (TypeError, ValueError, KeyError) as err:
        detail = getattr(err, "problem", None) or err  # a VisionflowsError's problem, without its own fix
        raise CheckpointError(f"{path}: its {kind} configuration cannot be rebuilt ({detail}).",
                              "the file was written by an incompatible visionflows version: re-export it.") from err
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{path}: its weights do not match the {kind} model its configuration describes: "
                              f"{mismatch}.", "the file is damaged or was edited by hand: re-export it with "
                              "visionflows.save_model, or use an earlier checkpoint.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match a {kind} model: {err}".splitlines()[0]) from err
    if check_finite:  # parameters only: buffers may hold NaN sentinels (e.g. the camera NLF table's missing pairs)
        bad = [n for n, t in model.named_parameters() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CheckpointError(f"{path} has NaN/Inf weights in {len(bad)} parameter tensor(s) ({shown}).",
                                  "the file is damaged or comes from a diverged training: use an earlier checkpoint "
                                  "or retrain (load_model(..., check_finite=False) loads it anyway, to inspect it).")
    model.to(device)
    model.eval()
    model.file_metadata = meta
    return model
