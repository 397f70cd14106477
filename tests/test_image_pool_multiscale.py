"""The ``multiscale`` training policy of image folders: random crops at several scales of whole photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionflows.data.images import TRAIN_SCALES, ImagePool, center_square, open_images
from visionflows.errors import InputError


def _photo(h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_copies_at_every_scale_that_does_not_upscale():
    big, small = _photo(40, 60), _photo(10, 12, 1)
    pool = ImagePool([big, small], 16, "multiscale")
    assert pool.n_photos == 2
    # big (short side 40): sides 16, 20, 24, 32 all ≤ 40; small (short 10): only the m = 1 copy, upscaled to 16
    shorts = sorted(min(im.shape[-2:]) for im in pool.images)
    assert shorts == [16, 16, 20, 24, 32] and len(pool) == 5
    # aspect ratio is kept
    assert all(abs(im.shape[-1] / im.shape[-2] - 1.5) < 0.1 for im in pool.images[:4])
    # evaluation images are the centre squares at the model's resolution (the "resize" policy's images)
    assert torch.equal(pool.eval_images[0], center_square(big, 16))
    crops = pool.crops(7, 8, torch.Generator().manual_seed(0), flip=True)
    assert crops.shape == (7, 3, 8, 8) and crops.dtype == torch.uint8


@pytest.mark.parametrize("scales", [(), (0.5, 1.0), (1.0, float("nan"))])
def test_bad_scales_are_one_clear_error(scales):
    with pytest.raises(InputError, match="multipliers"):
        ImagePool([_photo(20, 20)], 8, "multiscale", scales=scales)


def test_open_images_folder_train_is_multiscale_and_test_is_resize(tmp_path):
    for k in range(3):
        Image.fromarray(_photo(48, 64, k).permute(1, 2, 0).numpy()).save(tmp_path / f"{k}.png")
    train = open_images(str(tmp_path), 16, 3, "train")
    test = open_images(str(tmp_path), 16, 3, "test")
    assert train.policy == "multiscale" and train.n_photos == 3 and len(train) == 3 * len(TRAIN_SCALES)
    assert test.policy == "resize" and torch.equal(train.eval_images, test.eval_images)
