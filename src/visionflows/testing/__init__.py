"""The shared test harnesses: bijectors (:func:`check_bijector` over the case registry) and models
(:func:`check_model` over every registered preset).

Every invertible layer of visionflows registers a :class:`BijectorCase` (``register_case``) in a module named
``cases`` of its package; :func:`cases` imports every such module of the package (found by walking it, so none
can be forgotten; one that fails to import is an error) and builds the cases. Users can run both protocols on
their own layers and models.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from visionflows.testing.harness import BijectorCase, check_bijector, context_to
from visionflows.testing.models import check_model

__all__ = ["BijectorCase", "case_modules", "cases", "check_bijector", "check_model", "context_to", "register_case"]

_CASES: dict[str, Callable[[], BijectorCase]] = {}


def register_case(fn: Callable[[], BijectorCase]) -> Callable[[], BijectorCase]:
    """Decorator: register a zero-argument function returning a :class:`BijectorCase` (built lazily)."""
    _CASES[fn.__name__] = fn
    return fn


def case_modules() -> list[str]:
    """Every ``visionflows.*.cases`` module of the installed package."""
    import visionflows

    return sorted(m.name for m in pkgutil.walk_packages(visionflows.__path__, "visionflows.")
                  if m.name.rsplit(".", 1)[-1] == "cases")


def cases() -> list[BijectorCase]:
    """Every registered case, built fresh (deterministic inputs)."""
    for mod in case_modules():
        importlib.import_module(mod)
    return [make() for make in _CASES.values()]
