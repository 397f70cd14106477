"""The documentation site builds with ``mkdocs build --strict`` and documents the key public API.

Skips only when mkdocs is not installed and ``VISIONFLOWS_REQUIRE_SHARED`` is not ``"1"`` (the ``docs`` extra
installs it); otherwise a missing mkdocs or a failing build fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO_ROOT / "docs"
MKDOCS_YML = REPO_ROOT / "mkdocs.yml"

#: public names that the generated API page must document (one anchor each).
KEY_NAMES = (
    "visionflows.testing.check_bijector",
    "visionflows.flows.ActNorm",
    "visionflows.flows.FlowModel",
    "visionflows.flows.ContextScale",
    "visionflows.registry.create_model",
    "visionflows.registry.register_model",
    "visionflows.testing.check_model",
    "visionflows.glow.Glow",
    "visionflows.io.save_model",
    "visionflows.io.load_model",
    "visionflows.training.train",
    "visionflows.training.TrainConfig",
    "visionflows.noise.load_official",
    "visionflows.noise.create_model",
    "visionflows.noise.NoiseContext",
    "visionflows.noise.evaluate_noise_models",
    "visionflows.noise.train.NoiseFlowTask",
    "visionflows.noise.train.moment_init_signal_layer",
    "visionflows.wavelet.WaveletFlow.bits_per_dim",
    "visionflows.wavelet.WaveletFlow.super_resolve",
    "visionflows.wavelet.WaveletLevel",
    "visionflows.wavelet.train.train_level",
    "visionflows.wavelet.train.train_all_levels",
    "visionflows.wavelet.train.assemble",
    "visionflows.denoise.DnCNN",
    "visionflows.data.sidd.SiddRawDataset",
    "visionflows.data.images.open_images",
)


def _nav_pages() -> list[str]:
    """The ``.md`` files named in mkdocs.yml's nav (read as text: the file needs no YAML tags)."""
    text = MKDOCS_YML.read_text(encoding="utf-8")
    nav = text.split("\nnav:", 1)[1]
    nav = re.split(r"\n\S", nav, maxsplit=1)[0]  # up to the next top-level key
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.MULTILINE)


def test_nav_pages_exist() -> None:
    pages = _nav_pages()
    assert "index.md" in pages and "api.md" in pages, pages
    missing = [p for p in pages if not (DOCS_DIR / p).is_file()]
    assert not missing, f"pages in mkdocs.yml nav but not in docs/: {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        if os.environ.get("VISIONFLOWS_REQUIRE_SHARED") == "1":
            pytest.fail("mkdocs / mkdocstrings are not installed (install the 'docs' extra: pip install -e '.[docs]')")
        pytest.skip("mkdocs / mkdocstrings not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(MKDOCS_YML), "-d", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.slow
def test_every_nav_page_is_built(site: Path) -> None:
    for page in _nav_pages():
        html = site / ("index.html" if page == "index.md" else Path(page).with_suffix("") / "index.html")
        assert html.is_file(), f"{page} was not rendered to {html}"


@pytest.mark.slow
def test_api_page_documents_key_names(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in KEY_NAMES if f'id="{name}"' not in html]
    assert not missing, f"API reference lacks: {missing}"
    for short in ("check_bijector", "load_official", "bits_per_dim"):
        assert short in html


@pytest.mark.slow
def test_pages_mention_their_papers(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    for cite in ("Noise Flow", "Wavelet Flow", "Glow", "Unprocessing Images", "Modeling sRGB Camera Noise"):
        assert cite in index, cite


def test_contract_page_examples_run(tmp_path: Path) -> None:
    """The code on docs/contracts.md (adding a layer, the registry, adding a model) runs as written."""
    text = (DOCS_DIR / "contracts.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    script = tmp_path / "contracts_examples.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "roundtrip64" in out.stdout and "log_prob_vs_encode" in out.stdout
