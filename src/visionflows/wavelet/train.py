"""Independent per-level training of Wavelet Flow, finding the trained levels, and assembling them.

Each level ``L`` of Wavelet Flow (Yu, Derpanis & Brubaker, NeurIPS 2020) is an independent density, so each is
trained as its own job (:class:`WaveletLevelTask` for :func:`visionflows.training.train`) with its own run dir
``RUN/level_L``; :func:`train_all_levels` (from :mod:`visionflows.wavelet.parallel`) trains every level on
long-lived workers, :func:`find_level_runs` finds the level run dirs in any directory the commands write, and
:func:`assemble` joins the levels' checkpoints (each at whatever step) into one :class:`WaveletFlow`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import CheckpointError, ConfigError, InputError
from visionflows.wavelet.level import WaveletLevel
from visionflows.wavelet.model import WaveletFlow, n_levels_for
from visionflows.wavelet.presets import WaveletPreset, get_preset

__all__ = [
    "WaveletLevelTask",
    "assemble",
    "find_level_runs",
    "level_run_dir",
    "load_wavelet",
    "steps_summary",
    "train_all_levels",
    "train_level",
]


def level_run_dir(run_root: str | os.PathLike, level: int) -> Path:
    """``run_root/level_L``: where level ``L``'s job writes its run."""
    return Path(run_root) / f"level_{level}"


