"""The README stays true: its Python quick starts run, and CI runs exactly its test command."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(shared_dir, monkeypatch):
    monkeypatch.chdir(ROOT)  # the quick start refers to ../shared relative to the checkout
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert "VISIONFLOWS_REQUIRE_SHARED=1" in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK) or ci.startswith("#!")
