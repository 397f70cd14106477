"""One validation layer for user input: numbers, devices, config files, model files, input and output paths.

Every command checks what it was given *before any work starts* with these functions, so a bad flag, a
damaged model file or an unwritable output fails in a second with one clear message instead of a traceback
after minutes of training. Each check raises a :class:`~visionflows.errors.VisionflowsError` subclass that
says what is wrong and how to fix it; none of them creates or changes a file.

* numbers: :class:`Range` (finite, in range, integer or not), :func:`check_number`, and :func:`number_arg`
  (the same rule as an ``argparse`` ``type=``);
* devices: :func:`check_device` (known device strings; CUDA/MPS only where this PyTorch build has them);
* config files: :func:`load_config_file` (a readable JSON object);
* model files: :func:`check_model_file` (readable, of the right family, every tensor finite) and
  :func:`check_finite_weights` for models loaded another way;
* paths (:mod:`visionflows.validation.paths`): :func:`check_input_file`, :func:`check_input_dir`,
  :func:`check_output_file`, :func:`check_output_dir`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionflows.errors import CheckpointError, ConfigError, VisionflowsError
from visionflows.validation.paths import check_input_dir, check_input_file, check_output_dir, check_output_file

__all__ = [
    "Range",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "NON_NEGATIVE",
    "OPEN_UNIT",
    "TEMPERATURE",
    "MAX_TEMPERATURE",
    "check_number",
    "number_arg",
    "check_choice",
    "check_device",
    "load_config_file",
    "model_family",
    "check_model_file",
    "check_finite_weights",
    "check_input_file",
    "check_input_dir",
    "check_output_file",
    "check_output_dir",
]


# ------------------------------------------------------------------------------------------------ numbers
def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


@dataclass(frozen=True)
class Range:
    """An accepted set of numbers: integer or real, always finite, optionally bounded (open or closed)."""

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"{what} in {'(' if self.low_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f"{what} {'>' if self.low_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f"{what} {'<' if self.high_open else '<='} {_fmt(hi)}"
        return what

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.integer and not float(v).is_integer():
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))


POSITIVE_INT = Range(integer=True, low=1)
NON_NEGATIVE_INT = Range(integer=True, low=0)
POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
OPEN_UNIT = Range(low=0, high=1, low_open=True, high_open=True)
#: sampling temperatures above this only produce overflowing, meaningless samples
MAX_TEMPERATURE = 10.0
TEMPERATURE = Range(low=0, high=MAX_TEMPERATURE)


def check_number(
    value: Any, name: str, rule: Range, fix: str | None = None, error: type[VisionflowsError] = ConfigError
) -> Any:
    """``value`` if it is a number satisfying ``rule`` (bools and strings are refused), else ``error``."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if rule.integer and is_number and isinstance(value, float) and not value.is_integer():
        is_number = False
    if not is_number or not rule.contains(float(value)):
        got = f"{value!r} ({type(value).__name__})" if not is_number else _fmt(value) if math.isfinite(value) else value
        raise error(f"{name} must be {rule.describe()}, got {got}.", fix or f"give {name} {rule.describe()}.")
    return int(value) if rule.integer else value


