"""The Python API's counterpart of ``test_robustness.py``: bad input to the public model API is ONE clear exception
(an :class:`~visionflows.errors.InputError` / :class:`~visionflows.errors.CheckpointError` / ... naming the problem
and the fix), never a deep PyTorch error (``mat1 and mat2 shapes``, ``index out of range``, ``Input type (double)
and bias type (float)``), an ``AttributeError`` of a missing check, or a silently NaN / wrong result."""

from __future__ import annotations

import pytest
import torch

import visionflows
from visionflows.errors import InputError
from visionflows.noise import NoiseContext


def _glow():
    return visionflows.create_model("glow", resolution=8, levels=2, steps=1, width=4).eval()


def _noise_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 4, 8, 8, generator=g) * 0.9 + 0.05
    return torch.randn(batch, 4, 8, 8, generator=g) * 0.02, clean


def _raises(fn, match: str, exc: type[Exception] = InputError, fix: bool = True) -> None:
    with pytest.raises(exc, match=match) as info:
        fn()
    if fix:
        assert "Fix:" in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------------ sampling args
@pytest.mark.parametrize("n", [0, -1, 2.5, "3", True])
def test_sample_counts_must_be_positive_integers(n) -> None:
    _raises(lambda: _glow().sample(n), "num_samples must be an integer ≥ 1")


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf"), 1e30, "a"])
def test_sample_temperature_is_checked(t) -> None:
    _raises(lambda: _glow().sample(2, temperature=t), "temperature")


def test_sample_generator_must_be_a_generator() -> None:
    _raises(lambda: _glow().sample(2, generator="seed"), "generator must be a torch.Generator")


def test_sample_count_as_a_numpy_or_tensor_integer_still_works() -> None:
    import numpy as np

    model = _glow()
    assert model.sample(np.int64(2)).shape == (2, 3, 8, 8)
    assert model.sample(torch.tensor(3)).shape == (3, 3, 8, 8)


# ------------------------------------------------------------------------------------------------ encode / decode
def test_encode_refuses_what_is_not_continuous_finite_data() -> None:
    model = _glow()
    x = torch.rand(2, 3, 8, 8) - 0.5
    _raises(lambda: model.encode(x.numpy()), "must be a torch.Tensor")
    _raises(lambda: model.encode((x * 255).to(torch.uint8)), "floating-point.*preprocess")
    _raises(lambda: model.encode(x[:0]), "no samples")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    _raises(lambda: model.encode(bad), "1 NaN/Inf")


def test_decode_checks_the_latent_shape_and_values() -> None:
    model = _glow()
    z, _ = model.encode(torch.rand(2, 3, 8, 8) - 0.5)
    _raises(lambda: model.decode(torch.cat([z, z[:, :1]], 1)), r"decode expects latents of shape \(2, 192\)")
    _raises(lambda: model.decode(z * float("nan")), "NaN/Inf")


def test_float64_data_on_a_float32_level_is_scored_in_float32() -> None:
    level = visionflows.create_model("waveletflow_level").eval()
    x, low = level.example_inputs(2)
    assert torch.equal(level.log_prob(x.double(), low), level.log_prob(x, low))


# ------------------------------------------------------------------------------------------------ noise models
@pytest.mark.parametrize("name", ["noiseflow", "camera_nlf", "gaussian_noise", "heteroscedastic_noise"])
def test_noise_models_refuse_bad_noise_and_missing_conditioning(name) -> None:
    model = visionflows.create_model(name).eval()
    noise, clean = _noise_inputs()
    _raises(lambda: model.log_prob(noise, clean, None, "S6"), "iso is missing")
    _raises(lambda: model.log_prob(noise, clean, 800, None), "camera is missing")
    _raises(lambda: model.sample(clean), "iso is missing")
    _raises(lambda: model.log_prob(noise.to(torch.uint8), clean, 800, "S6"), "noise must be floating point")
    ctx = NoiseContext.create(clean, 800, "S6")
    _raises(lambda: model.log_prob(noise.to(torch.uint8), ctx), "noise must be floating point")
    _raises(lambda: model.log_prob(noise * float("nan"), ctx), "noise contains 512 NaN/Inf")
    _raises(lambda: model.log_prob(noise[:0], clean[:0], 800, "S6"), "no pixels")
    _raises(lambda: model.log_prob(noise, ctx, 800, "S6"), "together with a NoiseContext")
    _raises(lambda: model.log_prob(noise, clean, 800, "S6", nlf=torch.full((2, 5), 1e-4)), r"must be \[2, 2\]")
    _raises(lambda: model.sample(ctx, temperature=-1.0), "temperature must be ≥ 0")


