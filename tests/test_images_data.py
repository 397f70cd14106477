"""Image data loaders: folders (incl. corrupt files), ImageNet npz, built-in photos, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionflows.data.images import (
    BUILTIN_TEST,
    builtin_photos,
    center_square,
    grid_crops,
    list_images,
    load_folder,
    load_image,
    load_imagenet_npz,
    open_images,
    random_crops,
    to_channels,
)
from visionflows.errors import DataError


def _write(path, h, w, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=None).save(path)


def test_folder_recursive_resize_and_corrupt_files(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "a.png", 30, 40)
    _write(tmp_path / "sub" / "b.JPG", 50, 20, seed=1)
    _write(tmp_path / "sub" / "g.png", 16, 16, mode="L", seed=2)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "g.png"]
    imgs = load_folder(tmp_path, channels=3, resolution=8)
    assert len(imgs) == 3 and all(t.shape == (3, 8, 8) and t.dtype == torch.uint8 for t in imgs)
    grey = load_folder(tmp_path, channels=1)
    assert grey[0].shape == (1, 30, 40)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning, match="bad.png"):
        assert len(load_folder(tmp_path, resolution=8, on_error="skip")) == 3
    with pytest.raises(DataError, match="bad.png"):
        load_folder(tmp_path, resolution=8, on_error="stop")
    with pytest.raises(DataError):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG"):
        list_images(tmp_path / "empty")


def test_center_square_and_channels():
    img = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    sq = center_square(img)
    assert torch.equal(sq, img[:, :, 1:5])
    assert center_square(img, 2).shape == (3, 2, 2)
    g = to_channels(torch.full((3, 2, 2), 100, dtype=torch.uint8), 1)
    assert g.shape == (1, 2, 2) and int(g[0, 0, 0]) == 100


def test_imagenet_npz(tmp_path):
    r = 4
    data = np.random.default_rng(0).integers(0, 256, (5, 3 * r * r), dtype=np.uint8)
    np.savez(tmp_path / "val_data.npz", data=data, labels=np.arange(1, 6))
    imgs, labels = load_imagenet_npz(tmp_path / "val_data.npz", return_labels=True)
    assert imgs.shape == (5, 3, r, r) and imgs.dtype == torch.uint8
    # channel-planar rows: the first r² values are the red plane
    assert np.array_equal(imgs[2, 0].numpy().reshape(-1), data[2, : r * r])
    assert np.array_equal(imgs[2, 2].numpy().reshape(-1), data[2, 2 * r * r :])
    assert labels.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(DataError):
        load_imagenet_npz(tmp_path / "val_data.npz", resolution=8)
    pool = open_images(tmp_path / "val_data.npz", 4)
    assert pool.eval_images.shape == (5, 3, 4, 4)
    with pytest.raises(DataError, match="4×4 images but the model is 8×8"):
        open_images(tmp_path / "val_data.npz", 8)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError):
        load_imagenet_npz(tmp_path / "bad.npz")


def test_builtin_photos_split_and_pool():
    train, test = builtin_photos("train"), builtin_photos("test")
    assert len(train) == 7 and len(test) == len(BUILTIN_TEST) == 2
    assert all(t.dtype == torch.uint8 and t.shape[0] == 3 and min(t.shape[1:]) >= 256 for t in train + test)
    pool = open_images(None, 16)
    assert pool.eval_images.shape[1:] == (3, 16, 16) and len(pool) == 7
    c1 = pool.crops(4, 8, torch.Generator().manual_seed(0), flip=True)
    c2 = pool.crops(4, 8, torch.Generator().manual_seed(0), flip=True)
    assert c1.shape == (4, 3, 8, 8) and torch.equal(c1, c2)
    assert builtin_photos("test", channels=1)[0].shape[0] == 1


def test_shared_folders_readable(shared_dir):
    imgs = load_folder(shared_dir / "data" / "images" / "set5" / "HR", resolution=32)
    assert len(imgs) == 5 and imgs[0].shape == (3, 32, 32)
    files = list_images(shared_dir / "data" / "images" / "bsd300_test")
    assert len(files) == 100
    img = load_image(files[0])
    assert img.shape[0] == 3 and sorted(img.shape[1:]) == [321, 481]


def test_random_and_grid_crops():
    imgs = [torch.zeros(3, 10, 12, dtype=torch.uint8)]
    assert random_crops(imgs, 3, 4).shape == (3, 3, 4, 4)
    with pytest.raises(DataError):
        random_crops(imgs, 1, 16)
    assert grid_crops(imgs, 4).shape == (6, 3, 4, 4)
