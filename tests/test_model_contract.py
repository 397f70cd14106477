"""The model contract: every registered model passes the model harness; every invertible layer and every model
class of the package is covered (a new one without a case or a preset fails here)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import visionflows
from visionflows.errors import ConfigError
from visionflows.flows import Bijector, FlowModel
from visionflows.registry import list_kinds, model_info
from visionflows.testing import cases, check_model


def _package_classes(base: type) -> set[type]:
    found = set()
    for mod in pkgutil.walk_packages(visionflows.__path__, "visionflows."):
        if ".cli." in mod.name or mod.name.endswith((".__main__", ".cli")):
            continue
        module = importlib.import_module(mod.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, base) and obj.__module__ == module.__name__:
                found.add(obj)
    return found


@pytest.mark.parametrize("name", visionflows.list_models())
def test_every_registered_model_passes_the_harness(name: str) -> None:
    check_model(name)


def test_every_bijector_class_has_a_harness_case() -> None:
    covered: set[type] = set()
    for case in cases():
        covered.update(type(m) for m in case.make().modules())
    # a base class is exercised through its covered subclasses (e.g. the shared coupling machinery)
    bases = {c for c in _package_classes(Bijector) if any(k is not c and issubclass(k, c) for k in covered)}
    missing = sorted(c.__qualname__ for c in _package_classes(Bijector) - covered - bases - {Bijector})
    assert not missing, f"Bijector subclasses without a harness case: {missing}"


def test_every_flow_model_class_is_a_registered_file_kind() -> None:
    kinds = set(list_kinds())
    classes = _package_classes(FlowModel)
    registered = {c for c in classes if c.kind in kinds and "kind" in c.__dict__}
    # shared bases (NoiseModel, the Gaussian-baseline base, ...) are exercised through their registered subclasses
    bases = {c for c in classes if any(k is not c and issubclass(k, c) for k in registered)}
    unregistered = sorted(c.__qualname__ for c in classes - registered - bases)
    assert not unregistered, f"FlowModel subclasses that are no registered kind: {unregistered}"


def test_registry_api_and_errors() -> None:
    assert "noiseflow" in visionflows.list_models("noise*")
    assert visionflows.list_models("waveletflow_imagenet_*") == ["waveletflow_imagenet_32", "waveletflow_imagenet_64"]
    assert set(visionflows.list_models(family="glow")) == {"glow", "glow_cpu_32"}
    info = model_info("cpu_32", family="wavelet")  # family alias
    assert info.name == "waveletflow_cpu_32" and info.kind == "waveletflow" and info.density
    assert not model_info("dncnn_raw").density
    with pytest.raises(ConfigError, match="did you mean noiseflow"):
        visionflows.create_model("noiseflw")
    model = visionflows.create_model("noiseflow_s_g", width=8)
    assert isinstance(model, FlowModel) and model.width == 8


def test_save_and_load_through_the_top_level_api(tmp_path) -> None:
    model = visionflows.create_model("glow", resolution=8, levels=2, steps=1, width=4)
    x, _ = model.example_inputs(2)
    model.log_prob(x, generator=torch.Generator().manual_seed(0))  # DDI
    path = visionflows.save_model(model.eval(), tmp_path / "g.safetensors")
    again = visionflows.load_model(path)
    g = torch.Generator
    assert torch.equal(again.log_prob(x, generator=g().manual_seed(1)), model.log_prob(x, generator=g().manual_seed(1)))


def test_a_broken_family_is_an_error_naming_it(monkeypatch) -> None:
    import visionflows.registry as registry

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setitem(registry.BUILTIN_FAMILIES, "broken", "visionflows.no_such_family")
    with pytest.raises(ImportError, match="'broken'.*visionflows.no_such_family"):
        registry.list_models()


def test_unconditional_models_refuse_a_misplaced_context() -> None:
    model = visionflows.create_model("glow", resolution=8, levels=2, steps=1, width=4).eval()
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, 0.5)  # temperature passed positionally where the context goes
