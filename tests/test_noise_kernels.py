"""The native Noise Flow kernels (visionflows.kernels, noise.fused) against the plain PyTorch path: values, log-dets,
gradients and BatchNorm statistics to float32 rounding, on random models and odd sizes; and the fallbacks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from _require import needs_kernels, require_kernels
from visionflows import kernels
from visionflows.noise import NoiseFlow, create_model
from visionflows.noise.fused import NoiseFlowTransform, fast_path_reason, kernel_library


def _random_model(arch: str = "noiseflow", seed: int = 0, width: int = 4, **kw) -> NoiseFlow:
    """A model away from its initialisation (every parameter and BatchNorm statistic matters)."""
    model = NoiseFlow(arch=create_model(arch).arch if "|" not in arch else arch, width=width, seed=seed, **kw)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model


def _inputs(model: NoiseFlow, batch: int, h: int, w: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 4, h, w, generator=gen) * 0.9 + 0.05
    noise = 0.05 * torch.randn(batch, 4, h, w, generator=gen)
    iso = [(100, 800, 1600, 3200, 400)[i % 5] for i in range(batch)]
    cam = [(2, 0, 3, 1, 4)[i % 5] for i in range(batch)]
    _, ex = model.example_inputs(batch, gen, size=h)
    ctx = model.context(clean, iso, cam, noise=noise, nlf=ex.nlf)
    return noise, ctx


def _plain(model: NoiseFlow) -> NoiseFlow:
    ref = copy.deepcopy(model)
    ref.transform.use_kernels = False
    return ref


def _close(actual, expected, what, rtol=2e-5, atol=1e-5):
    assert actual.shape == expected.shape, what
    if expected.numel() == 0:
        return
    scale = float(expected.abs().max())
    err = float((actual - expected).abs().max())
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def test_kernel_builds_where_a_compiler_exists():
    require_kernels()  # no compiler: the plain path is used (see the no-compiler test)
    assert kernel_library() is not None, kernels.build_error("noiseflow")


def test_model_uses_the_fused_transform():
    model = create_model("noiseflow")
    assert isinstance(model.transform, NoiseFlowTransform)
    noise, ctx = _inputs(model, 2, 8, 8)
    assert fast_path_reason(model.transform, noise.double(), ctx.to(torch.float64)) is not None  # float64: plain
    model.transform.use_kernels = False
    assert fast_path_reason(model.transform, noise, ctx) == "use_kernels is False"


@needs_kernels
@pytest.mark.parametrize(("arch", "width", "batch", "h", "w", "threads"), [
    ("noiseflow", 4, 3, 13, 21, 1),
    ("noiseflow", 4, 5, 32, 32, 2),
    ("noiseflow", 4, 1, 9, 35, 2),       # one sample on two threads: the rows are split between them
    ("noiseflow", 8, 2, 7, 17, 2),
    ("noiseflow", 4, 2, 1, 1, 1),
    ("noiseflow_nlf", 4, 3, 11, 6, 2),
    ("noiseflow_s_g", 4, 2, 5, 5, 1),
    ("noiseflow_unconditional", 4, 4, 16, 3, 2),
])
def test_eval_matches_plain_path(arch, width, batch, h, w, threads):
    model = _random_model(arch, width=width).eval()
    ref = _plain(model)
    noise, ctx = _inputs(model, batch, h, w)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert model.transform.fast_path(noise, ctx), fast_path_reason(model.transform, noise, ctx)
        with torch.no_grad():
            z, ld = model.transform(noise, ctx)
            z0, ld0 = ref.transform(noise, ctx)
            x, ldi = model.transform.inverse(z0, ctx)
            x0, ldi0 = ref.transform.inverse(z0, ctx)
            lp, lp0 = model.log_prob(noise, ctx), ref.log_prob(noise, ctx)
    finally:
        torch.set_num_threads(old)
    _close(z, z0, "latent")
    _close(x, x0, "inverse")
    ldscale = 4 * h * w * 1e-6 + 1e-4  # float32 sums of H·W·4 terms
    _close(ld, ld0, "log-det", rtol=1e-6, atol=ldscale)
    _close(ldi, ldi0, "inverse log-det", rtol=1e-6, atol=ldscale)
    _close(lp, lp0, "log_prob", rtol=1e-6, atol=ldscale)


@needs_kernels
def test_sampling_matches_plain_path():
    model = _random_model().eval()
    ref = _plain(model)
    _, ctx = _inputs(model, 4, 20, 24)
    a = model.sample(ctx, generator=torch.Generator().manual_seed(3), temperature=0.7)
    b = ref.sample(ctx, generator=torch.Generator().manual_seed(3), temperature=0.7)
    _close(a, b, "samples", atol=1e-6)


@needs_kernels
@pytest.mark.parametrize(("arch", "width", "batch", "h", "w"), [
    ("noiseflow", 4, 6, 11, 19),
    ("noiseflow", 8, 3, 16, 16),
    ("noiseflow_nlf", 4, 2, 5, 33),
])
def test_training_matches_plain_path(arch, width, batch, h, w):
    model = _random_model(arch, width=width).train()
    ref = _plain(model)
    noise, ctx = _inputs(model, batch, h, w)
    noise.requires_grad_(True)
    noise_ref = noise.detach().clone().requires_grad_(True)
    assert model.transform.fast_path(noise, ctx)
    weights = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    outs = []
    for m, x in ((model, noise), (ref, noise_ref)):
        z, ld = m.transform(x, ctx)
        lp = m.prior.log_prob(z) + ld
        (lp.sum() + (z * weights).sum()).backward()
        outs.append((z.detach(), ld.detach()))
    _close(outs[0][0], outs[1][0], "latent")
    _close(outs[0][1], outs[1][1], "log-det", rtol=1e-6, atol=4 * h * w * 1e-6)
    _close(noise.grad, noise_ref.grad, "input gradient", rtol=1e-4)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert p.grad is not None, name
        if name.endswith(("l_1.bias", "l_2.bias")):  # cancelled by batch-statistics BN: both are rounding noise
            assert float(p.grad.abs().max()) <= 1e-3 * float(q.grad.abs().max()) + 1e-2, name
            continue
        _close(p.grad, q.grad, f"gradient of {name}", rtol=1e-4, atol=1e-5)
    for (name, b), c in zip(model.named_buffers(), ref.buffers()):
        if b.is_floating_point():
            _close(b, c, f"buffer {name}", rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(b, c), name


@needs_kernels
def test_training_log_prob_gradients_match_plain_path():
    model = _random_model().train()
    ref = _plain(model)
    noise, ctx = _inputs(model, 4, 12, 10)
    lp, lp0 = model.log_prob(noise, ctx), ref.log_prob(noise, ctx)
    _close(lp.detach(), lp0.detach(), "log_prob", rtol=1e-6, atol=1e-3)
    (-lp.mean()).backward()
    (-lp0.mean()).backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if not name.endswith(("l_1.bias", "l_2.bias")):
            _close(p.grad, q.grad, f"gradient of {name}", rtol=1e-4, atol=1e-6)


@needs_kernels
def test_training_without_grad_updates_batchnorm_statistics():
    model = _random_model().train()
    ref = _plain(model)
    noise, ctx = _inputs(model, 3, 8, 8)
    with torch.no_grad():
        for _ in range(2):
            _close(model.transform(noise, ctx)[0], ref.transform(noise, ctx)[0], "latent")
    bn = model.layer("coupling_1").net.bn_2
    assert int(bn.num_batches_tracked) == 2
    _close(bn.running_var, ref.layer("coupling_1").net.bn_2.running_var, "running_var", rtol=1e-5)


@needs_kernels
def test_eval_with_autograd_same_values_and_plain_gradients():
    model = _random_model().eval()
    ref = _plain(model)
    noise, ctx = _inputs(model, 3, 9, 10)
    with torch.no_grad():
        z_ng, ld_ng = model.transform(noise, ctx)
    x = noise.clone().requires_grad_(True)
    z, ld = model.transform(x, ctx)
    assert torch.equal(z.detach(), z_ng) and torch.equal(ld.detach(), ld_ng)
    (z.square().sum() + ld.sum()).backward()
    x0 = noise.clone().requires_grad_(True)
    z0, ld0 = ref.transform(x0, ctx)
    (z0.square().sum() + ld0.sum()).backward()
    torch.testing.assert_close(x.grad, x0.grad)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@needs_kernels
def test_parameter_updates_invalidate_the_eval_cache():
    model = _random_model().eval()
    noise, ctx = _inputs(model, 2, 8, 8)
    with torch.no_grad():
        model.transform(noise, ctx)
        model.layer("coupling_3").net.l_last.conv.bias.add_(0.5)
        model.layer("conv1x1_2").lower.add_(0.1)
        z, _ = model.transform(noise, ctx)
        z0, _ = _plain(model).transform(noise, ctx)
    _close(z, z0, "latent after an in-place update")


@needs_kernels
def test_torch_func_transforms_take_the_plain_path():
    model = _random_model("noiseflow_s_ax1_g_ax1").eval()
    noise, ctx = _inputs(model, 1, 3, 3)
    ctx1 = ctx[:1]

    def f(v):
        return model.transform(v.view(1, 4, 3, 3), ctx1)[0].reshape(-1)

    jac = torch.func.jacrev(f)(noise.reshape(-1))
    ref = torch.autograd.functional.jacobian(f, noise.reshape(-1))
    torch.testing.assert_close(jac, ref)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


_FALLBACK = """
    import torch
    from visionflows import kernels
    from visionflows.noise import create_model
    from visionflows.noise.fused import fast_path_reason
    m = create_model("noiseflow").eval()
    clean = torch.rand(2, 4, 8, 8)
    noise = 0.02 * torch.randn(2, 4, 8, 8)
    ctx = m.context(clean, 800, "S6")
    print(kernels.load("noiseflow") is None, fast_path_reason(m.transform, noise, ctx))
    with torch.no_grad():
        print(bool(torch.isfinite(m.log_prob(noise, ctx)).all()), tuple(m.sample(ctx).shape))
    m.train()
    m(noise, ctx).sum().backward()
    print("trained")
