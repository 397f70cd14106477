"""Noise Flow for any camera from the command line: ``noise eval`` on simulated camera-zoo data (baselines, a
measured-parameter flow given each batch's measured parameters, a camera one-hot flow mapped by camera name) and
``noise sample`` for any zoo camera, with one clear error per bad input.

Most tests use a small profile file written here (three cameras of two makers), so they need nothing from
``../shared``; one uses the real darktable file for the brief's own example (Sony ILCE-7M3 at ISO 6400)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import visionflows
from visionflows.cameras import NLF_TABLE
from visionflows.cameras.darktable import load_darktable_profiles
from visionflows.cli.main import main
from visionflows.noise.adapt import add_camera
from visionflows.noise.baselines import CameraNLF
from visionflows.noise.metrics import camera_map, evaluate_noise_models, unknown_cameras
from visionflows.noise.model import NoiseFlow, create_model

CAMS = {("Acme", "Cam 1"): (2e-5, 1e-5, 3e-5), ("Acme", "Cam 2"): (6e-5, 4e-5, 7e-5), ("Bolt", "Z9"): (1e-4,) * 3}


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    """A valid darktable profile file: three cameras, ISO 800 and 3200 (3200: four times the 800 gain)."""
    makers: dict[str, list] = {}
    for (maker, model), a in CAMS.items():
        profs = [{"name": f"{model} iso {iso}", "iso": iso, "a": [x * iso / 800 for x in a],
                  "b": [2e-7 * iso / 800] * 3} for iso in (800, 3200)]
        makers.setdefault(maker, []).append({"comment": "test", "model": model, "profiles": profs})
    doc = {"version": 0, "noiseprofiles": [{"maker": m, "models": ms} for m, ms in makers.items()]}
    path = tmp_path_factory.mktemp("zoo") / "noiseprofiles.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained measured-parameter flow (it *is* the camera NLF at initialisation) and a camera one-hot flow
    of one zoo camera."""
    d = tmp_path_factory.mktemp("models")
    nlf, onehot = d / "nlf.safetensors", d / "onehot.safetensors"
    visionflows.save_model(create_model("noiseflow_nlf", seed=0).eval(), nlf)
    visionflows.save_model(NoiseFlow(num_cameras=1, camera_names=["Acme Cam 2"], continuous_iso=True).eval(), onehot)
    return {"nlf": nlf, "onehot": onehot}


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("visionflows: error:"), err
    return err


