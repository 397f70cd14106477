"""Named Wavelet Flow configurations: the paper's datasets (official configs, doc §4) and small CPU presets.

The official values (steps, widths, crops, flips, batch 64, lr 1e-3, 125k warm-up, 3 residual blocks) are from
the released configs of Yu, Derpanis & Brubaker (NeurIPS 2020). ``cpu_32`` / ``cpu_64`` are small models that train
usefully in minutes on two CPU cores; ``tiny_8`` is for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from visionflows.errors import ConfigError

__all__ = ["PRESETS", "WaveletPreset", "create_model", "get_preset", "list_models", "register_preset"]


@dataclass(frozen=True)
class WaveletPreset:
    """A model + training configuration. Per-level lists have ``n + 1`` entries (levels 0..n)."""

    name: str
    resolution: int
    steps: tuple[int, ...]
    widths: tuple[int, ...]
    crops: tuple[int, ...]
    channels: int = 3
    flip: bool = False
    res_blocks: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 125_000
    max_steps: int = 5_000_000
    reference_params_m: float | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "channels": self.channels,
            "steps": list(self.steps),
            "widths": list(self.widths),
            "crops": list(self.crops),
            "res_blocks": self.res_blocks,
            "flip": self.flip,
            "name": self.name,
        }

    def with_overrides(self, **overrides: Any) -> WaveletPreset:
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise ConfigError(f"unknown Wavelet Flow preset field(s) {bad}.", f"valid fields: {sorted(names)}.")
        n_entries = int(overrides.get("resolution", self.resolution)).bit_length()  # log2(res) + 1
        for k in ("steps", "widths", "crops"):
            if k in overrides and isinstance(overrides[k], int):
                overrides[k] = (overrides[k],) * n_entries
            if k in overrides:
                overrides[k] = tuple(int(v) for v in overrides[k])
        return dataclasses.replace(self, **overrides)

    def param_count(self) -> int:
        """Total parameters from the layer formula (doc §3), without building the model."""
        from visionflows.wavelet.level import level_param_count

        return sum(
            level_param_count(lv, self.channels, k, w, self.res_blocks)
            for lv, (k, w) in enumerate(zip(self.steps, self.widths))
        )


PRESETS: dict[str, WaveletPreset] = {}


def register_preset(preset: WaveletPreset) -> WaveletPreset:
    PRESETS[preset.name] = preset
    return preset


def _official(name: str, res: int, steps, widths, crops, flip: bool, ref: float, desc: str) -> None:
    register_preset(
        WaveletPreset(name, res, tuple(steps), tuple(widths), tuple(crops), flip=flip, reference_params_m=ref,
                      description=desc)
    )


_official("imagenet_32", 32, [8, 8, 16, 16, 16, 16], [128] * 5 + [256], [1] * 5 + [2], False, 64.2,
          "ImageNet 32×32 (official config)")
_official("imagenet_64", 64, [8, 8] + [16] * 5, [128] * 5 + [256, 256], [1] * 5 + [2, 2], False, 96.1,
          "ImageNet 64×64 (official config)")
for _scene in ("bedroom", "tower", "church"):
    _official(f"lsun_{_scene}_64", 64, [8, 8] + [16] * 5, [16, 64, 64, 64, 64, 128, 256], [1] * 5 + [2, 2], True,
              47.4, f"LSUN {_scene} 64×64 (official config)")
for _ds in ("celeba", "ffhq"):
    _official(f"{_ds}_1024", 1024, [8, 8] + [16] * 9, [64, 64, 64] + [128] * 8, [1] * 6 + [2, 2, 4, 8, 16], True,
              68.9, f"{_ds.upper()} 1024×1024 (official config)")

register_preset(
    WaveletPreset(
        "cpu_32", 32, (4, 4, 4, 6, 6, 6), (16, 16, 24, 32, 48, 48), (1, 1, 1, 1, 1, 2), flip=True, batch_size=32,
        warmup_steps=100, max_steps=20_000, description="small 32×32 model that trains in minutes on 2 CPU cores",
    )
)
register_preset(
    WaveletPreset(
        "cpu_64", 64, (4, 4, 4, 4, 6, 6, 6), (16, 16, 24, 32, 32, 48, 48), (1, 1, 1, 1, 1, 2, 2), flip=True,
        batch_size=32, warmup_steps=100, max_steps=20_000,
        description="small 64×64 model that trains in minutes on 2 CPU cores",
    )
)
register_preset(
    WaveletPreset(
        "tiny_8", 8, (2, 2, 2, 2), (8, 8, 8, 8), (1, 1, 1, 2), batch_size=8, warmup_steps=5, max_steps=1000,
        description="a minute 8×8 model for tests",
    )
)


def list_models() -> list[str]:
    """Names of the Wavelet Flow presets (registered globally as ``waveletflow_<name>``)."""
    return sorted(PRESETS)


def get_preset(name: str | WaveletPreset, **overrides: Any) -> WaveletPreset:
    """The preset ``name`` (with ``overrides`` of its fields); :class:`ConfigError` for an unknown name."""
    if isinstance(name, WaveletPreset):
        preset = name
    else:
        if name not in PRESETS:
            raise ConfigError(f"unknown Wavelet Flow preset {name!r}.", f"choose one of {list_models()}.")
        preset = PRESETS[name]
    return preset.with_overrides(**overrides) if overrides else preset


def create_model(name: str | WaveletPreset, **overrides: Any):
    """Build the :class:`~visionflows.wavelet.WaveletFlow` of preset ``name`` (``overrides``: preset fields)."""
    from visionflows.wavelet.model import WaveletFlow

    return WaveletFlow(**get_preset(name, **overrides).model_kwargs())


def _register_in_registry(preset: WaveletPreset) -> None:
    from visionflows.registry import HarnessSpec, register_model
    from visionflows.wavelet.model import WaveletFlow

    name = preset.name

    def fn(**overrides: Any) -> WaveletFlow:
        return create_model(name, **overrides)

    fn.__doc__ = preset.description or f"Wavelet Flow preset {name}"
    fn.__qualname__ = fn.__name__ = f"waveletflow_{name}"
    fn.__annotations__ = {"return": WaveletFlow}
    if preset.resolution > 64:  # 11 levels of 1024² images: too large for CI even at reduced width
        small = {"widths": 2, "steps": 1, "res_blocks": 1}
        harness = HarnessSpec(overrides=small, construct_only=True, param_count=preset.param_count(),
                              reduced_param_count=preset.with_overrides(**small).param_count(),
                              reason="1024×1024 images: built at width 2, 1 step; full size by formula")
    elif preset.param_count() > 2_000_000:
        harness = HarnessSpec(overrides={"widths": 4, "steps": 1, "res_blocks": 1},
                              reason="official size: checked at width 4, 1 step")
    else:
        harness = HarnessSpec()
    register_model(f"waveletflow_{name}", family="wavelet", aliases=(name,), harness=harness)(fn)


def register_all() -> None:
    """Register every preset of :data:`PRESETS` in :mod:`visionflows.registry` (done on import of the package)."""
    for preset in PRESETS.values():
        _register_in_registry(preset)
