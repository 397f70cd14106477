"""Few-frame adaptation: the data folder (pairs, dark + flat frames, one error per bad input), a sixth camera for the
released Noise Flow, measured parameters for ``noiseflow_nlf``, and ``visionflows noise adapt``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import visionflows
from visionflows.cli.main import main
from visionflows.data.adaptation import adaptation_patches, frames_to_pairs, load_adaptation_folder
from visionflows.errors import DataError, InputError
from visionflows.io import load_model
from visionflows.noise import NoiseFlow
from visionflows.noise.adapt import adapt_camera, add_camera, fit_measured_params
from visionflows.noise.train import moment_init_signal_layer

K = np.array([4e-4, 2e-4, 3e-4, 2e-4])[:, None, None]
READ = 4e-6


def _noisy(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (clean + rng.standard_normal(clean.shape) * np.sqrt(K * clean + READ)).astype(np.float32)


def _folder(tmp_path, pairs: int = 2, dark: int = 0, flat: int = 0, size: int = 64):
    rng = np.random.default_rng(0)
    for i in range(pairs):
        clean = (rng.random((4, size, size)) * 0.5 + 0.05).astype(np.float32)
        np.save(tmp_path / f"shot{i}_clean.npy", clean)
        np.save(tmp_path / f"shot{i}_noisy.npy", _noisy(clean, rng))
    for i in range(dark):
        np.save(tmp_path / f"dark_{i}.npy", _noisy(np.zeros((4, size, size)), rng))
    for i in range(flat):
        np.save(tmp_path / f"flat_{i}.npy", _noisy(np.full((4, size, size), 0.3), rng))
    return tmp_path


def test_folder_pairs_and_dark_flat(tmp_path) -> None:
    data = load_adaptation_folder(_folder(tmp_path, pairs=2, dark=1, flat=4))
    assert len(data) == 2 + 1 + 4 and data.kind == "pairs+dark-flat"
    p = adaptation_patches(data.pairs, 32)
    assert p["clean"].shape == (7 * 4, 4, 32, 32)
    flats = [data.pairs[i][1] for i in range(3, 7)]
    assert np.allclose(data.pairs[3][0], np.mean(flats, axis=0))  # >= 4 flats: per-pixel mean
    one = frames_to_pairs([], flats[:1])
    assert np.allclose(one[0][0], flats[0].mean(axis=(1, 2), keepdims=True))  # fewer: per-channel mean
    assert not data.pairs[2][0].any()  # dark frame: clean 0


def test_folder_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no adaptation data"):
        load_adaptation_folder(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_adaptation_folder(tmp_path / "nope")
    np.save(tmp_path / "a_noisy.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match="a has a noisy file but no clean one"):
        load_adaptation_folder(tmp_path)
    np.save(tmp_path / "a_clean.npy", np.zeros((4, 8, 6), np.float32))
    with pytest.raises(DataError, match="differ in shape"):
        load_adaptation_folder(tmp_path)
    np.save(tmp_path / "a_clean.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(DataError, match="packed raw"):
        load_adaptation_folder(tmp_path)
    with pytest.raises(DataError, match="smaller than one 32×32 patch"):
        adaptation_patches([(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))], 32)
    with pytest.raises(DataError, match="flat frames differ"):
        frames_to_pairs([], [np.zeros((4, 8, 8)), np.zeros((4, 8, 4))])


def test_sixth_camera_for_the_released_architecture() -> None:
    rng = np.random.default_rng(1)
    clean = torch.from_numpy((rng.random((16, 4, 16, 16)) * 0.5 + 0.05).astype(np.float32))
    noise = torch.from_numpy(_noisy(clean.numpy(), rng)) - clean
    model = NoiseFlow(seed=0)
    moment_init_signal_layer(model, 3 * noise, clean, torch.full((16,), 800))  # "other cameras": 9x the variance
    model.eval()
    six = add_camera(model, "Acme X1")
    assert six.num_cameras == 6 and six.camera_names[-1] == "Acme X1"
    sdn = six.layer("sdn0")
    assert torch.allclose(sdn.cam_params[:, 5], model.layer("sdn0").cam_params.mean(1))
    adapted, info = adapt_camera(model, "Acme X1", noise, clean, 800, steps=40, lr=0.1)
    assert info["index"] == 5 and info["parameters"] == 3 and info["nll_after"] < info["nll_before"] - 0.3
    before = dict(model.state_dict())
    for k, v in adapted.state_dict().items():  # only the new camera's column moved
        if k.endswith("cam_params"):
            assert torch.equal(v[:, :5], before[k]) and not torch.equal(v[:, 5], six.state_dict()[k][:, 5])
        else:
            assert torch.equal(v, before[k]), k
    assert adapted.log_prob(noise[:2], clean[:2], 800, "acme x1").shape == (2,)  # by name
    with pytest.raises(InputError, match="already has a camera"):
        add_camera(adapted, "Acme X1")
    with pytest.raises(InputError, match="Unknown camera 'Nope'"):
        adapted.log_prob(noise[:2], clean[:2], 800, "Nope")
    with pytest.raises(InputError, match=r"\[N, 4, H, W\]"):
        adapt_camera(model, "B", noise[:, :2], clean, 800)


def test_measured_parameters_for_the_nlf_flow() -> None:
    rng = np.random.default_rng(2)
    clean = torch.from_numpy((rng.random((32, 4, 16, 16)) * 0.6 + 0.02).astype(np.float32))
    noise = torch.from_numpy(_noisy(clean.numpy(), rng)) - clean
    fit = fit_measured_params(noise, clean)
    assert np.allclose(fit[:, 0].numpy(), K.ravel(), rtol=0.1) and np.allclose(fit[:, 1].numpy(), READ, rtol=0.3)
    model = visionflows.create_model("noiseflow_nlf").eval()
    adapted, info = adapt_camera(model, "Acme X1", noise, clean, 800, steps=20)
    assert info["parameters"] == 8 and info["nll_after"] <= info["nll_before"]
    assert adapted.camera_names == ("Acme X1",) and adapted.camera_nlf.shape == (1, 4, 2)
    by_name = adapted.log_prob(noise[:4], clean[:4], 800, "Acme X1")  # the registered parameters
    ctx = adapted.context(clean[:4], 800, 0, nlf=adapted.camera_nlf[[0, 0, 0, 0]])
    assert torch.allclose(by_name, adapted.log_prob(noise[:4], ctx))


def test_adapt_command(tmp_path, capsys) -> None:
    (tmp_path / "d").mkdir()
    data = _folder(tmp_path / "d", pairs=1, dark=1, flat=1)
    src = tmp_path / "nf.safetensors"
    visionflows.save_model(NoiseFlow(seed=0).eval(), src)
    out = tmp_path / "six.safetensors"
    argv = ["noise", "adapt", "--model", str(src), "--data", str(data), "--camera", "Acme X1", "--out", str(out),
            "--iso", "800", "--steps", "5"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cameras"][-1] == "Acme X1" and info["data"] == "pairs+dark-flat" and info["patches"] == 12
    assert load_model(out).num_cameras == 6
    clean = tmp_path / "c.npy"
    np.save(clean, np.full((4, 8, 8), 0.2, np.float32))
    assert main(["noise", "sample", "--model", str(out), "--clean", str(clean), "--iso", "800",
                 "--camera", "Acme X1", "--out", str(tmp_path / "n.npy")]) == 0
    capsys.readouterr()
    base = ["noise", "adapt", "--model", str(src), "--camera", "Acme X1", "--out", str(out)]
    for extra, match in ((["--iso", "800", "--data", str(tmp_path / "none")], "does not exist"),
                         (["--data", str(data)], "ISO is not known"),
                         (["--iso", "800", "--data", str(tmp_path)], "no adaptation data")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("visionflows: error:") and match in err, err


def test_train_on_zoo_cameras(tmp_path, capsys, shared_dir) -> None:
    profiles = shared_dir / "data" / "noise_profiles" / "darktable_noiseprofiles.json"
    base = ["noise", "train", "--zoo-profiles", str(profiles), "--sim-train-images", "3", "--sim-test-images", "1",
            "--steps", "3", "--batch-size", "8", "--no-progress"]
    assert main([*base, "--run-dir", str(tmp_path / "a"), "--preset", "noiseflow_nlf",
                 "--zoo-cameras", "Nikon D850,Fujifilm X-T2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 3
    assert main([*base, "--run-dir", str(tmp_path / "b"), "--zoo-cameras", "maker:Leica", "--zoo-isos", "400"]) == 0
    capsys.readouterr()
    model = load_model(tmp_path / "b")  # the released architecture with one camera column per zoo camera
    assert model.camera_names[0].startswith("Leica") and model.num_cameras == len(model.camera_names) > 1
    for extra, match in ((["--preset", "noiseflow_nlf"], "needs data with measured noise parameters"),
                         (["--zoo-cameras", "format:huge"], "sensor format 'huge'"),
                         (["--zoo-cameras", "Nikon D850", "--zoo-isos", "7"], "has any of ISO [7]")):
        assert main([*base, "--run-dir", str(tmp_path / "c"), *extra]) == 2
        assert match in capsys.readouterr().err