# -- noise eval on zoo cameras ---------------------------------------------------------------------------------------
def test_eval_on_zoo_cameras(profiles, models, tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    argv = ["noise", "eval", "--profiles", str(profiles), "--zoo-cameras", "maker:Acme", "--zoo-isos", "800,3200",
            "--zoo-physics", "poisson-gaussian", "--sim-train-images", "4", "--sim-test-images", "4",
            "--batch-size", "16", "--model", str(models["nlf"]), "--model", str(models["onehot"]),
            "--out", str(out)]
    with pytest.warns(UserWarning, match=r"'onehot' has no camera column for 1 of the 2 test cameras \(Acme Cam 1\)"):
        assert main(argv) == 0
    cap = capsys.readouterr()
    assert "camera zoo maker:Acme (2 cameras, 4 camera/ISO pairs), poisson-gaussian" in cap.out
    assert "simulator marginal NLL floor" in cap.out  # Poisson-Gaussian has a tractable density
    s = json.loads((out / "results.json").read_text())
    assert s["n_patches"] == 64 and set(s["per_camera"]) == {"Acme Cam 1", "Acme Cam 2"}
    o = s["overall"]
    for name in ("Gaussian", "Camera NLF (profile)", "Heteroscedastic (fitted)", "nlf"):
        assert o[name]["n_patches"] == 64 and math.isfinite(o[name]["nll"]) and math.isfinite(o[name]["kl"])
    # the untrained measured-parameter flow is the camera NLF: only if each batch's profiles reach it
    assert abs(o["nlf"]["nll"] - o["Camera NLF (profile)"]["nll"]) < 1e-4
    assert o["Camera NLF (profile)"]["nll"] < o["Gaussian"]["nll"] - 0.1
    # the one-hot flow scores only the patches of its own camera, under its own index
    assert o["onehot"]["n_patches"] == s["per_camera"]["Acme Cam 2"]["onehot"]["n_patches"] == 32
    assert s["per_camera"]["Acme Cam 1"]["onehot"]["nll"] is None
    assert "Acme Cam 2" in (out / "table.txt").read_text() and (out / "histograms.png").is_file()


@pytest.mark.parametrize("extra, match", [
    (["--zoo-cameras", "Acme Cam 3"], "nearest: Acme Cam 2; Acme Cam 1"),
    (["--zoo-cameras", "Acme Cam 1", "--zoo-isos", "1600"], "none of the 1 cameras has any of ISO [1600]"),
    (["--zoo-cameras", "maker:Acne"], "nearest: Acme"),
    (["--zoo-cameras", "format:huge"], "sensor format 'huge'"),
    (["--zoo-cameras", "Acme Cam 1", "--zoo-physics", "tukey,bogus"], "unknown sensor effect"),
    (["--zoo-cameras", "Acme Cam 1", "--profiles", "MISSING"], "does not exist"),
    (["--zoo-cameras", "Acme Cam 1", "--data", "SIDD"], "two data sources"),
])
def test_eval_zoo_bad_input(extra, match, profiles, tmp_path, capsys) -> None:
    extra = [str(tmp_path / "x.json") if e == "MISSING" else str(tmp_path) if e == "SIDD" else e for e in extra]
    argv = ["noise", "eval", "--profiles", str(profiles), "--sim-train-images", "1", "--sim-test-images", "1", *extra]
    assert main(argv) == 2
    assert match in _err(capsys)


def test_evaluation_maps_cameras_by_name() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 4, 8, 8, generator=g) * 0.5 + 0.1
    noise = torch.randn(6, 4, 8, 8, generator=g) * 0.01
    data = {"clean": clean, "noise": noise, "iso": torch.full((6,), 800), "camera": torch.tensor([0, 1, 2] * 2)}
    flow = NoiseFlow(num_cameras=2, camera_names=["B", "A"], continuous_iso=True, seed=1).eval()
    with torch.no_grad():  # make the two camera columns differ, so a wrong index shows
        sdn = next(m for m in flow.modules() if hasattr(m, "cam_params"))
        sdn.beta2.fill_(-3.0)
        sdn.cam_params[:, 0] += 0.5
    names = ("a", "B", "C")  # the test set's cameras: case does not matter; C is unknown to the flow
    assert camera_map(flow, names).tolist() == [1, 0, -1] and unknown_cameras({"f": flow}, names) == {"f": ["C"]}
    assert camera_map(CameraNLF(), names) is None and camera_map(flow, None) is None
    res = evaluate_noise_models({"f": flow}, data, batch_size=6, camera_names=names)
    with torch.no_grad():
        want = flow.nll_per_dim(noise, clean, 800, torch.tensor([1, 0, 0] * 2)).double().numpy()
        unmapped = flow.nll_per_dim(noise, clean, 800, torch.tensor([0, 1, 0] * 2)).double().numpy()
    assert np.allclose(res.nll["f"][[0, 1, 3, 4]], want[[0, 1, 3, 4]], atol=1e-6)
    assert np.abs(want - unmapped)[[0, 1]].min() > 1e-2  # the columns differ: the set's own index would show
    assert np.isnan(res.nll["f"][[2, 5]]).all()
    s = res.summary()
    assert set(s["per_camera"]) == {"a", "B", "C"} and s["per_camera"]["C"]["f"]["n_patches"] == 0


# -- noise sample for any zoo camera ---------------------------------------------------------------------------------
@pytest.fixture()
def clean(tmp_path):
    path = tmp_path / "clean.npy"
    np.save(path, np.full((4, 32, 32), 0.25, np.float32))
    return path


def _sample(model, clean, tmp_path, *extra, profiles=None):
    argv = ["noise", "sample", "--model", str(model), "--clean", str(clean), "--out", str(tmp_path / "n.npy"),
            "--seed", "3", *extra]
    return main([*argv, "--profiles", str(profiles)] if profiles else argv)


