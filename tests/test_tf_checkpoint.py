"""Tests of the pure-Python TensorFlow checkpoint reader against the released Noise Flow checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _require import missing
from visionflows.errors import CheckpointError
from visionflows.io.tf_bundle import crc32c, masked_crc32c, read_tf_checkpoint

PREFIX = "model.ckpt.best"


@pytest.fixture(scope="module")
def official(shared_dir: Path) -> Path:
    path = shared_dir / "anchors" / "noiseflow_official"
    if not (path / f"{PREFIX}.index").is_file():
        missing(f"the official checkpoint ({path / (PREFIX + '.index')})",
                "restore ../shared/anchors/noiseflow_official")
    return path


def _copy(official: Path, dst: Path) -> Path:
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(official / f"{PREFIX}{suffix}", dst / f"{PREFIX}{suffix}")
    return dst / PREFIX


def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0 and crc32c(b"abc") == 0x364B3FB7
    # TF / LevelDB mask: rotate right by 15 bits, add 0xa282ead8 (mod 2**32); 0xE3069283 rotated is 0x2507C60D
    assert masked_crc32c(b"") == 0xA282EAD8
    assert masked_crc32c(b"123456789") == (0x2507C60D + 0xA282EAD8) % 2**32 == 0xC78AB0E5


def test_reads_official_checkpoint(official: Path) -> None:
    tensors = read_tf_checkpoint(official)
    assert len(tensors) == 143
    assert sum(v.size for v in tensors.values()) == 2721
    assert all(v.dtype == np.float32 for v in tensors.values())
    assert tensors["model/sdn_gain/beta1"].shape == (1,)
    assert tensors["model/sdn_gain/beta1"][0] == pytest.approx(-4.31796, abs=1e-5)
    assert tensors["model/sdn_gain/cam_params"].shape == (3, 5)
    assert tensors["model/sdn_gain/gain_params"].shape == (5,)
    assert tensors["level0/bijector1/rescaling_scale0"].shape == ()
    assert tensors["model/real_nvp_conv_template/l_1/W"].shape == (3, 3, 2, 4)
    assert tensors["model/real_nvp_conv_template_7/l_last/W"].shape == (3, 3, 5, 4)
    assert tensors["model/real_nvp_conv_template_3/l_last/logs"].shape == (1, 4)
    assert tensors["model/real_nvp_conv_template_1/bn_nvp_conv_2/var"].shape == (4,)
    p = tensors["level0/bijector6/Conv2d_1x1_6/P_matpar_lu_conv2d_1x1_6_0"]
    assert p.shape == (4, 4) and set(np.unique(p)) <= {0.0, 1.0}
    assert tensors["level0/bijector9/Conv2d_1x1_9/L_vec_matpar_lu_conv2d_1x1_9_0"].shape == (6,)


def test_prefix_and_file_forms_agree(official: Path) -> None:
    a = read_tf_checkpoint(official / PREFIX)
    b = read_tf_checkpoint(official / f"{PREFIX}.index", verify_crc=False)
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_missing_files(tmp_path: Path, official: Path) -> None:
    with pytest.raises(CheckpointError, match="No TensorFlow checkpoint index"):
        read_tf_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="index not found"):
        read_tf_checkpoint(tmp_path / "nope.ckpt")
    shutil.copyfile(official / f"{PREFIX}.index", tmp_path / f"{PREFIX}.index")
    with pytest.raises(CheckpointError, match="data file missing"):
        read_tf_checkpoint(tmp_path)


def test_truncated_data(tmp_path: Path, official: Path) -> None:
    prefix = _copy(official, tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_tf_checkpoint(prefix)


def test_corrupt_data_crc(tmp_path: Path, official: Path) -> None:
    prefix = _copy(official, tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC-32C mismatch"):
        read_tf_checkpoint(prefix)
    assert len(read_tf_checkpoint(prefix, verify_crc=False)) == 143


def test_bad_magic_and_truncated_index(tmp_path: Path, official: Path) -> None:
    prefix = _copy(official, tmp_path)
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="bad table magic"):
        read_tf_checkpoint(prefix)
    index.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="truncated"):
        read_tf_checkpoint(prefix)
    # keep the footer, drop the blocks: block handles now point outside the file
    index.write_bytes((official / f"{PREFIX}.index").read_bytes()[-48:])
    with pytest.raises(CheckpointError):
        read_tf_checkpoint(prefix)


def test_corrupt_index_block(tmp_path: Path, official: Path) -> None:
    prefix = _copy(official, tmp_path)
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC-32C mismatch"):
        read_tf_checkpoint(prefix)