def number_arg(rule: Range) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` parsing a number under ``rule`` (``1e3`` is accepted as an integer 1000)."""

    def parse(text: str) -> Any:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}") from None
        if not rule.contains(v):
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text}")
        return int(v) if rule.integer else v

    parse.__name__ = rule.describe()
    parse.rule = rule  # type: ignore[attr-defined]  (``--help`` shows it: cli.main.RangeHelpFormatter)
    return parse


def check_choice(value: Any, name: str, choices: Collection[Any], error: type[VisionflowsError] = ConfigError) -> Any:
    if value not in choices:
        shown = ", ".join(str(c) for c in choices)
        raise error(f"{name} must be one of {shown}, got {value!r}.", f"use one of: {shown}.")
    return value


# ------------------------------------------------------------------------------------------------ devices
def check_device(spec: Any, name: str = "device", require_available: bool = True) -> str:
    """``spec`` if it names a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) that this process can use
    (``require_available=False``: only the syntax is checked)."""
    import torch

    usage = "use auto, cpu, cuda or cuda:N (N = the GPU index)."
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{name} must be a device name, got {spec!r}.", usage)
    if spec == "auto":
        return spec
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown {name} {spec!r}.", usage) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{name} {spec!r} is not supported.", usage)
    if dev.type == "cpu" or not require_available:
        return spec
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible to this process")
            raise ConfigError(f"{name} {spec} needs a CUDA GPU, but {why} (torch {torch.__version__}).",
                              "use cpu or auto, or run on a machine with a GPU and a CUDA build of PyTorch.")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{name} {spec}: there is no GPU {dev.index} (this machine has {count}).",
                              f"use cuda:0 … cuda:{count - 1}, or cuda.")
        return spec
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{name} {spec} is not available on this machine.", "use cpu or auto.")
    return spec


# ------------------------------------------------------------------------------------------------ config
def load_config_file(path: str | os.PathLike, flag: str = "--config") -> dict[str, Any]:
    """A JSON object from ``path`` (:class:`ConfigError` if missing, a folder, unreadable or not an object)."""
    p = Path(path)
    example = 'e.g. {"steps": 1000, "lr": 0.001}'
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder, not a JSON file.", f"give a JSON file of settings ({example}).")
    if not p.is_file():
        raise ConfigError(f"{flag} {p} does not exist.", f"give a JSON file of settings ({example}).")
    try:
        loaded = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read config file {p}: {err}.", f"write one JSON object ({example}).") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} holds a JSON {type(loaded).__name__}, not an object of settings.",
                          f"write the settings as one JSON object ({example}).")
    return loaded


# ------------------------------------------------------------------------------------------------ models
_FAMILY_NAMES = {
    "raw-noise": "a raw noise model (Noise Flow or a raw noise baseline)",
    "srgb-noise": "an sRGB noise model (sRGB Noise Flow or an sRGB baseline)",
    "denoiser": "a DnCNN denoiser",
    "wavelet": "a full Wavelet Flow",
    "wavelet-level": "one Wavelet Flow level",
    "glow": "a Glow model",
}


def model_family(kind: str | None) -> str:
    """The family of a model-file ``kind``: raw-noise, srgb-noise, denoiser, wavelet, wavelet-level, glow, other.

    Read from the registry (the family of the presets whose class has this kind), so new presets of a family
    are recognised without a list here."""
    from visionflows.registry import list_models, model_info

    k = str(kind or "")
    if k == "waveletflow_level":
        return "wavelet-level"
    labels = {"noise": "raw-noise", "srgb_noise": "srgb-noise", "denoise": "denoiser", "wavelet": "wavelet",
              "glow": "glow"}
    for name in list_models():
        info = model_info(name)
        if info.kind == k:
            return labels.get(info.family, info.family)
    return "other"


def describe_family(family: str) -> str:
    return _FAMILY_NAMES.get(family, "a model of another kind")


def _non_finite(tensors: Mapping[str, Any]) -> list[str]:
    import torch

    bad = []
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            if not bool(torch.isfinite(t).all()):
                bad.append(name)
    return bad


def _raise_non_finite(source: str, bad: list[str], total: int) -> None:
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise CheckpointError(
        f"{source} has NaN/Inf weights in {len(bad)} of {total} tensors ({shown}).",
        "the file is damaged or comes from a diverged training: use an earlier checkpoint or retrain.",
    )


def check_finite_weights(model: Any, source: str) -> Any:
    """``model`` if every floating parameter and buffer is finite, else :class:`CheckpointError` naming them."""
    state = model.state_dict()
    bad = _non_finite(state)
    if bad:
        _raise_non_finite(str(source), bad, len(state))
    return model


def check_model_file(
    path: str | os.PathLike,
    flag: str,
    families: Collection[str] | None = None,
    fix: str | None = None,
) -> dict[str, str]:
    """Check a model file / run dir / checkpoint dir (or a folder another command wrote, holding one model of the
    wanted families): readable, of one of ``families`` (see :func:`model_family`) and every tensor finite. Returns
    the file's metadata (``kind``, ``config``, …) with ``path``, the model file it resolved to."""
    from visionflows.io import read_model_file
    from visionflows.io.files import resolve_model_path

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{flag} {p} does not exist.",
                              fix or "give a .safetensors model file or the run directory that holds it.")
    if p.is_dir():
        p = resolve_model_path(p, None if families is None else (lambda k: model_family(k) in families))
    meta, state = read_model_file(p)
    meta = {**meta, "path": str(p)}
    kind = meta.get("kind")
    family = model_family(kind)
    if families is not None and family not in families:
        wanted = " or ".join(describe_family(f) for f in families)
        raise CheckpointError(f"{flag} {p} holds a {kind!r} model ({describe_family(family)}), not {wanted}.",
                              fix or f"pass {wanted} model file.")
    bad = [name for name in _non_finite(state) if not _nan_sentinel(kind, name)]
    if bad:
        _raise_non_finite(f"{flag} {p}", bad, len(state))
    return meta


def _nan_sentinel(kind: Any, name: str) -> bool:
    """Whether tensor ``name`` of a ``kind`` model may hold NaN by design (its class's ``nan_sentinel_tensors``,
    e.g. the camera NLF table's missing camera/ISO pairs)."""
    from visionflows.registry import kind_class

    try:
        names = getattr(kind_class(str(kind)), "nan_sentinel_tensors", ())
    except ConfigError:  # unknown kind: no sentinels
        names = ()
    return any(name == s or name.endswith("." + s) for s in names)
