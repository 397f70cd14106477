"""Shared pytest fixtures.

``shared_dir`` points at ``../shared`` next to the checkout (override with ``VISIONFLOWS_SHARED``). Tests that
need it skip with a reason when it is absent, and fail instead when ``VISIONFLOWS_REQUIRE_SHARED=1``; so do tests
needing a file inside it, an installed extra or a C++ compiler (``_require.py``).

Marks: only those registered in pyproject.toml (``slow``, plus pytest's own) are allowed, even when
``--strict-markers`` is dropped from the command line. Tests that take longer than ``VISIONFLOWS_SLOW_SECONDS``
(default 5 s: setup + call + teardown) without the ``slow`` mark are listed at the end of the run, so that
``make test-fast`` (``-m "not slow"``) stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from _require import _kernels_required  # noqa: F401  (fixture of the needs_kernels mark)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_path() -> Path:
    env = os.environ.get("VISIONFLOWS_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_path()
    if not path.is_dir():
        if os.environ.get("VISIONFLOWS_REQUIRE_SHARED") == "1":
            pytest.fail(f"../shared is required (VISIONFLOWS_REQUIRE_SHARED=1) but {path} does not exist")
        pytest.skip(f"reference material not found at {path} (set VISIONFLOWS_SHARED)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


def _registered_marks(config: pytest.Config) -> set[str]:
    # lines look like "slow: description" or "skipif(condition, ..., *, reason=...): description"
    return {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    known = _registered_marks(config)
    bad = sorted({f"{item.nodeid}: @pytest.mark.{m.name}" for item in items for m in item.iter_markers()
                  if m.name not in known})
    if bad:
        raise pytest.UsageError("unregistered pytest marks (register them in pyproject.toml's "
                                "[tool.pytest.ini_options] markers, or fix the typo):\n  " + "\n  ".join(bad))


_durations: dict[str, float] = {}
_marked_slow: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if "slow" in report.keywords:
        _marked_slow.add(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    limit = float(os.environ.get("VISIONFLOWS_SLOW_SECONDS", "5"))
    late = sorted(((d, n) for n, d in _durations.items() if d > limit and n not in _marked_slow), reverse=True)
    if late:
        terminalreporter.section(f"tests over {limit:g} s without @pytest.mark.slow (mark them, or make them faster)")
        for d, n in late:
            terminalreporter.line(f"{d:6.1f} s  {n}")
