"""Raw → sRGB rendering: the forward of unprocessing (a round trip gives the photo back), demosaicing, the
``noise render`` command on packed arrays and DNGs, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionflows.cameras.specs import CAMERA_SPECS
from visionflows.cli.main import main
from visionflows.data.dng import pack_bayer, write_dng
from visionflows.data.render import demosaic_bilinear, render_packed, tile_patches, unpack_packed
from visionflows.data.simulated import load_photo, mosaic_packed, unprocess
from visionflows.errors import InputError


@pytest.mark.parametrize("camera", ["S6", "IP", "N6"])
def test_render_inverts_unprocessing(camera) -> None:
    img = load_photo("chelsea")[:120, :160]
    spec = CAMERA_SPECS[camera]
    packed = mosaic_packed(unprocess(img, spec, exposure=0.5), spec)
    out, gain = render_packed(packed, spec.packed_colors, spec.as_shot_neutral, spec.color_matrix, gain=2.0,
                              transposed=True)
    assert out.shape == img.shape and out.dtype == np.uint8 and gain == 2.0
    assert np.abs(out / 255.0 - img).mean() < 0.03  # only demosaicing and 8-bit rounding differ
    auto, g = render_packed(packed, spec.packed_colors, spec.as_shot_neutral, spec.color_matrix, transposed=True)
    assert g > 0 and np.percentile(auto, 99) > 200


def test_unpack_and_demosaic() -> None:
    bayer = np.random.default_rng(0).random((8, 12))
    packed, colours = pack_bayer(bayer, (1, 0, 2, 1))
    mosaic, cmap = unpack_packed(packed, colours)
    assert np.array_equal(mosaic, bayer) and cmap[0, 1] == 0 and cmap[1, 0] == 2
    rgb = demosaic_bilinear(np.full((8, 12), 0.3), cmap)
    assert np.allclose(rgb, 0.3)  # a flat mosaic stays flat
    rgb = demosaic_bilinear(bayer, cmap)
    assert np.array_equal(rgb[0, 1, 0], bayer[0, 1]) and np.array_equal(rgb[1, 0, 2], bayer[1, 0])
    tiles = np.arange(4 * 4 * 2 * 2, dtype=np.float32).reshape(4, 4, 2, 2)
    assert tile_patches(tiles, 2).shape == (4, 4, 4)
    with pytest.raises(InputError, match="tile"):
        tile_patches(tiles, 3)
    with pytest.raises(InputError, match="packed raw"):
        unpack_packed(np.zeros((3, 2, 2)), (0, 1, 2, 1))


def test_render_command(tmp_path, capsys, shared_dir) -> None:
    profiles = shared_dir / "data" / "noise_profiles" / "darktable_noiseprofiles.json"
    spec = CAMERA_SPECS["S6"]
    clean = mosaic_packed(unprocess(load_photo("coffee")[:64, :96], spec, 0.5), spec).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    np.save(tmp_path / "clean.npy", clean)
    np.save(tmp_path / "noisy.npy", np.stack([noisy, noisy]))
    one = tmp_path / "clean.png"
    assert main(["noise", "render", str(tmp_path / "clean.npy"), "--camera", "S6", "--out", str(one)]) == 0
    assert np.asarray(Image.open(one)).shape == (64, 96, 3)
    capsys.readouterr()
    folder = tmp_path / "out"
    assert main(["noise", "render", str(tmp_path / "clean.npy"), str(tmp_path / "noisy.npy"), "--camera", "S6",
                 "--out", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in folder.iterdir()) == ["clean.png", "noisy_0.png", "noisy_1.png"]
    assert main(["noise", "render", str(tmp_path / "noisy.npy"), "--camera", "S6", "--reference",
                 str(tmp_path / "clean.npy"), "--out", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["gain"] == pytest.approx(info["gain"])  # the clean one's gain
    dng = write_dng(tmp_path / "a.dng", (np.random.default_rng(1).random((32, 48)) * 8000 + 512).astype(np.uint16),
                    iso=800)
    assert main(["noise", "render", str(dng), "--out", str(tmp_path / "dng.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "dng.png")).shape == (32, 48, 3)
    capsys.readouterr()
    for argv, match in (([str(tmp_path / "clean.npy"), "--out", str(one)], "pass --camera"),
                        ([str(tmp_path / "noisy.npy"), "--camera", "S6", "--out", str(one)], "is a file"),
                        ([str(tmp_path / "clean.npy"), "--camera", "Acme Z", "--profiles", str(profiles),
                          "--out", str(one)], "no camera"),
                        ([str(tmp_path / "nope.npy"), "--camera", "S6", "--out", str(one)], "does not exist")):
        assert main(["noise", "render", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("visionflows: error:") and match in err, err
