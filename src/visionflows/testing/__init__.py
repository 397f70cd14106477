"""The shared bijector test harness and the registry of example cases.

Every invertible layer of visionflows registers a :class:`BijectorCase` (``register_case``); one parametrised
test runs :func:`check_bijector` over :func:`cases`. Users can run the same protocol on their own layers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from visionflows.testing.harness import BijectorCase, check_bijector, context_to

__all__ = ["BijectorCase", "check_bijector", "context_to", "register_case", "cases"]

_CASES: dict[str, Callable[[], BijectorCase]] = {}

# Modules that register the cases of the layers they define (imported lazily by cases()).
CASE_MODULES = (
    "visionflows.flows.cases",
    "visionflows.noise.cases",
    "visionflows.wavelet.cases",
    "visionflows.denoise.cases",
    "visionflows.noise.srgb_cases",
)


def register_case(fn: Callable[[], BijectorCase]) -> Callable[[], BijectorCase]:
    """Decorator: register a zero-argument function returning a :class:`BijectorCase` (built lazily)."""
    _CASES[fn.__name__] = fn
    return fn


def cases() -> list[BijectorCase]:
    """Every registered case, built fresh (deterministic inputs)."""
    for mod in CASE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # a feature module that does not define cases
            if not (err.name and (mod == err.name or mod.startswith(err.name + "."))):
                raise
    return [make() for make in _CASES.values()]
