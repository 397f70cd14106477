"""Real raw files through rawpy: DNGs written here with tifffile (DNG 1.4 tags) read back through LibRaw, bursts to
pairs by robust averaging, adaptation from a DNG folder, and one clear error per bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import visionflows
from visionflows.cli.main import main
from visionflows.data.adaptation import load_adaptation_folder
from visionflows.data.dng import burst_pairs, pack_bayer, read_raw, write_dng
from visionflows.errors import DataError
from visionflows.noise import NoiseFlow

BLACK, WHITE = 512, 16383
LEVELS = WHITE - BLACK


def _scene(h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return 0.05 + 0.4 * (x / w) + 0.2 * (y / h)  # normalised clean mosaic


def _shot(scene: np.ndarray, rng: np.random.Generator, k: float = 2e-4, read: float = 1e-6) -> np.ndarray:
    v = scene + rng.standard_normal(scene.shape) * np.sqrt(k * scene + read)
    return np.clip(np.rint(BLACK + v * LEVELS), 0, WHITE).astype(np.uint16)


@pytest.mark.parametrize("cfa, colours", [("RGGB", (0, 1, 1, 2)), ("BGGR", (2, 1, 1, 0)), ("GRBG", (1, 0, 2, 1)),
                                          ("GBRG", (1, 2, 0, 1))])
def test_dng_round_trip_through_rawpy(tmp_path, cfa, colours) -> None:
    dn = _shot(_scene(), np.random.default_rng(0))
    path = write_dng(tmp_path / "a.dng", dn, cfa, BLACK, WHITE, iso=1600, exposure=1 / 125,
                     noise_profile=(2e-4, 1e-6, 1.8e-4, 9e-7, 2.5e-4, 1.2e-6))
    f = read_raw(path)
    assert f.cfa == colours and f.black == (BLACK,) * 4 and f.white == WHITE
    assert np.allclose(f.bayer, np.clip((dn.astype(np.float64) - BLACK) / LEVELS, 0, 1), atol=1e-6)
    assert f.iso == 1600 and f.exposure == pytest.approx(0.008) and f.camera == "visionflows simulated"
    assert np.allclose(f.as_shot_neutral, (0.5, 1.0, 0.6)) and f.color_matrix.shape == (3, 3)
    packed, pc = f.packed()
    assert packed.shape == (4, 32, 48) and pc == (colours[0], colours[1], colours[3], colours[2])
    nlf = f.packed_nlf()
    assert nlf.shape == (4, 2) and np.allclose(nlf[0], [(2e-4, 1e-6), (1.8e-4, 9e-7), (2.5e-4, 1.2e-6)][pc[0]])


def test_pack_bayer_offsets() -> None:
    b = np.arange(16, dtype=np.float32).reshape(4, 4)
    packed, colours = pack_bayer(b, (0, 1, 1, 2))
    assert packed[:, 0, 0].tolist() == [0, 1, 5, 4] and colours == (0, 1, 2, 1)


def test_bad_raw_files(tmp_path) -> None:
    rgb = (np.random.default_rng(0).random((32, 48, 3)) * 3000).astype(np.uint16)
    base = [(50706, "B", 4, (1, 4, 0, 0), True), (50714, "I", 1, 0, True), (50717, "I", 1, 4095, True),
            (271, "s", 0, "x", True), (272, "s", 0, "y", True)]
    tifffile.imwrite(tmp_path / "linear.dng", rgb, photometric=34892, extratags=base)
    with pytest.raises(DataError, match="no colour filter array"):
        read_raw(tmp_path / "linear.dng")
    xtrans = bytes([1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1] * 2)
    tifffile.imwrite(tmp_path / "xtrans.dng", rgb[..., 0][:36], photometric=32803,
                     extratags=[(33421, "H", 2, (6, 6), True), (33422, "B", 36, xtrans, True), *base])
    with pytest.raises(DataError, match="unsupported CFA layout"):
        read_raw(tmp_path / "xtrans.dng")
    (tmp_path / "junk.dng").write_bytes(b"not a raw file" * 20)
    with pytest.raises(DataError, match="cannot read"):
        read_raw(tmp_path / "junk.dng")
    with pytest.raises(DataError, match="does not exist"):
        read_raw(tmp_path / "none.dng")


def test_burst_to_pairs(tmp_path) -> None:
    rng = np.random.default_rng(1)
    scene = _scene()
    frames = []
    for i in range(6):
        dn = _shot(scene, rng)
        if i == 3:
            dn[10, 10] = WHITE  # a one-frame outlier (a cosmic ray): rejected by the robust mean
        frames.append(read_raw(write_dng(tmp_path / f"b{i}.dng", dn, iso=800, exposure=0.01)))
    pairs = burst_pairs(frames)
    assert len(pairs) == 6
    truth = pack_bayer(scene.astype(np.float32), frames[0].cfa)[0]
    clean, noisy = pairs[0]
    assert np.abs(clean - truth).mean() < 0.55 * np.abs(noisy - truth).mean()  # 5 frames: ~std / sqrt(5) = 0.45
    assert abs(pairs[1][0][0, 5, 5] - truth[0, 5, 5]) < 0.02  # the outlier frame (index 3) is rejected
    noise = noisy - truth
    assert noise.var() == pytest.approx(float((2e-4 * truth + 1e-6).mean()), rel=0.1)
    odd = read_raw(write_dng(tmp_path / "iso.dng", _shot(scene, rng), iso=1600, exposure=0.01))
    with pytest.raises(DataError, match="differs in ISO"):
        burst_pairs([*frames[:2], odd])
    odd = read_raw(write_dng(tmp_path / "exp.dng", _shot(scene, rng), iso=800, exposure=0.02))
    with pytest.raises(DataError, match="differs in exposure"):
        burst_pairs([*frames[:2], odd])
    odd = read_raw(write_dng(tmp_path / "size.dng", _shot(_scene(64, 64), rng), iso=800, exposure=0.01))
    with pytest.raises(DataError, match="differs in size"):
        burst_pairs([*frames[:2], odd])
    with pytest.raises(DataError, match="at least 2 frames"):
        burst_pairs(frames[:1])


def test_adapt_from_a_dng_folder(tmp_path, capsys) -> None:
    rng = np.random.default_rng(2)
    scene = _scene()
    for i in range(3):
        write_dng(tmp_path / f"shot{i}.dng", _shot(scene, rng), iso=800, exposure=0.01, noise_profile=(2e-4, 1e-6))
    write_dng(tmp_path / "dark_0.dng", _shot(np.zeros_like(scene), rng), iso=800, exposure=0.01)
    data = load_adaptation_folder(tmp_path)
    assert data.kind == "pairs+dark-flat" and len(data) == 4 and data.iso == 800
    assert np.allclose(data.noise_profile, [[2e-4, 1e-6]] * 4)
    model = tmp_path / "m.safetensors"
    visionflows.save_model(NoiseFlow(seed=0).eval(), model)
    out = tmp_path / "six.safetensors"
    assert main(["noise", "adapt", "--model", str(model), "--data", str(tmp_path), "--camera", "My DNG camera",
                 "--out", str(out), "--steps", "3"]) == 0  # the ISO comes from the files
    info = json.loads(capsys.readouterr().out)
    assert info["iso"] == 800 and info["cameras"][-1] == "My DNG camera"
    write_dng(tmp_path / "shot9.dng", _shot(scene, rng), iso=1600, exposure=0.01)
    with pytest.raises(DataError, match="differs in ISO"):
        load_adaptation_folder(tmp_path)