def test_a_noise_context_from_the_plain_constructor_is_rechecked() -> None:
    model = visionflows.create_model("noiseflow").eval()
    noise, clean = _noise_inputs()
    iso, cam = torch.tensor([800, 800]), torch.tensor([2, 2])
    _raises(lambda: model.log_prob(noise, NoiseContext(clean, iso, torch.tensor([-1, -1]))), "camera index -1")
    _raises(lambda: model.log_prob(noise, NoiseContext(clean, iso[:1], cam)), r"context.iso must be .*\[2\]")
    _raises(lambda: model.log_prob(noise, NoiseContext(clean, iso, cam.float())), "context.camera must be")
    _raises(lambda: model.log_prob(noise, NoiseContext(clean * 5, iso, cam)), r"lie in \[0, 1\]")
    _raises(lambda: model.log_prob(noise, NoiseContext(clean * float("nan"), iso, cam)), "NaN/Inf")
    assert torch.isfinite(model.log_prob(noise, NoiseContext(clean, iso, cam))).all()


# ------------------------------------------------------------------------------------------------ sRGB models
def _srgb_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(0)
    return 3.0 * torch.randn(batch, 3, 8, 8, generator=g), torch.rand(batch, 3, 8, 8, generator=g)


def test_srgb_flow_takes_float64_and_float16_clean_images() -> None:
    from visionflows.noise.srgb import SRGBNoiseFlow

    model = SRGBNoiseFlow(cameras=["a"], isos=[100]).eval()
    noise, clean = _srgb_inputs()
    ref = model.log_prob(noise, clean, 100, "a")
    torch.testing.assert_close(model.log_prob(noise, clean.double(), 100, "a"), ref)
    assert torch.isfinite(model.log_prob(noise, clean.half(), 100, "a")).all()
    assert torch.isfinite(model.log_prob(noise, model.context(clean.double(), 100, "a"))).all()


@pytest.mark.parametrize("name", ["srgb_noiseflow", "srgb_gaussian", "srgb_heteroscedastic"])
def test_srgb_models_refuse_bad_iso_noise_and_contexts(name) -> None:
    from visionflows.noise.srgb import SRGBContext

    model = visionflows.create_model(name).eval()
    noise, clean = _srgb_inputs()
    _raises(lambda: model.log_prob(noise, clean, "abc", "a"), "ISO 'abc' is not a whole number")
    _raises(lambda: model.log_prob(noise, clean, 2.5, "a"), "ISO 2.5")
    _raises(lambda: model.log_prob(noise.to(torch.int16), clean, 100, "a"), "dequantize_noise")
    _raises(lambda: model.log_prob(noise[:0], clean[:0], 100, "a"), "no pixels")
    _raises(lambda: model.sample(clean, 100, "a", temperature=float("nan")), "temperature must be finite")
    n_iso, n_cam = model.n_iso, model.n_cam
    zeros = torch.zeros(2, dtype=torch.long)
    _raises(lambda: model.log_prob(noise, SRGBContext(clean, zeros + 99, zeros, n_iso, n_cam)), "iso_idx holds 99")
    _raises(lambda: model.log_prob(noise, SRGBContext(clean, zeros, zeros, n_iso + 5, n_cam)), "vocabulary")
    _raises(lambda: model.log_prob(noise, SRGBContext(clean, zeros[:1], zeros, n_iso, n_cam)), r"\[2\]")
    _raises(lambda: model.log_prob(noise, SRGBContext(clean, zeros.float(), zeros, n_iso, n_cam)), "integer")
    _raises(lambda: model.log_prob(noise, SRGBContext(clean * float("nan"), zeros, zeros, n_iso, n_cam)), "NaN")
    _raises(lambda: model.log_prob(noise, model.context(clean, 100, "a"), 100, "a"), "together with an SRGBContext")


@pytest.mark.parametrize("kwargs", [{"variance": -1.0}, {"variance": float("nan")}, {"variance": 0}])
def test_srgb_gaussian_variance_must_be_positive(kwargs) -> None:
    _raises(lambda: visionflows.create_model("srgb_gaussian", **kwargs), "variance must be a finite number > 0")


