"""Shared pytest fixtures.

``shared_dir`` points at ``../shared`` next to the checkout (override with ``VISIONFLOWS_SHARED``). Tests that
need it skip with a reason when it is absent, and fail instead when ``VISIONFLOWS_REQUIRE_SHARED=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
