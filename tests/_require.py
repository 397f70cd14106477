"""Prerequisites a test may find missing: skip with the reason locally, fail in CI.

``.ci/run`` sets ``VISIONFLOWS_REQUIRE_SHARED=1``; there a missing prerequisite (a file of ``../shared``, an
installed extra, a C++ compiler) fails the test instead of skipping it, so nothing is silently skipped in CI.
``VISIONFLOWS_KERNELS=0`` is an explicit request for the pure-PyTorch paths and still skips the kernel tests.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NoReturn

import pytest

from visionflows import kernels


def required() -> bool:
    """Whether missing prerequisites fail (CI) instead of skipping."""
    return os.environ.get("VISIONFLOWS_REQUIRE_SHARED") == "1"


def missing(what: str, fix: str) -> NoReturn:
    """Fail (CI) or skip (elsewhere) because ``what`` is missing; ``fix`` says how to provide it."""
    if required():
        pytest.fail(f"{what} is required here (VISIONFLOWS_REQUIRE_SHARED=1): {fix}")
    pytest.skip(f"missing {what}: {fix}")


def require_module(name: str, extra: str) -> None:
    """The importable module ``name``, which the ``extra`` of the package installs."""
    if importlib.util.find_spec(name) is None:
        missing(f"the module {name!r}", f"pip install -e '.[{extra}]'")


def require_kernels() -> None:
    """The native kernels can be built: a C++ compiler, and ``VISIONFLOWS_KERNELS`` is not ``0``."""
    if os.environ.get("VISIONFLOWS_KERNELS") == "0":
        pytest.skip("VISIONFLOWS_KERNELS=0: the pure-PyTorch paths are the only ones")
    if kernels.compiler() is None:
        missing("a C++ compiler (the native kernels cannot be built without one)",
                "install g++ (apt-get install g++) or set CXX")


@pytest.fixture
def _kernels_required() -> None:
    require_kernels()


#: mark for tests of the native kernels (the fixture is registered in ``conftest.py``)
needs_kernels = pytest.mark.usefixtures("_kernels_required")