def test_srgb_heteroscedastic_parameters_must_be_finite() -> None:
    _raises(lambda: visionflows.create_model("srgb_heteroscedastic", a=[0.0, float("nan"), 0.0]), "3 finite")
    _raises(lambda: visionflows.create_model("srgb_heteroscedastic", b=[1.0]), "3 finite")
    _raises(lambda: visionflows.create_model("srgb_heteroscedastic", min_variance=0.0), "min_variance")


# ------------------------------------------------------------------------------------------------ Wavelet Flow
@pytest.fixture(scope="module")
def tiny_wavelet():
    return visionflows.create_model("waveletflow_tiny_8").eval()


def test_wavelet_empty_batches_are_input_errors(tiny_wavelet) -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    _raises(lambda: tiny_wavelet.log_prob(images[:0]), r"hold no pixels \(shape \(0, 3, 8, 8\)\)")
    _raises(lambda: tiny_wavelet.bits_per_dim(images[:0]), "hold no pixels")
    _raises(lambda: tiny_wavelet.super_resolve(images[:0, :, :2, :2], 2), "hold no pixels")


def test_wavelet_sample_counts_and_resolution_are_checked(tiny_wavelet) -> None:
    _raises(lambda: tiny_wavelet.sample(0), "num_samples must be an integer ≥ 1")  # was: silently 1 sample
    _raises(lambda: tiny_wavelet.sample(2.5), "num_samples")
    _raises(lambda: tiny_wavelet.sample_pyramid(-2), "n must be an integer ≥ 1")
    _raises(lambda: tiny_wavelet.sample_pyramid(2, "a"), "resolution must be an int")
    _raises(lambda: tiny_wavelet.sample(2, temperature=11.0), "above 10")
    _raises(lambda: tiny_wavelet.super_resolve(torch.zeros(1, 3, 8, 8), 2), "already 8×8")
    assert tiny_wavelet.sample(2, temperature=0.5).shape == (2, 3, 8, 8)


def test_wavelet_encode_and_decode_check_their_input(tiny_wavelet) -> None:
    _raises(lambda: tiny_wavelet.encode(torch.zeros(2, 3, 8, 8).numpy()), "must be a torch.Tensor")
    _raises(lambda: tiny_wavelet.encode(torch.full((2, 3, 8, 8), float("nan"))), "NaN/Inf")
    z, _ = tiny_wavelet.encode(torch.zeros(2, 3, 8, 8))
    _raises(lambda: tiny_wavelet.decode(torch.cat([z, z[:, :1]], 1)), r"latents of shape \(2, 192\)")


def test_wavelet_level_checks_data_context_and_sizes(tiny_wavelet) -> None:
    level = tiny_wavelet.levels[2]
    x, low = level.example_inputs(2)
    _raises(lambda: level.log_prob(x, "low"), "needs cond I_1")
    _raises(lambda: level.log_prob(x, low * float("nan")), "context I_1 contains")
    _raises(lambda: level.log_prob(x.numpy(), low), "must be a torch.Tensor")
    _raises(lambda: level.log_prob(x * float("nan"), low), "NaN/Inf")
    _raises(lambda: level.sample(low.to(torch.uint8)), "floating-point")
    _raises(lambda: level.sample(low[:0]), "no samples")
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    _raises(lambda: level.log_prob_level(images.numpy()), "must be a .B, C, H, W. tensor")
    _raises(lambda: level.log_prob_level(images.float() * 10), r"must be in \[0, 255\]")
    _raises(lambda: level.log_prob_level(images.float() * float("nan")), "NaN/Inf")
    _raises(lambda: tiny_wavelet.levels[0].sample(0), "num_samples must be an integer ≥ 1")  # was: 1 sample


@pytest.mark.parametrize("kwargs", [{"channels": 0}, {"width": -1}, {"steps": -1}, {"level": 1.5}])
def test_wavelet_level_configuration_is_checked(kwargs) -> None:
    _raises(lambda: visionflows.create_model("waveletflow_level", **kwargs), "must be an integer ≥")


def test_wavelet_flow_widths_must_be_positive() -> None:
    _raises(lambda: visionflows.create_model("waveletflow_tiny_8", widths=0), "width must be an integer ≥ 1")