class WaveletLevelTask:
    """A :class:`~visionflows.training.TrainTask` for one level of a Wavelet Flow preset.

    Batches are random crops of side ``resolution / c_L`` (the preset's crop factor for the level, or ``crop``)
    of the training images at the full image scale, with left-right flips if the preset flips; the level
    block-averages them to ``I_L``. Dequantisation noise comes from a seed drawn from the batch generator, so
    batches are reproducible. Loss = the batch mean of the level's train bits/dim
    ``−log_prob_L/(dim_L·ln 2) + 8`` normalised by the actual (cropped) tensor dims; ``per_dim`` is that value.

    ``evaluate`` reports, on uncropped held-out images with fixed noise, the level's ``bpd`` and its
    ``contrib_bpd = (dim_L/N)·bpd`` (its share of the full model's bits/dim).
    """

    unit = "bits/dim"

    def __init__(
        self,
        preset: str | WaveletPreset,
        level: int,
        data: Any = None,
        batch_size: int | None = None,
        crop: int | None = None,
        flip: bool | None = None,
        eval_images: int = 64,
        **overrides: Any,
    ) -> None:
        from visionflows.data.images import ImagePool, open_images

        self.preset = get_preset(preset, **overrides)
        n = n_levels_for(self.preset.resolution, "preset resolution")
        if not 0 <= int(level) <= n:
            raise ConfigError(f"level {level} is outside 0..{n} for preset {self.preset.name}.",
                              f"use --level 0..{n} or all.")
        self.level, self.n_levels = int(level), n
        self.name = f"wavelet-level-{self.level}"
        self.crop = int(crop if crop is not None else self.preset.crops[self.level])
        side = self.preset.resolution // max(self.crop, 1)
        if self.crop < 1 or self.preset.resolution % self.crop or side // 2 ** (n - self.level) < (2 if level else 1):
            raise ConfigError(f"crop factor {self.crop} is too large for level {self.level} of {self.preset.name}.")
        self.crop_size = side
        self.flip = self.preset.flip if flip is None else bool(flip)
        self.batch_size = int(batch_size or self.preset.batch_size)
        if isinstance(data, ImagePool):
            self.pool = data
        elif isinstance(data, Tensor):
            self.pool = ImagePool(list(data), self.preset.resolution, "resize", source="tensor")
        else:
            self.pool = open_images(data, self.preset.resolution, self.preset.channels, "train")
        if self.pool.channels != self.preset.channels:
            raise InputError(
                f"the data has {self.pool.channels} channel(s) but preset {self.preset.name} models "
                f"{self.preset.channels}.", "convert the data or override the preset's channels.",
            )
        self.data_source = data.source if isinstance(data, ImagePool) else "tensor" if isinstance(data, Tensor) else (
            str(data))
        self.eval_count = int(eval_images)

    def build_model(self) -> WaveletLevel:
        p = self.preset
        return WaveletLevel(self.level, self.n_levels, p.channels, p.steps[self.level], p.widths[self.level],
                            p.res_blocks, preset=p.name)

    def config(self) -> dict[str, Any]:
        p = self.preset
        return {
            "preset": p.name,
            "resolution": p.resolution,
            "channels": p.channels,
            "level": self.level,
            "steps": p.steps[self.level],
            "width": p.widths[self.level],
            "crop": self.crop,
            "crop_size": self.crop_size,
            "flip": self.flip,
            "batch_size": self.batch_size,
            "data": self.data_source,
            "pool": repr(self.pool),
        }

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, int]:
        images = self.pool.crops(self.batch_size, self.crop_size, generator, self.flip)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return images, noise_seed

    def loss(self, model: nn.Module, batch: tuple[Tensor, int]) -> tuple[Tensor, dict[str, Any]]:
        images, seed = batch
        level: WaveletLevel = model
        device = next(model.parameters()).device
        bpd = level.bits_per_dim_level(images.to(device), torch.Generator().manual_seed(seed))
        loss = bpd.mean()
        return loss, {"per_dim": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        images = self.pool.eval_images[: self.eval_count]
        if len(images) == 0:
            return {}
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(1234)
        vals = [model.bits_per_dim_level(chunk.to(device), gen) for chunk in images.split(32)]
        bpd = float(torch.cat(vals).mean())
        dim = model.dims_for(images)
        return {"bpd": bpd, "contrib_bpd": bpd * dim / images[0].numel()}


def train_level(
    preset: str | WaveletPreset,
    level: int,
    run_dir: str | os.PathLike,
    data: Any = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    warmup_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    amp: str | None = None,
    compile: bool = False,
    num_threads: int | None = None,
    progress: bool = True,
    checkpoint_every: int | None = None,
    eval_every: int = 0,
    device: str = "auto",
    tensorboard: bool = True,
    max_minutes: float | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    **overrides: Any,
):
    """Train level ``level`` of ``preset`` into ``run_dir`` with Glow's Adamax and linear warm-up.

    Defaults come from the preset (batch, lr, warm-up); ``steps`` defaults to the preset's ``max_steps``. The
    seed is ``seed + level`` (as the official code). ``max_minutes`` stops (with a checkpoint) after that much
    wall time. ``train_overrides``: further :class:`~visionflows.training.TrainConfig` settings (e.g.
    ``grad_clip``, ``ema_decay``). Returns the trainer's ``TrainResult``.
    """
    import dataclasses

    from visionflows.training import TrainConfig, train

    task = WaveletLevelTask(preset, level, data, batch_size=batch_size, **overrides)
    p = task.preset
    n_steps = int(steps if steps is not None else p.max_steps)
    config = TrainConfig(
        steps=n_steps,
        batch_size=task.batch_size,
        lr=float(lr if lr is not None else p.lr),
        optimizer="adamax_glow",
        warmup_steps=int(warmup_steps if warmup_steps is not None else p.warmup_steps),
        amp=amp,
        compile=compile,
        seed=int(seed) + task.level,
        checkpoint_every=int(checkpoint_every or max(1, min(1000, n_steps))),
        eval_every=int(eval_every),
        num_threads=num_threads,
        progress=progress,
        device=device,
        tensorboard=tensorboard,
        max_minutes=max_minutes,
    )
    if train_overrides:
        config = dataclasses.replace(config, **train_overrides)
    return train(task, config, run_dir, resume=resume, overwrite=overwrite)


def load_wavelet(path: str | os.PathLike) -> WaveletFlow | WaveletLevel:
    """Load a ``waveletflow`` or ``waveletflow_level`` model file (or run/checkpoint dir) without other kinds."""
    from visionflows.io import read_model_file

    meta, state = read_model_file(path)
    kind = meta.get("kind")
    builders = {"waveletflow": WaveletFlow, "waveletflow_level": WaveletLevel}
    if kind not in builders:
        raise CheckpointError(f"{path} holds a {kind!r} model, not a Wavelet Flow.", "pass a Wavelet Flow model file.")
    try:
        model = builders[kind](**json.loads(meta["config"]))
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path} does not match a {kind} model: {str(err).splitlines()[0]}") from err
    model.file_metadata = meta
    model.eval()
    return model


