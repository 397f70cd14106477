"""sRGB pair layouts as datasets publish them (SIDD sRGB, PolyU, Nam, ours, CSV manifest), PNG and JPEG; bad pairs
stop with one error naming the file or are skipped with a warning; splits by camera and tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionflows.cli.main import main
from visionflows.data.srgb_layouts import parse_polyu_stem, parse_sidd_scene, parse_stem
from visionflows.data.srgb_pairs import detect_layout, find_pairs, load_pairs
from visionflows.errors import ConfigError, DataError


def _pair(rng: np.random.Generator, size: int = 48, sigma: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack([128 + 80 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * yy + rng.uniform(0.5, 2) * xx))
                      for _ in range(3)], -1)
    clean[size // 3 : size // 2, size // 4 : size // 2] = 30
    clean = np.clip(clean, 0, 255).astype(np.uint8)
    noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
    return noisy, clean


def _save(path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else \
        Image.fromarray(arr).save(path)


def make_layout(root, layout: str, seed: int = 0):
    """A small dataset in ``layout``; returns the path to pass as --data."""
    rng = np.random.default_rng(seed)
    if layout == "sidd":
        for scene in ("0001_001_S6_00100_00060_3200_L", "0093_004_IP_01250_00250_3200_L"):
            pre = scene[:4]
            for k in ("010", "011"):
                n, c = _pair(rng)
                _save(root / "Data" / scene / f"{pre}_NOISY_SRGB_{k}.PNG", n)
                _save(root / "Data" / scene / f"{pre}_GT_SRGB_{k}.PNG", c)
        return root
    if layout == "polyu":
        for stem in ("Canon5D2_5_160_3200_chair_11", "Canon5D2_5_160_3200_chair_12", "Nikon800_4_125_6400_plant_1"):
            n, c = _pair(rng)
            _save(root / "CroppedImages" / f"{stem}_real.JPG", n)
            _save(root / "CroppedImages" / f"{stem}_mean.JPG", c)
        return root
    if layout == "nam":
        for stem in ("d800_iso1600_1", "d800_iso1600_2", "5dmark3_iso3200_1"):
            n, c = _pair(rng)
            _save(root / f"{stem}_real.png", n)
            _save(root / f"{stem}_mean.png", c)
        return root
    if layout == "ours":
        for stem, ext in (("cama_iso100_1", "png"), ("cama_iso100_2", "jpg"), ("7", "png")):
            n, c = _pair(rng)
            _save(root / f"{stem}_noisy.{ext}", n)
            _save(root / f"{stem}_clean.{ext}", c)
        return root
    if layout == "manifest":
        lines = ["noisy,clean,camera,iso"]
        for i, (cam, iso) in enumerate((("pixel7", "800"), ("pixel7", "1600"), ("", ""))):
            n, c = _pair(rng)
            _save(root / "imgs" / f"n{i}.png", n)
            _save(root / "imgs" / f"c{i}.jpeg", c)
            lines.append(f"imgs/n{i}.png,imgs/c{i}.jpeg,{cam},{iso}")
        (root / "pairs.csv").write_text("\n".join(lines) + "\n")
        return root / "pairs.csv"
    raise ValueError(layout)


EXPECTED = {  # layout -> (pairs, cameras, isos)
    "sidd": (4, {"s6": 2, "ip": 2}, {"100": 2, "1250": 2}),
    "polyu": (3, {"canon5d2": 2, "nikon800": 1}, {"3200": 2, "6400": 1}),
    "nam": (3, {"d800": 2, "5dmark3": 1}, {"1600": 2, "3200": 1}),
    "ours": (3, {"cama": 2, "?": 1}, {"100": 2, "?": 1}),
    "manifest": (3, {"pixel7": 2, "?": 1}, {"800": 1, "1600": 1, "?": 1}),
}


def test_name_parsers():
    assert parse_sidd_scene("0001_001_S6_00100_00060_3200_L") == ("s6", 100)
    assert parse_sidd_scene("0200_010_GP_01600_03200_5500_N") == ("gp", 1600)
    assert parse_sidd_scene("0001_001_S6_00100") == (None, None)
    assert parse_polyu_stem("Canon5D2_5_160_3200_chair_11") == ("canon5d2", 3200)
    assert parse_polyu_stem("Sony_A7II_2.8_60_1600_door_3") == ("sony_a7ii", 1600)  # camera names with _
    assert parse_stem("d800_iso3200_1") == ("d800", 3200) and parse_stem("Canon80D_8_8_12800_ball_3") == ("canon80d",
                                                                                                          12800)
    assert parse_stem("0001") == (None, None)


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_each_layout_detected_and_loaded(tmp_path, layout):
    data = make_layout(tmp_path, layout)
    assert detect_layout(data) == layout
    pairs = load_pairs(data)
    n, cams, isos = EXPECTED[layout]
    s = pairs.summary()
    assert (s["layout"], s["pairs"], s["cameras"], s["isos"]) == (layout, n, cams, isos)
    assert all(a.dtype == np.uint8 and a.shape == (48, 48, 3) for a in pairs.noisy + pairs.clean)
    # the noisy image really is the noisy one (JPEG or PNG): noise std ~4 levels around the clean image
    err = np.concatenate([(a.astype(float) - b).ravel() for a, b in zip(pairs.noisy, pairs.clean)])
    assert 2.5 < err.std() < 6.0
    # naming the layout explicitly gives the same pairs
    assert load_pairs(data, layout=layout).names == pairs.names


def test_polyu_and_nam_names_both_parse_under_either_layout(tmp_path):
    data = make_layout(tmp_path, "nam")
    assert load_pairs(data, layout="polyu").summary()["cameras"] == EXPECTED["nam"][1]


def test_cli_info_reports_counts(tmp_path, capsys):
    data = make_layout(tmp_path, "sidd")
    assert main(["srgb-noise", "info", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "layout sidd" in out and "4 pairs" in out and "s6" in out and "1250" in out
    assert main(["srgb-noise", "info", "--data", str(data), "--layout", "polyu"]) == 2
    assert "no complete polyu pairs" in capsys.readouterr().err


def test_mixed_layouts_ask_for_layout(tmp_path):
    make_layout(tmp_path / "a", "ours")
    make_layout(tmp_path / "b", "nam")
    with pytest.raises(ConfigError, match="mixes pair layouts.*--layout"):
        load_pairs(tmp_path)
    assert load_pairs(tmp_path, layout="nam").summary()["pairs"] == 3


def test_bad_pairs_one_error_naming_the_file_or_skipped(tmp_path):
    make_layout(tmp_path, "polyu")
    d = tmp_path / "CroppedImages"
    # differently sized
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(d / "Canon5D2_5_160_3200_chair_12_mean.JPG")
    with pytest.raises(DataError, match="chair_12_real.JPG is 48x48 but .*chair_12_mean.JPG is 48x40"):
        load_pairs(tmp_path)
    # unreadable
    (d / "Nikon800_4_125_6400_plant_1_real.JPG").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 2 bad pair") as rec:
        pairs = load_pairs(tmp_path, on_error="skip")
    assert pairs.names == ["CroppedImages/Canon5D2_5_160_3200_chair_11"]
    msg = str(rec[0].message)
    assert "plant_1_real.JPG" in msg and "chair_12" in msg
    # misaligned (a 3-pixel shift of the clean image)
    n, c = _pair(np.random.default_rng(1), 64)
    _save(d / "Canon5D2_5_160_3200_chair_13_real.JPG", n)
    _save(d / "Canon5D2_5_160_3200_chair_13_mean.JPG", np.roll(c, 3, axis=1))
    (d / "Nikon800_4_125_6400_plant_1_real.JPG").unlink()
    (d / "Nikon800_4_125_6400_plant_1_mean.JPG").unlink()
    (d / "Canon5D2_5_160_3200_chair_12_mean.JPG").unlink()
    (d / "Canon5D2_5_160_3200_chair_12_real.JPG").unlink()
    with pytest.raises(DataError, match="chair_13_real.JPG: the clean image is misaligned"):
        load_pairs(tmp_path, on_error="stop")


def test_orphans(tmp_path, capsys):
    make_layout(tmp_path, "sidd")
    gt = tmp_path / "Data" / "0001_001_S6_00100_00060_3200_L" / "0001_GT_SRGB_011.PNG"
    gt.unlink()
    with pytest.raises(DataError, match="0001_NOISY_SRGB_011.PNG has no gt partner"):
        find_pairs(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert len(find_pairs(tmp_path, on_error="skip")) == 3
    assert main(["srgb-noise", "info", "--data", str(tmp_path)]) == 2
    assert "0001_NOISY_SRGB_011.PNG" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="0001_NOISY_SRGB_011.PNG"):
        assert main(["srgb-noise", "info", "--data", str(tmp_path), "--on-error", "skip"]) == 0


def test_manifest_errors(tmp_path):
    csv = make_layout(tmp_path, "manifest")
    text = csv.read_text()
    csv.write_text(text.replace("noisy,clean", "input,clean"))
    with pytest.raises(DataError, match="no noisy column"):
        load_pairs(csv)
    csv.write_text(text.replace("imgs/n1.png", "imgs/gone.png"))
    with pytest.raises(DataError, match="line 3: .*gone.png does not exist"):
        load_pairs(csv)
    with pytest.warns(UserWarning, match="gone.png"):
        assert len(load_pairs(csv, on_error="skip")) == 2
    csv.write_text(text.replace(",800", ",high"))
    with pytest.raises(DataError, match="line 2: ISO 'high' is not a number"):
        load_pairs(csv)
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path, layout="manifest")  # a folder without manifest.csv


def test_camera_split_and_tiles(tmp_path):
    pairs = load_pairs(make_layout(tmp_path, "nam"))
    rest, held = pairs.camera_split("D800")
    assert set(held.cameras) == {"d800"} and len(held) == 2 and rest.cameras == ["5dmark3"]
    with pytest.raises(DataError, match="no pairs of camera 'x3'.*5dmark3, d800"):
        pairs.camera_split("x3")
    t = held.tiles(16)
    assert len(t) == 2 * 9 and t.names[0].endswith("#0") and t.noisy[0].shape == (16, 16, 3)
    assert np.array_equal(t.noisy[4], held.noisy[0][16:32, 16:32]) and t.isos == [1600] * 18