# ------------------------------------------------------------------------------------------------ Glow
def test_glow_checks_pixels_like_wavelet_flow() -> None:
    model = _glow()
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    _raises(lambda: model.log_prob(images.float() * 10), r"must be in \[0, 255\]")  # was: scored silently
    _raises(lambda: model.log_prob(images.numpy()), "must be a .B, C, H, W. tensor")  # was: AttributeError
    _raises(lambda: model.log_prob(images[:0]), "hold no pixels")  # was: 'ActNorm expects 12 channels'
    _raises(lambda: model.log_prob(images.long() + 300), "8-bit values 0..255")
    g = torch.Generator
    assert torch.equal(model.log_prob(images.long(), generator=g().manual_seed(0)),
                       model.log_prob(images, generator=g().manual_seed(0)))  # integer pixels in range still work
    _raises(lambda: model.encode(torch.zeros(2, 3, 4, 4)), "encode expects dequantised images")


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"steps": -1}, {"resolution": -8, "levels": 1},
                                    {"resolution": "32"}, {"channels": 0, "resolution": 8, "levels": 1}])
def test_glow_configuration_is_checked(kwargs) -> None:
    _raises(lambda: visionflows.create_model("glow", **kwargs), "Glow .* must be an integer ≥")


# ------------------------------------------------------------------------------------------------ DnCNN
def test_dncnn_denoise_and_forward_check_their_input() -> None:
    from visionflows.denoise.dncnn import DnCNN

    model = DnCNN(depth=3, width=4).eval()
    x = torch.rand(2, 4, 8, 8)
    _raises(lambda: model.denoise(x.numpy()), "must be a torch.Tensor")
    _raises(lambda: model.denoise((x * 255).to(torch.uint8)), "divide|/ 255")  # was: silently scored as 0..255
    _raises(lambda: model.denoise(x * 255), r"\[0, 1\] units")
    _raises(lambda: model.denoise(x[..., :0, :0]), "no pixels")  # was: 'Kernel size can't be greater'
    _raises(lambda: model(x.double()), "float64 but the denoiser's weights are torch.float32")
    _raises(lambda: model.predict_noise(x.numpy()), "must be a torch.Tensor")
    torch.testing.assert_close(model.denoise(x.double()), model.denoise(x))  # converted to the weights' dtype


# ------------------------------------------------------------------------------------------------ model files
def _file_with_meta(path, model, **meta):
    import json

    from safetensors.torch import save

    from visionflows.io.files import clean_state_dict

    state = {k: v.clone() for k, v in clean_state_dict(model.state_dict()).items()}
    full = {"format": "visionflows", "format_version": "1", "kind": model.kind,
            "config": json.dumps(model.model_config()), **meta}
    path.write_bytes(save(state, metadata=full))
    return path


def test_load_model_explains_plain_state_dicts_and_bad_metadata(tmp_path) -> None:
    from visionflows.errors import CheckpointError

    model = _glow()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    _raises(lambda: visionflows.load_model(tmp_path / "plain.pt"), "torch.save / pickle file", CheckpointError)
    bad = _file_with_meta(tmp_path / "v.safetensors", model, format_version="abc")
    _raises(lambda: visionflows.load_model(bad), "invalid format_version 'abc'", CheckpointError)
    other = _file_with_meta(tmp_path / "w.safetensors", model, config='{"channels": 3, "resolution": 8, "levels": 2, '
                                                                     '"steps": 1, "width": 8}')
    _raises(lambda: visionflows.load_model(other), "12 tensor.s. of another shape", CheckpointError)
    zero = _file_with_meta(tmp_path / "z.safetensors", model, config='{"levels": 0}')
    with pytest.raises(CheckpointError) as info:
        visionflows.load_model(zero)
    assert str(info.value).count("Fix:") == 1, str(info.value)


def test_load_model_refuses_nan_weights_unless_asked(tmp_path) -> None:
    from visionflows.errors import CheckpointError

    model = _glow()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    path = visionflows.save_model(model, tmp_path / "nan.safetensors")
    _raises(lambda: visionflows.load_model(path), "NaN/Inf weights in 1 parameter", CheckpointError)
    assert not torch.isfinite(next(visionflows.load_model(path, check_finite=False).parameters())).all()