"""


@pytest.mark.slow
def test_without_a_compiler_the_plain_path_is_used(tmp_path):
    out = _run(_FALLBACK, {"PATH": str(tmp_path), "CXX": "", "VISIONFLOWS_KERNEL_CACHE": str(tmp_path / "cache"),
                           "VISIONFLOWS_KERNELS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("True kernels unavailable (RuntimeError: no C++ compiler"), lines
    assert lines[1:] == ["True (2, 4, 8, 8)", "trained"]


@pytest.mark.slow
def test_kernels_can_be_disabled_by_environment():
    out = _run(_FALLBACK, {"VISIONFLOWS_KERNELS": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "True kernels unavailable (disabled)"


def test_kernel_source_ships_with_the_package():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    line = re.search(r"^visionflows\s*=\s*\[(.*)\]", section, re.M)
    assert line, "pyproject.toml: [tool.setuptools.package-data] has no visionflows entry"
    patterns = re.findall(r'"([^"]+)"', line.group(1))
    src = root / "src" / "visionflows"
    shipped = {p for pat in patterns for p in src.glob(pat)}
    for name in ("noiseflow", "winograd", "pointwise", "optim", "srgb"):
        assert src / "kernels" / f"{name}.cpp" in shipped
    for header in (src / "kernels").glob("*.h"):  # included by the sources
        assert header in shipped, header
