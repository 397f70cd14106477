"""Tests of the SIDD camera NLF table."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionflows.cameras import (
    CAMERAS,
    ISOS,
    NLF_TABLE,
    TRAIN_PAIRS,
    camera_index,
    camera_name,
    iso_index,
    load_nlf_table,
    nlf_params,
)
from visionflows.errors import DataError, InputError


def test_constants() -> None:
    assert CAMERAS == ("IP", "GP", "S6", "N6", "G4")
    assert ISOS == (100, 400, 800, 1600, 3200)
    assert len(NLF_TABLE) == 22
    assert len(TRAIN_PAIRS) == 15 and set(TRAIN_PAIRS) <= set(NLF_TABLE)


def test_camera_index() -> None:
    assert [camera_index(c) for c in CAMERAS] == [0, 1, 2, 3, 4]
    assert camera_index("s6") == 2
    assert camera_index(3) == 3
    assert camera_name(4) == "G4"
    for bad in ("XX", 5, -1, ""):
        with pytest.raises(InputError, match="camera"):
            camera_index(bad)
    assert iso_index(1600) == 3
    with pytest.raises(InputError, match="1250"):
        iso_index(1250)


def test_nlf_params() -> None:
    assert nlf_params("S6", 100) == (0.000479, 0.000002)
    assert nlf_params(3, 3200) == (0.013773, 0.000833)
    with pytest.raises(InputError, match="G4 at ISO 1600"):
        nlf_params("G4", 1600)
    with pytest.raises(InputError, match="camera"):
        nlf_params("D800", 100)


@pytest.mark.parametrize("fname,n", [("cam_iso_nlf_all.txt", 22), ("cam_iso_nlf.txt", 15)])
def test_matches_official_files(shared_dir: Path, fname: str, n: int) -> None:
    path = shared_dir / "anchors" / "noiseflow_official" / fname
    table = load_nlf_table(path)
    assert len(table) == n
    for key, (b1, b2) in table.items():
        assert NLF_TABLE[key] == pytest.approx((b1, b2), rel=0, abs=1e-12)
    if n == 15:
        assert set(table) == set(TRAIN_PAIRS)
    assert nlf_params("N6", 800, table) == pytest.approx((0.003476, 0.000052))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Cannot read"):
        load_nlf_table(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("cam_iso,beta1,beta2\nS6_00100,0.1\n")
    with pytest.raises(DataError, match="line 2"):
        load_nlf_table(bad)
    bad.write_text("cam_iso,beta1,beta2\nXX_00100,0.1,0.2\n")
    with pytest.raises(DataError, match="Malformed"):
        load_nlf_table(bad)
    bad.write_text("cam_iso,beta1,beta2\n")
    with pytest.raises(DataError, match="no rows"):
        load_nlf_table(bad)