def test_load_model_checks_map_location(tmp_path) -> None:
    from visionflows.errors import ConfigError

    path = visionflows.save_model(_glow(), tmp_path / "g.safetensors")
    _raises(lambda: visionflows.load_model(path, map_location="bogus"), "map_location 'bogus' is not a device",
            ConfigError)
    if not torch.cuda.is_available():
        _raises(lambda: visionflows.load_model(path, map_location="cuda"), "map_location cuda needs a CUDA GPU",
                ConfigError)


def test_save_model_with_a_too_long_name_is_an_output_error(tmp_path) -> None:
    from visionflows.errors import OutputError

    _raises(lambda: visionflows.save_model(_glow(), tmp_path / ("n" * 300 + ".safetensors")), "too long",
            OutputError)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ registry, configs
@pytest.mark.parametrize("call", [lambda: visionflows.create_model(3), lambda: visionflows.model_info(None),
                                  lambda: visionflows.list_models(3), lambda: visionflows.list_models(family=1)])
def test_registry_names_must_be_strings(call) -> None:
    from visionflows.errors import ConfigError

    _raises(call, "must be a string", ConfigError)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": -3}, {"width": 2.5}, {"channels": 0}, {"num_cameras": 0},
                                    {"arch": 3}])
def test_noise_flow_configuration_is_checked(kwargs) -> None:
    from visionflows.errors import ConfigError

    _raises(lambda: visionflows.create_model("noiseflow", **kwargs), "Noise Flow", ConfigError)


# ------------------------------------------------------------------------------------------------ data helpers
def test_image_helpers_check_counts_sizes_and_types() -> None:
    import numpy as np

    from visionflows.data.bayer import pack_raw, unpack_raw
    from visionflows.data.image_files import center_square
    from visionflows.data.image_pool import open_images

    pool = open_images("builtin", 8)
    _raises(lambda: pool.crops(0, 8), "n must be an integer ≥ 1")  # was: 'stack expects a non-empty TensorList'
    _raises(lambda: pool.crops(-1, 8), "n must be an integer ≥ 1")
    _raises(lambda: pool.crops(2, 0), "size must be an integer ≥ 1")  # was: silently [2, 3, 0, 0]
    _raises(lambda: open_images("builtin", 0), "resolution must be an integer ≥ 1")
    image = torch.zeros(3, 10, 12, dtype=torch.uint8)
    _raises(lambda: center_square(image, 0), "resolution must be an integer ≥ 1")
    _raises(lambda: center_square(image.numpy(), 4), r"one uint8 image tensor \[C, H, W\]")
    _raises(lambda: pack_raw([[0.0, 1.0], [0.0, 1.0]]), "numpy array or a torch.Tensor")
    _raises(lambda: unpack_raw([[0.0]]), "numpy array or a torch.Tensor")
    assert pack_raw(np.zeros((4, 4), np.float32)).shape == (4, 2, 2)


# ------------------------------------------------------------------------------------------------ metrics, helpers
def test_marginal_kl_refuses_empty_or_nan_noise() -> None:
    import numpy as np

    from visionflows.noise import marginal_kl

    good = np.linspace(-0.05, 0.05, 64)
    _raises(lambda: marginal_kl(np.full(64, np.nan), good), "real noise contains 64 NaN/Inf")  # was: KL 0.0
    _raises(lambda: marginal_kl(good, np.zeros(0)), "model noise is empty")  # was: KL 0.0
    assert marginal_kl(good, good) == 0.0


def test_evaluate_noise_models_refuses_a_model_of_another_kind() -> None:
    from visionflows.noise import evaluate_noise_models
    from visionflows.noise.simulator import make_simulated_dataset

    test = make_simulated_dataset(1, 1, seed=0)["test"]
    _raises(lambda: evaluate_noise_models({"dn": visionflows.create_model("dncnn_raw")}, test),
            "'dn' .DnCNN. is not a raw noise model")  # was: AttributeError 'nll_per_dim'


def test_srgb_helpers_refuse_arrays_and_bad_vocabularies() -> None:
    import numpy as np

    from visionflows.noise.srgb import SRGBNoiseFlow, dequantize_noise, quantize_noisy

    u8 = np.zeros((1, 3, 4, 4), np.uint8)
    _raises(lambda: dequantize_noise(u8, u8), "noisy must be a torch.Tensor")  # was: AttributeError
    _raises(lambda: quantize_noisy(u8, np.zeros((1, 3, 4, 4))), "clean must be a torch.Tensor")
    _raises(lambda: SRGBNoiseFlow(isos=["abc"]), "ISO 'abc'")  # was: 'invalid literal for int()'


