"""Render an HTML file in headless Chromium (Debian's package) and read back what the page recorded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("VISIONFLOWS_REQUIRE_SHARED") == "1" or os.environ.get("CI"):
            pytest.fail("headless Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def _base(exe: str, profile: str) -> list[str]:
    # a throwaway profile: nothing is written to the user's ~/.config/chromium
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--allow-file-access-from-files", "--virtual-time-budget=5000", f"--user-data-dir={profile}"]


def render_dom(html_path: Path) -> dict[str, int]:
    """Load the page; return the counters its script put on <body> (images loaded/total, tables)."""
    exe = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        out = subprocess.run([*_base(exe, profile), "--dump-dom", html_path.resolve().as_uri()], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    found = dict(re.findall(r'data-(images-loaded|images-total|tables)="(\d+)"', out))
    return {k: int(v) for k, v in found.items()}


def screenshot(html_path: Path, png: Path, width: int = 1200, height: int = 2400) -> Path:
    exe = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        subprocess.run([*_base(exe, profile), f"--window-size={width},{height}", f"--screenshot={png.resolve()}",
                        html_path.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    return png
