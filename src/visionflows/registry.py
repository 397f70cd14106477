"""One registry for every model of visionflows (presets and file kinds), in the style of timm.

A *preset* is a function returning a fresh model, registered with :func:`register_model`::

    @register_model("noiseflow", family="noise")
    def noiseflow(**overrides) -> NoiseFlow:          # the return annotation names the model class ...
        return NoiseFlow(**overrides)                  # ... whose ``kind`` becomes a registered file kind

* :func:`create_model` builds a preset by name (``overrides`` go to the preset function),
* :func:`list_models` lists names (``fnmatch`` pattern, family filter),
* :func:`model_info` describes one (family, file kind, class, harness settings),
* :func:`kind_class` maps a file kind to its class (:func:`visionflows.io.load_model` uses it).

The built-in families are imported on first use; a family that fails to import is an error naming it (never
skipped). Third-party packages add presets through the ``visionflows.models`` entry-point group, each entry a
module that registers its presets when imported.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from visionflows.errors import ConfigError

__all__ = [
    "BUILTIN_FAMILIES",
    "HarnessSpec",
    "ModelInfo",
    "create_model",
    "kind_class",
    "list_kinds",
    "list_models",
    "model_info",
    "register_kind",
    "register_model",
]

#: family name -> module that registers its presets when imported
BUILTIN_FAMILIES: dict[str, str] = {
    "noise": "visionflows.noise",
    "srgb_noise": "visionflows.noise.srgb",
    "wavelet": "visionflows.wavelet",
    "glow": "visionflows.glow",
    "denoise": "visionflows.denoise",
}
ENTRY_POINT_GROUP = "visionflows.models"


@dataclass(frozen=True)
class HarnessSpec:
    """How :func:`visionflows.testing.check_model` exercises a preset.

    ``overrides``: preset arguments that shrink it for CI (e.g. a reduced width), stated per preset;
    ``construct_only``: too large even reduced: only built (with ``overrides``), its parameter count compared
    with ``reduced_param_count``; ``param_count`` states the full size (computed without building); ``reason``
    says why;
    ``setup(model, x, context)``: brings a fresh model into a usable state first (e.g. fits a baseline).
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[Any, Any, Any], None] | None = None
    construct_only: bool = False
    param_count: int | None = None
    reduced_param_count: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """One registered preset."""

    name: str
    family: str
    kind: str
    cls: type
    fn: Callable[..., nn.Module]
    description: str
    aliases: tuple[str, ...]
    harness: HarnessSpec
    density: bool  #: a density model (a :class:`~visionflows.flows.FlowModel`); False for e.g. denoisers


_MODELS: dict[str, ModelInfo] = {}
_KINDS: dict[str, type] = {}
_loaded = False


def register_kind(cls: type) -> type:
    """Class decorator: register ``cls`` (which has a ``kind`` attribute) as the builder of that file kind."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute `kind` to be a file kind")
    old = _KINDS.get(kind)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"file kind {kind!r} is already registered by {old.__module__}.{old.__qualname__}")
    _KINDS[kind] = cls
    return cls


def register_model(
    name: str | None = None,
    *,
    family: str,
    description: str = "",
    aliases: tuple[str, ...] = (),
    harness: HarnessSpec | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a preset function (see the module docstring). The preset's return annotation must
    be the model class; that class's ``kind`` is registered as a file kind too."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        from visionflows.flows.model import FlowModel

        preset = name or fn.__name__
        cls = typing.get_type_hints(fn).get("return")
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise TypeError(f"preset {preset!r}: annotate its return type with the model class")
        register_kind(cls)
        if preset in _MODELS and _MODELS[preset].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"model name {preset!r} is already registered by {_MODELS[preset].fn.__module__}")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _MODELS[preset] = ModelInfo(preset, family, cls.kind, cls, fn, doc, tuple(aliases), harness or HarnessSpec(),
                                    issubclass(cls, FlowModel))
        return fn

    return deco


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for family, module in BUILTIN_FAMILIES.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # a broken family is a bug to report, never silently skipped
            raise ImportError(f"visionflows model family {family!r} ({module}) failed to import: {err}") from err
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:
            raise ImportError(f"visionflows model plugin {ep.name!r} ({ep.value}) failed to import: {err}") from err
    _loaded = True


def _resolve(name: str, family: str | None = None) -> ModelInfo:
    if not isinstance(name, str):
        raise ConfigError(f"a model name must be a string, got {name!r} ({type(name).__name__}).",
                          "pass a preset name such as 'noiseflow'; list them with visionflows.list_models().")
    _load_families()
    if name in _MODELS and (family is None or _MODELS[name].family == family):
        return _MODELS[name]
    for info in _MODELS.values():
        if name in info.aliases and (family is None or info.family == family):
            return info
    known = list_models(family=family)
    if family is not None:
        known += [a for i in _MODELS.values() if i.family == family for a in i.aliases]
    close = difflib.get_close_matches(name, known, n=3)
    where = f" in family {family!r}" if family else ""
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown model {name!r}{where}.", f"{hint}list them with visionflows.list_models().")


def create_model(name: str, family: str | None = None, **overrides: Any) -> nn.Module:
    """A freshly initialised model of preset ``name`` (``overrides`` go to the preset function); an override the
    preset does not take is a :class:`~visionflows.errors.ConfigError` listing the ones it does."""
    info = _resolve(name, family)
    try:
        return info.fn(**overrides)
    except TypeError as err:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if m is None or m.group(1) not in overrides:
            raise
        accepted = _keywords(info.fn) or _keywords(info.cls.__init__)
        listed = f"it takes: {', '.join(accepted)}." if accepted else f"see help(visionflows.model_info({name!r}).cls)."
        raise ConfigError(f"create_model({name!r}): unknown override {m.group(1)!r}.", listed) from None


def _keywords(fn: Callable[..., Any]) -> list[str]:
    """The named keyword parameters of ``fn`` (empty when it only takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Sorted preset names, optionally filtered by an ``fnmatch`` ``pattern`` and a ``family``."""
    for what, v in (("pattern", pattern), ("family", family)):
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"list_models: {what} must be a string, got {v!r}.",
                              "e.g. visionflows.list_models('noiseflow*') or list_models(family='wavelet').")
    _load_families()
    names = [n for n, i in _MODELS.items() if family is None or i.family == family]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return sorted(names)


def model_info(name: str, family: str | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of preset ``name`` (or one of its aliases within ``family``)."""
    return _resolve(name, family)


def list_kinds() -> list[str]:
    """Every registered file kind."""
    _load_families()
    return sorted(_KINDS)


def kind_class(kind: str) -> type:
    """The class that builds model files of ``kind``; :class:`~visionflows.errors.ConfigError` if unknown."""
    _load_families()
    if kind not in _KINDS:
        raise ConfigError(f"unknown model kind {kind!r}.", f"known kinds: {', '.join(sorted(_KINDS))}.")
    return _KINDS[kind]