def test_a_model_file_whose_header_length_looks_like_a_pickle_still_loads(tmp_path) -> None:
    model = _glow()
    for k in range(256):  # pad the metadata until the header length's low byte is 0x80 (a pickle's first byte)
        path = visionflows.save_model(model, tmp_path / "g.safetensors", extra={"pad": "x" * k})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert type(visionflows.load_model(path)) is type(model)


@pytest.mark.parametrize("name", ["glow", "waveletflow_tiny_8"])
def test_image_models_check_the_dequantisation_generator(name) -> None:
    model = _glow() if name == "glow" else visionflows.create_model(name).eval()
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    _raises(lambda: model.log_prob(images, generator="seed"), "generator must be a torch.Generator")


def test_noise_baselines_and_adaptation_check_their_settings() -> None:
    from visionflows.errors import ConfigError
    from visionflows.noise import GaussianNoise
    from visionflows.noise.adapt import adapt_camera
    from visionflows.noise.srgb import SRGBGaussianNoise, SRGBHeteroscedasticNoise

    _raises(lambda: GaussianNoise(variance=-1.0), "variance must be a finite number > 0")  # was: NaN NLLs
    _raises(lambda: GaussianNoise(variance=float("nan")), "variance must be a finite number > 0")
    _raises(lambda: SRGBGaussianNoise.fit(torch.zeros(0)), "at least 2 noise values")
    _raises(lambda: SRGBHeteroscedasticNoise.fit(torch.zeros(2, 3, 4, 4), torch.rand(2, 3, 5, 5)), "differ in shape")
    noise, clean = _noise_inputs(4)
    model = visionflows.create_model("noiseflow")
    _raises(lambda: adapt_camera(model, "new", noise, clean, 100, steps=-1), "steps must be an integer", ConfigError)
    _raises(lambda: adapt_camera(model, "new", noise, clean, 100, lr=float("nan")), "lr must be", ConfigError)
    _raises(lambda: adapt_camera(model, "new", noise.numpy(), clean, 100), "must be tensors")


def test_saved_camera_nlf_passes_the_cli_model_check(tmp_path):
    """The camera NLF table marks missing (camera, ISO) pairs with NaN: a saved one is a valid model file, while a
    NaN in a tensor without that meaning is still refused."""
    from visionflows import create_model
    from visionflows.errors import CheckpointError
    from visionflows.io import save_model
    from visionflows.validation import check_model_file

    nlf = create_model("camera_nlf")
    assert torch.isnan(nlf.table).any()
    save_model(nlf, tmp_path / "nlf.safetensors")
    assert check_model_file(tmp_path / "nlf.safetensors", "--model")["kind"] == "camera_nlf"
    gauss = create_model("gaussian_noise")
    with torch.no_grad():
        gauss.variance.fill_(float("nan"))
    save_model(gauss, tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        check_model_file(tmp_path / "g.safetensors", "--model")


@pytest.mark.parametrize("name", ["noiseflow", "glow", "waveletflow_level", "camera_nlf", "dncnn_raw"])
def test_create_model_unknown_override_lists_the_accepted_ones(name):
    from visionflows.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown override 'bogus'.*it takes: \w+"):
        visionflows.create_model(name, bogus=1)


def test_camera_nlf_takes_any_iso_with_measured_parameters():
    """A zoo camera's profile fixes the noise at any ISO (e.g. 200 or 6400, which SIDD lacks); without measured
    parameters the SIDD table answers, and a pair it lacks is refused naming the pairs it has."""
    from visionflows.errors import InputError

    nlf_model = visionflows.create_model("camera_nlf").eval()
    clean = torch.rand(2, 4, 8, 8)
    nlf = torch.tensor([[[2e-4, 1e-6]] * 4] * 2, dtype=torch.float64)
    for iso in (200, 6400):
        noise = nlf_model.sample(clean, iso, 0, nlf=nlf, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(noise).all() and noise.std() > 0
    with pytest.raises(InputError, match="no entry for camera S6 at ISO 200.*S6/100"):
        nlf_model.nll_per_dim(torch.zeros_like(clean), clean, 200, "S6")