def _level_file(path: Path) -> Path:
    """A checkpoint file, checkpoint dir or run dir → its (newest) ``model.safetensors``."""
    from visionflows.training import find_checkpoints

    if path.is_file():
        return path
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    ckpts = find_checkpoints(path)
    if ckpts:
        return ckpts[-1] / "model.safetensors"
    raise CheckpointError(f"no checkpoint found in {path}.", "train the level first (visionflows wavelet train).")


#: folders :func:`find_level_runs` searches for ``level_L`` run dirs, relative to the path it is given, in order:
#: a run root (``wavelet train --run-dir``), a folder holding ``levels/`` (a root that keeps its levels there),
#: and the demo's run dir (``visionflows demo`` writes ``RUN/wavelet/levels/level_L``)
LEVEL_LAYOUTS = (".", "levels", "wavelet", "wavelet/levels")


def _level_dirs(folder: Path) -> dict[int, Path]:
    found = {}
    if folder.is_dir():
        for d in folder.glob("level_*"):
            suffix = d.name[len("level_") :]
            if d.is_dir() and suffix.isdigit():
                found[int(suffix)] = d
    return dict(sorted(found.items()))


def _single_level(path: Path) -> int | None:
    """The level of one level's run dir, checkpoint dir or model file; ``None`` if ``path`` is none of those."""
    try:
        cfg = json.loads((path / "config.json").read_text())
        if str(cfg.get("task_name", "")).startswith("wavelet-level-"):
            return int(cfg["task"]["level"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if not (path.is_file() or (path / "model.safetensors").is_file() or (path / "checkpoints").is_dir()):
        return None
    try:
        model = load_wavelet(_level_file(path))
    except CheckpointError:
        return None
    if not isinstance(model, WaveletLevel):
        raise CheckpointError(f"{path} holds a full Wavelet Flow, not the levels of a run.",
                              "pass it with --model (or to load_wavelet) instead of --run-dir.")
    return model.level


def find_level_runs(path: str | os.PathLike) -> dict[int, Path]:
    """``{level: run dir}`` for any directory the Wavelet Flow commands write.

    Accepts a run root with ``level_L`` dirs (``wavelet train --run-dir``), a folder with ``levels/level_L``, the
    demo's run dir (``RUN/wavelet/levels/level_L``), its ``RUN/wavelet``, and one level's own run dir, checkpoint
    dir or model file (``{L: path}``); see :data:`LEVEL_LAYOUTS`. Levels need not have checkpoints yet.
    Raises one :class:`CheckpointError` listing every place it looked.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"run directory {root} does not exist.", "pass the --run-dir used for training.")
    if root.is_dir():
        for sub in LEVEL_LAYOUTS:
            found = _level_dirs(root / sub)
            if found:
                return found
    level = _single_level(root)
    if level is not None:
        return {level: root}
    looked = ", ".join(str(root / sub / "level_<L>") for sub in LEVEL_LAYOUTS)
    raise CheckpointError(
        f"no Wavelet Flow levels in {root}: looked for {looked}, and for one level's run dir "
        f"({root / 'config.json'} of a level, {root / 'checkpoints' / 'step-*'} or {root / 'model.safetensors'}).",
        "pass a wavelet run root (--run-dir of `wavelet train`), its levels/ folder, one level's run dir, or the "
        "run dir of `visionflows demo`.",
    )


def assemble(
    source: str | os.PathLike | Mapping[int, str | os.PathLike],
    require: Sequence[int] | None = None,
    preset: str | None = None,
) -> WaveletFlow:
    """Join independently trained level checkpoints into one :class:`WaveletFlow`.

    ``source``: any directory :func:`find_level_runs` accepts (newest checkpoint of each level), or
    ``{level: path}`` with a model file, checkpoint dir or run dir per level. ``require``: levels that must be
    present (default all); other missing levels stay untrained and are marked ``"untrained"`` in
    ``model.level_sources`` (using them raises :class:`CheckpointError`). ``model.level_sources[L]`` says which
    file and step each level came from.
    """
    if isinstance(source, Mapping):
        found = {int(lv): Path(path) for lv, path in source.items()}
        root_desc = "the given checkpoints"
    else:
        found = find_level_runs(source)
        root_desc = str(Path(source))
    levels: dict[int, WaveletLevel] = {}
    sources: dict[int, str] = {}
    for lv in sorted(found):
        try:
            file = _level_file(found[lv])
        except CheckpointError:
            continue
        model = load_wavelet(file)
        if not isinstance(model, WaveletLevel):
            raise CheckpointError(f"{file} holds a full Wavelet Flow, not one level; pass it as a model file.")
        if model.level != lv:
            raise CheckpointError(f"{file} holds level {model.level}, but was given as level {lv}.")
        levels[lv] = model
        step = getattr(model, "file_metadata", {}).get("step", "?")
        sources[lv] = f"{file} (step {step})"
    if not levels:
        raise CheckpointError(f"no level checkpoints found in {root_desc}.", "train the levels first.")
    ref = next(iter(levels.values()))
    n, channels, res_blocks = ref.n_levels, ref.channels, ref.res_blocks
    for lv, m in levels.items():
        if (m.n_levels, m.channels, m.res_blocks) != (n, channels, res_blocks):
            raise CheckpointError(
                f"level {lv} ({sources[lv]}) was trained for n={m.n_levels}, C={m.channels}, but level "
                f"{ref.level} for n={n}, C={channels}; the levels do not belong to one model.",
            )
    need = list(range(n + 1)) if require is None else [int(v) for v in require]
    missing = [lv for lv in need if lv not in levels]
    if missing:
        where = {p.parent for p in found.values() if p.name.startswith("level_")}
        expected = (
            ", ".join(str(level_run_dir(next(iter(where)), lv)) for lv in missing)
            if len(where) == 1 and not isinstance(source, Mapping) else "a checkpoint per level"
        )
        raise CheckpointError(
            f"missing checkpoint for level(s) {missing} in {root_desc} (expected {expected}).",
            f"train them with: visionflows wavelet train --preset NAME --level {missing[0]} --run-dir ...",
        )
    pname = preset or ref.preset
    base: WaveletPreset | None = None
    if pname is not None:
        try:
            base = get_preset(pname)
        except ConfigError:
            base = None
    steps = [levels[lv].steps if lv in levels else (base.steps[lv] if base else 1) for lv in range(n + 1)]
    widths = [levels[lv].width if lv in levels else (base.widths[lv] if base else 8) for lv in range(n + 1)]
    crops = list(base.crops) if base is not None and len(base.crops) == n + 1 else 1
    model = WaveletFlow(2**n, channels, steps, widths, crops, res_blocks, flip=bool(base and base.flip), name=pname)
    for lv, m in levels.items():
        model.levels[lv].load_state_dict(m.state_dict())
    model.level_sources = {lv: sources.get(lv, "untrained") for lv in range(n + 1)}
    model.eval()
    return model


def steps_summary(model: WaveletFlow) -> str:
    """One line per level: where its weights came from."""
    return "\n".join(f"level {lv}: {src}" for lv, src in sorted(model.level_sources.items()))


from visionflows.wavelet.parallel import train_all_levels  # noqa: E402  (re-export; parallel imports us lazily)