def test_sample_a_zoo_camera_from_its_profile(profiles, models, clean, tmp_path, capsys) -> None:
    assert _sample(models["nlf"], clean, tmp_path, "--camera", "acme cam 1", "--iso", "3200", profiles=profiles) == 0
    info = json.loads(capsys.readouterr().out)
    want = load_darktable_profiles(profiles).camera("Acme Cam 1").sensor_params(3200).nlf()
    assert info["camera"] == "acme cam 1" and "darktable profile of Acme Cam 1 at ISO 3200" in info["nlf_source"]
    assert np.allclose(info["nlf"], want)
    model = visionflows.load_model(models["nlf"]).eval()
    y = torch.from_numpy(np.load(clean))[None]
    ref = model.sample(y, 3200, 0, generator=torch.Generator().manual_seed(3), nlf=torch.from_numpy(want)[None])
    assert np.allclose(np.load(tmp_path / "n.npy"), (y + ref).clamp(0, 1)[0].numpy(), atol=1e-6)


def test_sample_a_zoo_camera_with_a_saved_camera_nlf(profiles, clean, tmp_path, capsys) -> None:
    """The camera NLF baseline saved to a file (its table marks SIDD's missing pairs with NaN) takes a zoo
    camera's profile at an ISO SIDD does not have."""
    path = tmp_path / "camera_nlf.safetensors"
    visionflows.save_model(visionflows.create_model("camera_nlf"), path)
    assert _sample(path, clean, tmp_path, "--camera", "Acme Cam 2", "--iso", "3200", profiles=profiles) == 0
    info = json.loads(capsys.readouterr().out)
    want = load_darktable_profiles(profiles).camera("Acme Cam 2").sensor_params(3200).nlf()
    assert np.allclose(info["nlf"], want) and info["noise_std"] > 0


def test_sample_with_explicit_or_registered_parameters(models, clean, tmp_path, capsys) -> None:
    assert _sample(models["nlf"], clean, tmp_path, "--iso", "800", "--nlf-params", "2e-4,1e-6") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nlf_source"] == "--nlf-params" and np.allclose(info["nlf"], [[2e-4, 1e-6]] * 4)
    # a DNG NoiseProfile per colour plane (R, G, B) onto the RGGB packing R, G, B, G
    assert _sample(models["nlf"], clean, tmp_path, "--iso", "800", "--nlf-params", "1e-4 1e-6 2e-4 2e-6 3e-4 3e-6") == 0
    assert np.allclose(json.loads(capsys.readouterr().out)["nlf"], [[1e-4, 1e-6], [2e-4, 2e-6], [3e-4, 3e-6],
                                                                    [2e-4, 2e-6]])
    assert _sample(models["nlf"], clean, tmp_path, "--iso", "800", "--camera", "S6") == 0  # the SIDD table's row
    assert np.allclose(json.loads(capsys.readouterr().out)["nlf"], [NLF_TABLE[("S6", 800)]] * 4)
    adapted = add_camera(visionflows.load_model(models["nlf"]), "My Camera")  # as `noise adapt` registers one
    with torch.no_grad():
        adapted.camera_nlf[-1] = torch.tensor([[5e-4, 5e-6]] * 4, dtype=torch.float64)
    path = tmp_path / "adapted.safetensors"
    visionflows.save_model(adapted, path)
    assert _sample(path, clean, tmp_path, "--iso", "800", "--camera", "my camera") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nlf_source"] == "the model (noise adapt)" and np.allclose(info["nlf"], [[5e-4, 5e-6]] * 4)
    assert _sample(models["onehot"], clean, tmp_path, "--iso", "800", "--camera", "ACME CAM 2") == 0  # its camera
    capsys.readouterr()


