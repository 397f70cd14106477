"""The darktable camera zoo: reading the real profile file, the mapping into packed-Bayer units, the zoo simulator
and datasets, the ``noise cameras`` / ``noise simulate`` commands, and one clear error per bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visionflows.cameras import darktable
from visionflows.cameras.darktable import CameraZoo, load_darktable_profiles
from visionflows.cameras.physics import POISSON_GAUSSIAN
from visionflows.cli.main import main
from visionflows.data.sensor import SensorSimulator
from visionflows.data.simulated import make_zoo_dataset
from visionflows.errors import DataError, InputError


@pytest.fixture(scope="module")
def profiles_file(shared_dir):
    return shared_dir / "data" / "noise_profiles" / "darktable_noiseprofiles.json"


@pytest.fixture(scope="module")
def zoo(profiles_file) -> CameraZoo:
    return load_darktable_profiles(profiles_file)


def _write(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _profile(iso, a=(2e-5, 1e-5, 3e-5), b=(1e-7, 2e-7, 3e-7), **extra):
    return {"name": f"x iso {iso}", "iso": iso, "a": list(a), "b": list(b), **extra}


def _doc(profiles, maker="Acme", model="Cam 1", version=0):
    return {"version": version, "noiseprofiles": [{"maker": maker, "models": [
        {"comment": "test", "model": model, "profiles": profiles}]}]}


def test_real_file_counts_and_values(zoo, profiles_file) -> None:
    raw = json.loads(profiles_file.read_text())
    assert len(zoo) == sum(len(m["models"]) for m in raw["noiseprofiles"]) == 374
    assert len(zoo.makers) == 18
    entries = sum(len(md["profiles"]) for m in raw["noiseprofiles"] for md in m["models"])
    skipped = sum(bool(p.get("skip")) for m in raw["noiseprofiles"] for md in m["models"] for p in md["profiles"])
    assert (entries, skipped) == (7045, 490)
    assert zoo.n_profiles == 6316  # skips dropped, repeated measurements at one ISO merged
    cam = zoo.camera("canon eos 5d mark iii")  # case-insensitive
    assert cam.name == "Canon EOS 5D Mark III" and 100 in cam.isos
    src = next(p for m in raw["noiseprofiles"] if m["maker"] == "Canon" for md in m["models"]
               if md["model"] == "EOS 5D Mark III" for p in md["profiles"] if p["iso"] == 800)
    assert cam.profile(800).a == tuple(src["a"]) and cam.profile(800).b == tuple(src["b"])
    assert zoo.camera("Canon PowerShot SX160 IS").maker == "Canon"  # model repeats the maker: not doubled
    assert zoo.camera("canon canon powershot sx160 is") is zoo.camera("Canon PowerShot SX160 IS")


def test_skip_and_repeated_measurements(tmp_path) -> None:
    doc = _doc([_profile(100, a=(1e-5, 2e-5, 3e-5)), _profile(100, a=(3e-5, 4e-5, 5e-5)),
                _profile(200), _profile(400, skip=True)])
    zoo = load_darktable_profiles(_write(tmp_path, doc))
    cam = zoo.camera("Acme Cam 1")
    assert cam.isos == (100, 200) and cam.skipped == 1
    p = cam.profile(100)
    assert p.measurements == 2 and p.a == pytest.approx((2e-5, 3e-5, 4e-5))


def test_mapping_into_packed_units() -> None:
    p = darktable.NoiseProfile("x", 100, (2e-5, 1e-5, -1e-6), (1e-7, -5e-8, 0.0))
    nlf = p.rgb_nlf(variance_scale=4.0, bits=14)
    dn2 = (1 / (16383 - 512)) ** 2
    assert nlf[0] == pytest.approx([8e-5, 4e-7])
    assert nlf[1] == pytest.approx([4e-5, dn2])  # negative b: floor of one DN² (here above one electron, K²)
    high_iso = darktable.NoiseProfile("x", 6400, (5e-4, 5e-4, 5e-4), (1e-9, -1e-9, 1e-6))
    assert high_iso.rgb_nlf()[:, 1] == pytest.approx([4e-6, 4e-6, 4e-6])  # at least one electron: K² = (2e-3)²
    assert nlf[2] == pytest.approx(nlf[1])  # an unfit channel (a <= 0) takes green's values
    packed = p.packed_nlf((0, 1, 2, 1))
    assert np.array_equal(packed[1], packed[3]) and packed[0][0] == pytest.approx(8e-5)
    assert p.rgb_nlf(variance_scale=8.0)[0][0] == pytest.approx(1.6e-4)
    with pytest.raises(InputError, match="variance_scale"):
        p.rgb_nlf(variance_scale=0.0)


def test_lookup_errors_name_the_nearest(zoo) -> None:
    with pytest.raises(InputError, match="nearest: Canon EOS 5D Mark III"):
        zoo.camera("Canon EOS 5D Mk III")
    with pytest.raises(InputError, match=r"ISO 900 \(nearest: 1000, 800"):
        zoo.profile("Canon EOS 5D Mark III", 900)
    with pytest.raises(InputError, match="nearest: Sony"):
        zoo.by_maker("Sonny")


@pytest.mark.parametrize("content, match", [
    ("{", "is not JSON"),
    ('{"version": 1, "noiseprofiles": []}', "version 1"),
    ('{"noiseprofiles": []}', "no 'version'"),
    ('{"version": 0, "noiseprofiles": {}}', "must be a list"),
    (json.dumps(_doc([_profile(100, a=(1e-5, 1e-5))])), "'a' must hold 3 numbers"),
    (json.dumps(_doc([{"name": "x", "iso": 100, "a": [1, 1, 1]}])), "needs 'name', 'iso', 'a' and 'b'"),
    (json.dumps(_doc([_profile(-5)])), "not a positive integer"),
    (json.dumps(_doc([_profile(100, b=(1e-7, "x", 1e-7))])), "finite number"),
    (json.dumps(_doc([_profile(100, a=(1e-5, -1e-5, 1e-5))])), "no usable camera"),
])
def test_bad_files_give_one_clear_error(tmp_path, content, match) -> None:
    with pytest.raises(DataError, match=match):
        load_darktable_profiles(_write(tmp_path, content))


def test_missing_file_and_default_path(tmp_path, monkeypatch) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_darktable_profiles(tmp_path / "nope.json")
    installed = _write(tmp_path, _doc([_profile(100)], maker="Installed"))
    monkeypatch.setattr(darktable, "INSTALLED_PATHS", (str(tmp_path / "absent.json"), str(installed)))
    assert darktable.default_profiles_path() == installed
    assert load_darktable_profiles().makers == ("Installed",)
    monkeypatch.setattr(darktable, "INSTALLED_PATHS", ())
    monkeypatch.setattr(darktable, "_checkout_copy", lambda: tmp_path / "none" / "x.json")
    with pytest.raises(DataError, match="no darktable noise profile file found"):
        load_darktable_profiles()


def test_zoo_simulator_variance_follows_the_mapped_profile(zoo) -> None:
    cam = zoo.camera("Sony ILCE-7M3")
    params = cam.sensor_params(3200)
    sim = SensorSimulator(params, POISSON_GAUSSIAN)
    rng = np.random.default_rng(0)
    for level in (0.02, 0.3):
        clean = np.full((16, 4, 32, 32), level)
        noise = sim.simulate(clean, rng).astype(np.float64) - clean
        expected = np.asarray(params.gain) * level + np.asarray(params.read_var)
        ratio = noise.var(axis=(0, 2, 3)) / expected
        assert np.all((ratio > 0.93) & (ratio < 1.07)), ratio
    assert params.gain[1] == params.gain[3] and params.gain[0] != params.gain[1]  # per colour, RGGB packing


def test_zoo_dataset(zoo) -> None:
    pairs = [("Canon EOS 5D Mark III", 800), ("Nikon D850", 3200)]
    d = make_zoo_dataset(zoo, pairs, 4, 2, seed=1, patches_per_side=2)
    tr, te = d["train"], d["test"]
    assert tr.clean.shape == (16, 4, 32, 32) and te.nlf.shape == (8, 4, 2)
    assert tr.camera_names == ("Canon EOS 5D Mark III", "Nikon D850")
    for i in range(len(tr)):
        cam = zoo.camera(tr.camera_names[int(tr.camera[i])])
        assert np.allclose(tr.nlf[i].numpy(), cam.sensor_params(int(tr.iso[i])).nlf())
    noisy = tr.clean + tr.noise
    assert noisy.min() >= 0 and noisy.max() <= 1  # default physics clips
    again = make_zoo_dataset(zoo, pairs, 4, 2, seed=1, patches_per_side=2)
    assert np.array_equal(again["train"].noise.numpy(), tr.noise.numpy())
    with pytest.raises(InputError, match="nearest"):
        make_zoo_dataset(zoo, [("Nikon D8500", 100)], 1, 1)
    with pytest.raises(InputError, match="ISO 123"):
        make_zoo_dataset(zoo, [("Nikon D850", 123)], 1, 1)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("visionflows: error:")
    return err


def test_cameras_command(profiles_file, capsys, tmp_path) -> None:
    assert main(["noise", "cameras", "--profiles", str(profiles_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# 374 cameras, 18 makers, 6316 (camera, ISO) profiles")
    assert len(out) == 375 and any(line.startswith("Canon EOS 5D Mark III ") for line in out)
    assert main(["noise", "cameras", "--profiles", str(profiles_file), "--maker", "fujifilm", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got["cameras"]) == 34 and {c["maker"] for c in got["cameras"]} == {"Fujifilm"}
    for args, match in ((["--maker", "Fuji"], "no maker 'Fuji'"), (["--profiles", str(tmp_path / "x.json")],
                                                                    "does not exist")):
        argv = ["noise", "cameras", "--profiles", str(profiles_file), *args]
        assert main(argv) == 2
        assert match in _err(capsys)
    bad = _write(tmp_path, "not json")
    assert main(["noise", "cameras", "--profiles", str(bad)]) == 2
    assert "is not JSON" in _err(capsys)


def test_simulate_command(profiles_file, tmp_path, capsys) -> None:
    clean = tmp_path / "clean.npy"
    np.save(clean, np.full((4, 16, 16), 0.2, np.float32))
    out = tmp_path / "noisy.npy"
    base = ["noise", "simulate", "--clean", str(clean), "--iso", "1600", "--out", str(out),
            "--profiles", str(profiles_file)]
    assert main([*base, "--camera", "Fujifilm X-T2", "--seed", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    a = np.load(out)
    assert info["camera"] == "Fujifilm X-T2" and a.shape == (4, 16, 16) and a.std() > 0
    assert main([*base, "--camera", "S6", "--physics", "poisson-gaussian"]) == 0
    assert json.loads(capsys.readouterr().out)["physics"] == "poisson-gaussian"
    assert main([*base, "--camera", "Fujifilm X-T22"]) == 2
    assert "nearest: Fujifilm X-T2" in _err(capsys)
    assert main([*base, "--camera", "Fujifilm X-T2", "--physics", "tukey,bogus"]) == 2
    assert "unknown sensor effect" in _err(capsys)
    assert main([*base[:5], "1234", *base[6:], "--camera", "Fujifilm X-T2"]) == 2
    assert "ISO 1234" in _err(capsys)


@pytest.mark.slow
def test_every_profile_simulates_samples_and_scores(zoo):
    """Every camera/ISO of the real profile file (6,316): the simulator with all sensor effects, the camera NLF
    and an (untrained) noiseflow_nlf sample finite noise and score it to a finite NLL."""
    import torch

    from visionflows import create_model
    from visionflows.cameras.physics import physics_from_names

    torch.manual_seed(0)
    flow, nlf_model = create_model("noiseflow_nlf").eval(), create_model("camera_nlf").eval()
    clean = torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    physics = physics_from_names("all")
    n = 0
    for cam in zoo:
        for iso in cam.isos:
            params = cam.sensor_params(iso)
            noisy = SensorSimulator(params, physics).simulate(clean[0].numpy(), np.random.default_rng(n))
            assert np.isfinite(noisy).all(), (cam.name, iso)
            nlf = torch.from_numpy(params.nlf())[None]
            with torch.no_grad():
                for model in (flow, nlf_model):
                    noise = model.sample(clean.float(), iso, 0, nlf=nlf, generator=torch.Generator().manual_seed(n))
                    nll = model.nll_per_dim(noise, clean.float(), iso, 0, nlf=nlf)
                    assert torch.isfinite(noise).all() and torch.isfinite(nll).all(), (cam.name, iso, model.kind)
            n += 1
    assert n == zoo.n_profiles == 6316
