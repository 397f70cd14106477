"""The README stays true: its Python quick starts run, and CI runs exactly its test command.

The CI check reads what is executed, not what is written about it: the top-level commands of ``.ci/run`` (a shell
parse of its lines) and the recipes ``make -n -B <target>`` prints, i.e. everything make would run on a fresh
machine where nothing is installed yet.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"


@pytest.mark.slow
def test_readme_python_blocks_run(shared_dir, tmp_path, monkeypatch):
    # the quick starts refer to ../shared next to the checkout and write to /tmp: here both point at this test's
    # own folders (shared_dir honours VISIONFLOWS_SHARED), and anything else they write lands in tmp_path
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        block = block.replace('"../shared', f'"{shared_dir.resolve()}').replace('"/tmp/', f'"{tmp_path}/')
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "level.safetensors").is_file()


def _readme_commands() -> list[str]:
    """The commands (comments stripped) of the first shell block under the README's "Two commands" heading."""
    readme = (ROOT / "README.md").read_text()
    assert "\n## Two commands\n" in readme, "README.md lost its '## Two commands' section"
    section = readme.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh|console)\n(.*?)```", section, re.S)
    assert block, "no shell block in the README's 'Two commands' section"
    return [c for c in (line.split("#", 1)[0].strip() for line in block.group(1).splitlines()) if c]


def _top_level_commands(script: str) -> list[str]:
    """Commands a shell script runs at top level: comments dropped, continuations joined, compound commands
    (``if … fi``, ``for … done``, ``( … )``, ``{ … }``) kept whole as one entry each."""
    lines, buf = [], ""
    for raw in script.splitlines():
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        if (buf + line).strip():
            lines.append((buf + line).strip())
        buf = ""
    out, block, depth = [], [], 0
    for line in lines:
        bare = re.sub(r"\"[^\"]*\"|'[^']*'", "''", line)  # keywords inside strings do not count
        words = re.findall(r"[\w]+|[(){}]", bare)
        depth += sum(w in ("if", "for", "while", "until", "case", "(", "{") for w in words)
        depth -= sum(w in ("fi", "done", "esac", ")", "}") for w in words)
        block.append(line)
        if depth == 0:
            out.append("\n".join(block))
            block = []
    assert not block, f"unterminated compound command in .ci/run: {block}"
    return out


def _make_dry_run(command: str) -> list[str]:
    """What ``command`` (``make <target>``) executes on a fresh checkout: ``make -n -B`` prints every recipe line,
    rebuilding all prerequisites (the venv and the install) as if none existed."""
    args = shlex.split(command)
    assert args[0] == "make" and len(args) == 2, f"expected 'make <target>', got {command!r}"
    make = shutil.which("make")
    assert make, "make is not installed, but the README's commands are make targets"
    proc = subprocess.run([make, "-n", "-B", args[1]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _pytest_args(recipe: list[str]) -> list[list[str]]:
    calls = [shlex.split(line) for line in recipe if re.search(r"(^|[\s/])(pytest|python -m pytest)\b", line)]
    return [c[c.index("pytest") + 1:] for c in calls]


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    assert [c.split()[:2] for c in commands] == [["make", "demo"], ["make", "test"]], commands
    test_command = commands[1]

    ci = CI.read_text()
    assert ci.startswith("#!/usr/bin/env bash\n") and os.access(CI, os.X_OK), ".ci/run: not an executable bash script"
    top = _top_level_commands(ci)
    assert top[0] == "set -euo pipefail", top  # a failing step fails CI
    assert top[-1] == test_command, f".ci/run must end with the README's test command {test_command!r}, got {top[-1]!r}"
    assert "export VISIONFLOWS_REQUIRE_SHARED=1" in top  # missing reference material fails instead of skipping
    # nothing else installs the package or runs tests: CI gets only what `make test` does
    for line in top[:-1]:
        assert not re.search(r"\b(make|pytest|ruff|pip|python3?)\b|\.venv", line), f".ci/run also runs: {line!r}"

    recipe = _make_dry_run(test_command)
    installs = [i for i, line in enumerate(recipe) if re.search(r"pip install .*-e \"?\.\[[^\]]*\btest\b", line)]
    assert installs, f"{test_command!r} does not install the package with its test extra: {recipe}"
    assert any(re.search(r"-m venv\b", line) for line in recipe[: installs[0]]), "no fresh venv before the install"
    assert any(line.endswith("ruff check src tests benchmarks") for line in recipe), recipe
    runs = _pytest_args(recipe)
    assert runs == [["-q"]], f"{test_command!r} must run pytest once over the whole suite, got {runs}"
    assert max(i for i, line in enumerate(recipe) if "pytest" in line) > installs[0]
    # and nothing in the pytest configuration deselects tests behind its back
    pyproject = (ROOT / "pyproject.toml").read_text()
    addopts = re.search(r'^addopts\s*=\s*"([^"]*)"', pyproject, re.M).group(1).split()
    assert not {"-m", "-k", "--deselect", "--ignore", "--ignore-glob", "-x"} & set(addopts), addopts


def test_make_test_fast_leaves_out_only_slow_tests():
    recipe = _make_dry_run("make test-fast")
    assert any(line.endswith("ruff check src tests benchmarks") for line in recipe), recipe
    assert _pytest_args(recipe) == [["-q", "-m", "not slow"]], recipe
