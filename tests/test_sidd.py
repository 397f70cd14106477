"""Tests of the SIDD-Medium Raw reader on the real metadata files and small synthetic pixel files."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from _require import missing
from visionflows.data.sidd import (
    OFFICIAL_TEST_INSTANCES,
    OFFICIAL_TRAIN_INSTANCES,
    SiddRawDataset,
    find_sidd_images,
    pack_raw,
    parse_scene_folder,
    read_metadata,
    read_raw_mat,
    tile_patches,
    unpack_raw,
)
from visionflows.errors import DataError, InputError

S6 = "0001_001_S6_00100_00060_3200_L"
IP = "0093_004_IP_01250_00250_3200_L"
N6 = "0095_005_N6_00400_00200_3200_L"


@pytest.fixture(scope="module")
def meta_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "sidd_metadata"
    if not (path / S6).is_dir():
        missing(f"SIDD metadata ({path / S6})", "restore ../shared/data/sidd_metadata")
    return path


def test_split_constants() -> None:
    assert len(OFFICIAL_TRAIN_INSTANCES) == 56 and len(set(OFFICIAL_TRAIN_INSTANCES)) == 56
    assert len(OFFICIAL_TEST_INSTANCES) == 22
    assert not set(OFFICIAL_TRAIN_INSTANCES) & set(OFFICIAL_TEST_INSTANCES)
    assert {17, 18, 20} <= set(OFFICIAL_TRAIN_INSTANCES) and 114 not in OFFICIAL_TRAIN_INSTANCES


def test_split_matches_official_test_csv(shared_dir: Path) -> None:
    text = (shared_dir / "anchors" / "noiseflow_official" / "sidd_test_inst.csv").read_text()
    ids = [int(t) for t in text.split(",") if t.strip().isdigit()]
    assert tuple(ids) == OFFICIAL_TEST_INSTANCES


def test_parse_scene_folder() -> None:
    info = parse_scene_folder("0052_002_S6_01600_01000_5500_N")
    assert (info.instance_id, info.scene_id, info.camera, info.iso) == (52, 2, "S6", 1600)
    assert (info.shutter, info.illuminant_k, info.brightness) == (1000, 5500, "N")
    assert info.camera_index == 2 and info.exposure_s == pytest.approx(1e-3)
    assert parse_scene_folder(Path("/x/Data") / IP).iso == 1250
    for bad in (
        "0052_002_S6_01600_01000_5500",  # missing brightness
        "0052_002_XX_01600_01000_5500_N",  # unknown camera
        "0052_002_S6_1600_01000_5500_N",  # short ISO
        "0052_002_S6_00000_01000_5500_N",  # zero ISO
        "0052_002_S6_01600_01000_5500_Q",  # bad brightness
        "junk",
    ):
        with pytest.raises(DataError, match="SIDD scene folder"):
            parse_scene_folder(bad)


def test_metadata_s6(meta_dir: Path) -> None:
    m = read_metadata(meta_dir / S6 / "0001_METADATA_RAW_010.MAT")
    assert (m.camera, m.camera_index, m.iso) == ("S6", 2, 100)
    assert m.nlf_beta1 == pytest.approx(4.7946e-4, rel=1e-4)
    assert m.nlf_beta2 == 1e-6  # O = 0 replaced as the official code does
    assert m.nlf_per_channel.shape == (3, 2) and m.nlf_per_channel[0, 1] == 0
    assert m.cfa_pattern == (1, 0, 2, 1)
    assert (m.black_level, m.white_level) == (0, 1023)
    np.testing.assert_allclose(m.as_shot_neutral, [0.5527, 1, 0.4844], atol=1e-3)
    assert m.color_matrix.shape == (3, 3) and m.forward_matrix1.shape == (3, 3)
    assert (m.width, m.height) == (5328, 3000)


def test_metadata_n6(meta_dir: Path) -> None:
    m = read_metadata(meta_dir / N6 / "0095_METADATA_RAW_010.MAT")
    assert (m.camera, m.iso) == ("N6", 400)
    assert m.nlf_beta1 == pytest.approx(1.760e-3, rel=1e-3)
    assert m.nlf_beta2 == pytest.approx(1.301e-5, rel=1e-3)
    assert (m.black_level, m.white_level) == (64, 1023)
    assert m.cfa_pattern == (2, 1, 1, 0)


def test_metadata_iphone_subifds(meta_dir: Path) -> None:
    m = read_metadata(meta_dir / IP / "0093_METADATA_RAW_010.MAT")
    assert (m.camera, m.iso) == ("IP", 1250)
    assert m.cfa_pattern == (0, 1, 1, 2)
    assert (m.black_level, m.white_level) == (528, 4095)
    assert (m.width, m.height) == (4032, 3024)
    assert m.nlf_per_channel.shape == (3, 2)
    assert m.nlf_beta1 == pytest.approx(7.108e-4, rel=1e-3)
    assert m.nlf_beta2 == pytest.approx(3.295e-6, rel=1e-3)


def test_metadata_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_metadata(tmp_path / "none.MAT")
    bad = tmp_path / "bad_METADATA_RAW_010.MAT"
    bad.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="bad_METADATA_RAW_010.MAT"):
        read_metadata(bad)


def _write_v73(path: Path, arr: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=arr)


def test_read_raw_mat(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((8, 6)).astype(np.float32)
    arr[1, 1] = np.nan
    _write_v73(tmp_path / "a.MAT", arr)
    out = read_raw_mat(tmp_path / "a.MAT")
    assert out.shape == (8, 6) and out.dtype == np.float32 and out[1, 1] == 0
    (tmp_path / "b.MAT").write_bytes(b"MATLAB 5.0 MAT-file, corrupt" + b"\0" * 200)
    with pytest.raises(DataError, match="b.MAT"):
        read_raw_mat(tmp_path / "b.MAT")
    with pytest.raises(DataError, match="not found"):
        read_raw_mat(tmp_path / "c.MAT")


def test_pack_unpack_and_tiles() -> None:
    bayer = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
    packed = pack_raw(bayer)
    assert packed.shape == (4, 4, 6)
    assert packed[0, 0, 0] == bayer[0, 0] and packed[1, 0, 0] == bayer[0, 1]
    assert packed[2, 0, 0] == bayer[1, 1] and packed[3, 0, 0] == bayer[1, 0]
    np.testing.assert_array_equal(unpack_raw(packed), bayer)
    t = torch.from_numpy(bayer)
    assert torch.equal(unpack_raw(pack_raw(t)), t)
    with pytest.raises(InputError):
        pack_raw(np.zeros((5, 4)))
    img = np.arange(4 * 70 * 100, dtype=np.float32).reshape(4, 70, 100)
    tiles = tile_patches(img, 32, None)
    assert tiles.shape == (2 * 3, 4, 32, 32)
    np.testing.assert_array_equal(tiles[1], img[:, 0:32, 32:64])  # row-major
    np.testing.assert_array_equal(tiles[3], img[:, 32:64, 0:32])
    assert tile_patches(img, 32, 4).shape[0] == 4


def _make_root(tmp_path: Path, meta_dir: Path, under_data: bool = True) -> tuple[Path, dict]:
    root = tmp_path / "SIDD_Medium_Raw"
    base = root / "Data" if under_data else root
    rng = np.random.default_rng(1)
    arrays = {}
    # rename the real instances to ids of the official split (4: train, 54: test), keep camera/ISO fields
    for src, new_id in ((S6, 4), (N6, 54)):
        folder = base / f"{new_id:04d}{src[4:]}"
        folder.mkdir(parents=True)
        old_id = src[:4]
        for k in (10, 11):
            shutil.copyfile(
                meta_dir / src / f"{old_id}_METADATA_RAW_010.MAT", folder / f"{new_id:04d}_METADATA_RAW_{k:03d}.MAT"
            )
            clean = rng.uniform(0.05, 0.5, size=(96, 64)).astype(np.float32)
            noisy = clean + rng.normal(0, 0.02, size=clean.shape).astype(np.float32)
            noisy[0, 0] = -0.1  # clipped to 0
            _write_v73(folder / f"{new_id:04d}_GT_RAW_{k:03d}.MAT", clean)
            _write_v73(folder / f"{new_id:04d}_NOISY_RAW_{k:03d}.MAT", noisy)
            arrays[(new_id, k)] = (clean, noisy)
    (root / "README.txt").write_text("not a scene")
    return root, arrays


@pytest.mark.parametrize("under_data", [True, False])
def test_dataset_streams_patches(tmp_path: Path, meta_dir: Path, under_data: bool) -> None:
    root, arrays = _make_root(tmp_path, meta_dir, under_data)
    with pytest.warns(UserWarning, match="55 SIDD instances not found"):
        ds = SiddRawDataset(root, split="train", patch=16)
    assert [(im.info.instance_id, im.image_id) for im in ds.images] == [(4, 10), (4, 11)]
    items = list(ds)
    assert len(items) == 2 * (48 // 16) * (32 // 16)
    first = items[0]
    assert first["noise"].shape == (4, 16, 16) and first["noise"].dtype == torch.float32
    assert (first["iso"], first["camera"]) == (100, 2)
    clean, noisy = arrays[(4, 10)]
    exp_clean = pack_raw(clean)[:, :16, :16]
    exp_noise = pack_raw(np.clip(noisy, 0, 1))[:, :16, :16] - exp_clean
    np.testing.assert_allclose(first["clean"].numpy(), exp_clean)
    np.testing.assert_allclose(first["noise"].numpy(), exp_noise, atol=1e-7)
    assert first["noise"][0, 0, 0] == -first["clean"][0, 0, 0]
    assert first["nlf"][1] == 1e-6
    with pytest.warns(UserWarning):
        test = list(SiddRawDataset(root, split="test", patch=32, as_tuple=True, max_patches=1))
    assert len(test) == 2
    noise, clean_t, iso, cam = test[0]
    assert noise.shape == (4, 32, 32) and (iso, cam) == (400, 3)
    every = SiddRawDataset(root, split="all", isos=[400])
    assert {im.info.instance_id for im in every.images} == {54}


def test_dataset_errors(tmp_path: Path, meta_dir: Path) -> None:
    root, _ = _make_root(tmp_path, meta_dir)
    (root / "Data" / f"0004{S6[4:]}" / "0004_GT_RAW_011.MAT").unlink()
    with pytest.raises(DataError, match="0004_GT_RAW_011.MAT"):
        SiddRawDataset(root, instances=[4])
    with pytest.raises(DataError, match="instances not found"):
        SiddRawDataset(root, require_complete=True, split="test")
    with pytest.raises(DataError, match="instances not found"):
        find_sidd_images(root, instances=[54, 999])
    (root / "Data" / f"0054{N6[4:]}" / "0054_NOISY_RAW_010.MAT").write_bytes(b"\0" * 100)
    ds = SiddRawDataset(root, instances=[54])
    with pytest.raises(DataError, match="0054_NOISY_RAW_010.MAT"):
        next(iter(ds))
    (root / "Data" / "0002_001_S6_100_00060_3200_L").mkdir()
    with pytest.raises(DataError, match="Malformed SIDD scene folder name"):
        SiddRawDataset(root, split="all")
    with pytest.raises(InputError, match="split"):
        SiddRawDataset(root, split="val")