@pytest.mark.parametrize("which, extra, match", [
    ("nlf", ["--camera", "Acme Cam 3", "--iso", "800"], "nearest: Acme Cam 2; Acme Cam 1"),
    ("nlf", ["--camera", "Acme Cam 1", "--iso", "1600"], "nearest: 800, 3200"),
    ("nlf", ["--camera", "Acme Cam 1", "--iso", "800", "--profiles", "MISSING"], "does not exist"),
    ("nlf", ["--iso", "800"], "needs the camera's noise parameters"),
    ("nlf", ["--iso", "800", "--nlf-params", "1,2,3"], "needs 2 (one S,O pair), 6"),
    ("nlf", ["--iso", "800", "--nlf-params=-1e-4,1e-6"], "every S >= 0"),
    ("nlf", ["--iso", "800", "--nlf-params", "a,b"], "not a list of numbers"),
    ("nlf", ["--iso", "1600", "--camera", "G4"], "no row for G4 at ISO 1600"),
    ("onehot", ["--camera", "Acme Cam 1", "--iso", "800"], "camera one-hot model of the cameras Acme Cam 2 only"),
    ("onehot", ["--camera", "Acme Cam 2", "--iso", "800", "--nlf-params", "1e-4,1e-6"], "would be ignored"),
    ("onehot", ["--iso", "800"], "pass --camera NAME, one of its cameras (Acme Cam 2)"),
])
def test_sample_bad_input(which, extra, match, profiles, models, clean, tmp_path, capsys) -> None:
    extra = [str(tmp_path / "none.json") if e == "MISSING" else e for e in extra]
    has_profiles = "--profiles" in extra
    assert _sample(models[which], clean, tmp_path, *extra, profiles=None if has_profiles else profiles) == 2
    err = _err(capsys)
    assert match in err, err
    if which == "onehot" and "--nlf-params" not in extra and "--camera" in extra:
        assert "noiseflow_nlf" in err and "visionflows noise adapt" in err  # both ways to reach the camera
    assert not (tmp_path / "n.npy").exists()


def test_sample_the_real_zoo(shared_dir, models, clean, tmp_path, capsys) -> None:
    real = shared_dir / "data" / "noise_profiles" / "darktable_noiseprofiles.json"
    assert _sample(models["nlf"], clean, tmp_path, "--camera", "Sony ILCE-7M3", "--iso", "6400", profiles=real) == 0
    info = json.loads(capsys.readouterr().out)
    assert np.allclose(info["nlf"], load_darktable_profiles(real).camera("Sony ILCE-7M3").sensor_params(6400).nlf())
    assert _sample(models["onehot"], clean, tmp_path, "--camera", "Sony ILCE-7M3", "--iso", "6400",
                   profiles=real) == 2
    assert "Unknown camera 'Sony ILCE-7M3'" in _err(capsys)


# -- the issue's other bad inputs, through the command line ----------------------------------------------------------
def _bad_folder(kind: str, root):
    import tifffile

    from visionflows.data.dng import write_dng

    d = root / kind
    d.mkdir()
    if kind == "shape":  # adaptation data of the wrong shape
        np.save(d / "a_noisy.npy", np.zeros((4, 8, 8), np.float32))
        np.save(d / "a_clean.npy", np.zeros((3, 8, 8), np.float32))
    elif kind == "exposure":  # a burst whose frames differ in exposure
        rng = np.random.default_rng(0)
        for i, t in enumerate((0.01, 0.01, 0.02)):
            write_dng(d / f"b{i}.dng", rng.integers(600, 4000, (32, 32)).astype(np.uint16), iso=800, exposure=t)
    elif kind == "linear":  # a DNG without a colour filter array
        rgb = (np.random.default_rng(0).random((32, 48, 3)) * 3000).astype(np.uint16)
        tifffile.imwrite(d / "linear.dng", rgb, photometric=34892, extratags=[
            (50706, "B", 4, (1, 4, 0, 0), True), (50714, "I", 1, 0, True), (50717, "I", 1, 4095, True),
            (271, "s", 0, "x", True), (272, "s", 0, "y", True)])
    return d


@pytest.mark.parametrize("kind, match", [("shape", "packed raw"), ("exposure", "differs in exposure"),
                                         ("linear", "no colour filter array")])
def test_adapt_and_render_bad_data(kind, match, models, tmp_path, capsys) -> None:
    d = _bad_folder(kind, tmp_path)
    out = tmp_path / "a.safetensors"
    assert main(["noise", "adapt", "--model", str(models["nlf"]), "--data", str(d), "--camera", "X",
                 "--out", str(out)]) == 2
    assert match in _err(capsys) and not out.exists()
    if kind == "linear":
        assert main(["noise", "render", str(d / "linear.dng"), "--out", str(tmp_path / "r.png")]) == 2
        assert match in _err(capsys)


@pytest.mark.parametrize("content, match", [("{", "is not JSON"), ('{"version": 7, "noiseprofiles": []}',
                                                                   "version 7")])
def test_bad_profile_file_through_sample(content, match, models, clean, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert _sample(models["nlf"], clean, tmp_path, "--camera", "Acme Cam 1", "--iso", "800", profiles=bad) == 2
    assert match in _err(capsys)
