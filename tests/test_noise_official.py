"""The port against the released checkpoint and the shared float64 test vectors (anchors README tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _require import missing
from visionflows.noise import NoiseFlow, load_official
from visionflows.noise.official import lower_from_vector, upper_from_vector


@pytest.fixture(scope="module")
def anchors(shared_dir):
    path = shared_dir / "anchors" / "noiseflow_official"
    if not (path / "test_vectors.npz").is_file():
        missing(f"the Noise Flow anchors ({path / 'test_vectors.npz'})", "restore ../shared/anchors/noiseflow_official")
    return path


@pytest.fixture(scope="module")
def vectors(anchors):
    with np.load(anchors / "test_vectors.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def model32(anchors):
    return load_official(anchors)


def _args(v, dtype=torch.float32, idx=slice(None)):
    return (torch.from_numpy(v["clean"][idx]).to(dtype), torch.from_numpy(v["iso"][idx]),
            torch.from_numpy(v["cam"][idx]))


def _close(actual, expected, rtol, atol, what):
    a = actual.detach().double().numpy()
    e = np.asarray(expected, dtype=np.float64)
    err = np.abs(a - e) - (atol + rtol * np.abs(e))
    assert err.max() <= 0, f"{what}: worst excess {err.max():.3g} (max abs err {np.abs(a - e).max():.3g})"


def test_nll_and_maps_match_vectors(model32, vectors):
    v = vectors
    clean, iso, cam = _args(v)
    noise = torch.from_numpy(v["noise"])
    with torch.no_grad():
        nll = model32.nll_per_dim(noise, clean, iso, cam)
        z, logdet = model32.encode(noise, clean, iso, cam)
        n = model32.decode(torch.from_numpy(v["z"]), clean, iso, cam)
    _close(nll, v["nll_per_dim"], 0, 1e-4, "nll_per_dim")
    _close(logdet / 4096, v["logdet"] / 4096, 0, 1e-4, "logdet")
    _close(z, v["latent_of_noise"], 1e-4, 1e-5, "latent_of_noise")
    _close(n, v["noise_of_latent"], 1e-5, 1e-6, "noise_of_latent")


def test_signal_dependent_layer_matches_vectors(model32, vectors):
    v = vectors
    clean, iso, cam = _args(v)
    sdn = model32.layer("sdn0")
    ctx = model32.context(clean, iso, cam)
    with torch.no_grad():
        s = sdn.scale(ctx)
        out, ld = sdn(torch.from_numpy(v["noise"]), ctx)
    _close(s, v["sdn_scale"], 1e-5, 1e-6, "sdn_scale")
    _close(out, v["sdn_out"], 1e-4, 1e-5, "sdn_out")
    _close(ld / 4096, v["sdn_logdet"] / 4096, 0, 1e-4, "sdn_logdet")


def test_traces_match_step_by_step(model32, vectors):
    v = vectors
    idx = np.flatnonzero(v["case"] == 0)
    clean, iso, cam = _args(v, idx=idx)
    names = list(v["trace_noise_to_latent_names"])
    assert names[1:] == model32.layer_names
    with torch.no_grad():
        states, logdets = model32.trace(torch.from_numpy(v["noise"][idx]), clean, iso, cam)
        inv_states = model32.trace_inverse(torch.from_numpy(v["z"][idx]), clean, iso, cam)
    for k, name in enumerate(names):
        _close(states[k], v["trace_noise_to_latent"][k], 1e-4, 1e-5, f"trace {name}")
        _close(logdets[k] / 4096, v["trace_logdet"][k] / 4096, 0, 1e-4, f"trace logdet {name}")
    inv_names = list(v["trace_latent_to_noise_names"])
    assert inv_names[1:] == [f"{n}_inv" for n in reversed(model32.layer_names)]
    for k, name in enumerate(inv_names):
        _close(inv_states[k], v["trace_latent_to_noise"][k], 1e-4, 1e-5, f"trace {name}")


def test_round_trips(model32, vectors):
    v = vectors
    clean, iso, cam = _args(v)
    noise, z = torch.from_numpy(v["noise"]), torch.from_numpy(v["z"])
    with torch.no_grad():
        n_back = model32.decode(model32.encode(noise, clean, iso, cam)[0], clean, iso, cam)
        z_back = model32.encode(model32.decode(z, clean, iso, cam), clean, iso, cam)[0]
    assert float((n_back - noise).abs().max()) <= 1e-5 * float(noise.abs().max())
    assert float((z_back - z).abs().max()) <= 1e-4


def test_float64_port_matches_within_1e10(anchors, vectors):
    v = vectors
    model = load_official(anchors, dtype=torch.float64)
    clean, iso, cam = _args(v, torch.float64)
    with torch.no_grad():
        nll = model.nll_per_dim(torch.from_numpy(v["noise"]).double(), clean, iso, cam)
        z = model.encode(torch.from_numpy(v["noise"]).double(), clean, iso, cam)[0]
    _close(nll, v["nll_per_dim"], 0, 1e-10, "float64 nll_per_dim")
    _close(z, v["latent_of_noise"], 2e-7, 1e-9, "float64 latent (float32 rounding of the stored values)")


def test_reversed_template_order_is_detected_and_reproducible(anchors, model32, vectors):
    v = vectors
    clean, iso, cam = _args(v)
    noise = torch.from_numpy(v["noise"])
    with torch.no_grad():
        nll = model32.nll_per_dim(noise, clean, iso, cam).double().numpy()
    assert np.all(np.abs(nll - v["nll_per_dim_wrapper"]) > 1.0), "port looks like the reversed (sampler) order"
    wrong = load_official(anchors, template_order="reversed")
    with torch.no_grad():
        nll_w = wrong.nll_per_dim(noise, clean, iso, cam)
        z_w = wrong.encode(noise, clean, iso, cam)[0]
    _close(nll_w, v["nll_per_dim_wrapper"], 1e-3, 1e-3, "reversed nll")
    _close(z_w, v["latent_of_noise_wrapper"], 1e-3, 1e-3, "reversed latent")
    assert np.all(np.abs(nll_w.double().numpy() - v["nll_per_dim"]) > 1.0)


def test_parameter_counts(model32):
    assert model32.num_parameters() == 2431
    assert model32.num_parameters(official=True) == 2433
    fresh = NoiseFlow()
    assert fresh.num_parameters() == 2431 and fresh.num_parameters(official=True) == 2433


def test_triangles_from_vectors():
    v = np.arange(1.0, 7.0)
    low, up = lower_from_vector(v), upper_from_vector(v)
    assert low[3].tolist() == [3, 2, 1, 0] and low[2, :2].tolist() == [6, 5] and low[1, 0] == 4
    assert up[0, 1:].tolist() == [1, 2, 3] and up[1, 2:].tolist() == [5, 6] and up[2, 3] == 4
    assert np.all(np.tril(up) == 0) and np.all(np.triu(low) == 0)


def test_released_values_and_eval_mode(model32):
    sdn = model32.layer("sdn0")
    assert abs(float(sdn.beta1.detach()) + 4.31796) < 1e-4
    assert abs(float(model32.layer("gain5").gain_val.detach()) - 1.069381) < 1e-5
    assert not model32.training
