"""``visionflows noise cameras | simulate | adapt | render``: the camera zoo, few-frame adaptation, raw → sRGB.

A skin over :mod:`visionflows.cameras.darktable` (the profile file), :mod:`visionflows.data.sensor` (the
simulator), :mod:`visionflows.data.adaptation`, :mod:`visionflows.noise.adapt` and
:mod:`visionflows.data.render`. :func:`register_zoo` adds the actions to the ``noise`` sub-command (called by
:mod:`visionflows.cli.noise`).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch

from visionflows.errors import InputError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    check_input_file,
    check_output_file,
    number_arg,
)

__all__ = ["register_zoo", "add_profiles_arg", "load_zoo", "add_zoo_data_args", "zoo_datasets"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return v


def add_profiles_arg(p: argparse.ArgumentParser) -> None:
    """``--profiles PATH`` (default: an installed darktable's noiseprofiles.json, else the checkout's copy)."""
    p.add_argument("--profiles", default=None, metavar="PATH",
                   help="darktable noiseprofiles.json (default: an installed darktable's copy, e.g. "
                        "/usr/share/darktable/noiseprofiles.json, else ../shared's copy next to a checkout)")


def load_zoo(args: argparse.Namespace):
    """The :class:`~visionflows.cameras.darktable.CameraZoo` of ``--profiles`` (checked before reading)."""
    from visionflows.cameras.darktable import load_darktable_profiles

    if args.profiles is not None:
        check_input_file(args.profiles, "--profiles", "darktable noise profile file",
                         fix="pass darktable's noiseprofiles.json, e.g. /usr/share/darktable/noiseprofiles.json.")
    return load_darktable_profiles(args.profiles)


def register_zoo(s: argparse._SubParsersAction) -> None:
    """Add ``cameras`` and ``simulate`` to the ``noise`` actions ``s``."""
    c = s.add_parser("cameras", help="list the cameras and ISOs of a darktable noise profile file")
    add_profiles_arg(c)
    c.add_argument("--maker", default=None, help="only this maker (case-insensitive)")
    c.add_argument("--json", action="store_true", help="print JSON (camera, maker, model, isos) instead of a table")
    c.set_defaults(func=_cameras)

    m = s.add_parser("simulate", help="add simulated sensor noise of any zoo camera (or SIDD phone) to clean raw")
    m.add_argument("--clean", required=True, help="clean packed raw .npy [4,H,W] or [B,4,H,W], or a SIDD GT .MAT")
    m.add_argument("--camera", required=True, help="a camera of the profile file (see `noise cameras`) or a SIDD "
                   "code IP, GP, S6, N6, G4")
    m.add_argument("--iso", required=True, type=_INT1)
    m.add_argument("--out", required=True, help="output file (same format as --clean)")
    add_profiles_arg(m)
    m.add_argument("--physics", default="sidd",
                   help="sensor effects: 'sidd' (default: row noise, PRNU, quantisation, clipping), "
                        "'poisson-gaussian', 'all', or a comma list of tukey,row,fpn,quantise,black-offset,clip")
    m.add_argument("--variance-scale", type=_positive_float, default=None,
                   help="per-pixel variance / darktable's Haar-detail variance (default 4; see docs)")
    m.add_argument("--bits", type=_INT1, default=None, help="assumed bit depth of a zoo camera (default 14)")
    m.add_argument("--seed", type=_INT0, default=0)
    m.set_defaults(func=_simulate)

    a = s.add_parser("adapt", help="add a new camera to a Noise Flow from a few noisy/clean pairs or dark+flat frames")
    a.add_argument("--model", required=True, help="a Noise Flow model file, run dir or the official checkpoint "
                   "folder (released architecture: a new camera column; noiseflow_nlf: measured parameters)")
    a.add_argument("--data", required=True, help="folder of NAME_noisy.npy + NAME_clean.npy pairs and/or "
                   "dark_*.npy + flat_*.npy frames (packed raw [4,H,W], normalised), or DNG files")
    a.add_argument("--camera", required=True, help="name of the new camera")
    a.add_argument("--out", required=True, help="the adapted model file (.safetensors)")
    a.add_argument("--iso", type=_INT1, default=None,
                   help="ISO of the frames (required for the released architecture unless the data are DNGs)")
    a.add_argument("--steps", type=_INT1, default=150, help="optimiser steps on the camera's parameters")
    a.add_argument("--lr", type=_positive_float, default=0.05)
    a.add_argument("--patch", type=_INT1, default=32, help="patch side (packed pixels)")
    a.add_argument("--seed", type=_INT0, default=0)
    a.set_defaults(func=_adapt)

    r = s.add_parser("render", help="render raw (packed .npy / SIDD .MAT / DNG) clean, noisy or synthesised "
                     "images to sRGB PNGs")
    r.add_argument("inputs", nargs="+", help="packed raw .npy [4,H,W] / [B,4,H,W], SIDD .MAT, or raw files (DNG)")
    r.add_argument("--out", required=True, help="PNG file (one image) or folder (several)")
    r.add_argument("--camera", default=None, help="for .npy/.MAT: a SIDD code (IP, GP, S6, N6, G4: their CFA, "
                   "white balance and colour matrix) or a zoo camera (RGGB, generic colour); raw files use "
                   "their own metadata")
    add_profiles_arg(r)
    r.add_argument("--reference", default=None, help="image whose auto gain all inputs share (e.g. the clean "
                   "one; default: the first input)")
    r.add_argument("--gain", type=_positive_float, default=None, help="fixed exposure gain instead of auto")
    r.set_defaults(func=_render)


def add_zoo_data_args(p: argparse.ArgumentParser) -> None:
    """``--zoo-cameras`` … : simulated camera-zoo data instead of the SIDD simulator (``noise train``, ``noise
    eval``)."""
    g = p.add_argument_group("camera-zoo data (instead of the SIDD simulator)")
    g.add_argument("--zoo-cameras", default=None, metavar="LIST",
                   help="zoo cameras to simulate: names separated by commas, 'maker:NAME', 'format:NAME' "
                        "(full-frame, aps-c, four-thirds, 1-inch, small, ...) or 'all'")
    g.add_argument("--zoo-isos", default="800,3200", help="ISOs (each camera contributes those it has)")
    g.add_argument("--zoo-physics", default="sidd", help="sensor effects, as `noise simulate --physics`")
    g.add_argument("--zoo-profiles", "--profiles", dest="zoo_profiles", default=None, metavar="PATH",
                   help="darktable noiseprofiles.json (default: an installed darktable's, else ../shared's)")


def zoo_datasets(args: argparse.Namespace):
    """(train, test, description) of ``--zoo-cameras`` (train/test sizes and seed from the ``--sim-*`` flags)."""
    from visionflows.cameras.formats import sensor_format
    from visionflows.cameras.physics import physics_from_names
    from visionflows.data.simulated import make_zoo_dataset

    zoo = load_zoo(argparse.Namespace(profiles=args.zoo_profiles))
    spec = args.zoo_cameras.strip()
    if spec.lower() == "all":
        cams = list(zoo)
    elif spec.lower().startswith("maker:"):
        cams = zoo.by_maker(spec.split(":", 1)[1])
    elif spec.lower().startswith("format:"):
        fmt = spec.split(":", 1)[1].strip().lower()
        cams = [c for c in zoo if sensor_format(c.maker, c.model) == fmt]
        if not cams:
            from visionflows.cameras.formats import SENSOR_FORMATS

            raise InputError(f"no zoo camera has sensor format {fmt!r}.", f"use one of {', '.join(SENSOR_FORMATS)}.")
    else:
        cams = [zoo.camera(n) for n in spec.split(",") if n.strip()]
    try:
        isos = [int(i) for i in args.zoo_isos.split(",") if i.strip()]
    except ValueError:
        raise InputError(f"--zoo-isos {args.zoo_isos!r} is not a comma list of integers.", "e.g. 800,3200.") from None
    pairs = [(c.name, i) for c in cams for i in isos if i in c.isos]
    if not pairs:
        raise InputError(f"none of the {len(cams)} cameras has any of ISO {isos}.",
                         "choose ISOs the cameras have (`visionflows noise cameras`).")
    physics = physics_from_names(args.zoo_physics)
    d = make_zoo_dataset(zoo, pairs, args.sim_train_images, args.sim_test_images, physics=physics,
                         seed=args.sim_seed)
    desc = (f"camera zoo {spec} ({len({n for n, _ in pairs})} cameras, {len(pairs)} camera/ISO pairs), "
            f"{physics.describe()}, train={args.sim_train_images} test={args.sim_test_images} seed={args.sim_seed}")
    return d["train"], d["test"], desc


def _adapt(args: argparse.Namespace) -> int:
    from visionflows.cli.noise import load_noise_model
    from visionflows.data.adaptation import adaptation_patches, load_adaptation_folder
    from visionflows.errors import ConfigError
    from visionflows.io import save_model
    from visionflows.noise.adapt import adapt_camera
    from visionflows.noise.model import NoiseFlow
    from visionflows.validation import check_input_dir

    check_output_file(args.out, "--out", suffixes=[".safetensors"])
    check_input_dir(args.data, "--data", "adaptation data folder")
    model = load_noise_model(args.model)
    if not isinstance(model, NoiseFlow):
        raise ConfigError(f"{args.model} holds a {getattr(model, 'kind', '?')} model; only a Noise Flow has "
                          "camera-specific parameters to adapt.", "pass a Noise Flow model file or run dir.")
    data = load_adaptation_folder(args.data)
    iso = args.iso if args.iso is not None else data.iso
    if iso is None:
        if not model.continuous_iso:
            raise InputError("the frames' ISO is not known.", "pass --iso N (the ISO the frames were taken at).")
        iso = 100
    patches = adaptation_patches(data.pairs, args.patch)
    new, info = adapt_camera(model, args.camera, patches["noise"], patches["clean"], iso, steps=args.steps,
                             lr=args.lr, seed=args.seed)
    path = save_model(new, args.out, extra={"adapted_camera": json.dumps({**info, "iso": iso, "data": data.kind,
                                                                          "pairs": len(data)})})
    print(json.dumps({"out": str(path), **info, "iso": iso, "data": data.kind, "pairs": len(data),
                      "patches": int(patches["noise"].shape[0]), "cameras": list(new.camera_names)}))
    return 0


#: how far outside [0, 1] `noise render` accepts packed raw values: noisy frames without clipping (`noise simulate
#: --physics poisson-gaussian`) stray past the range by their noise, un-normalised DN values (64..1023) do not
RENDER_MARGIN = 0.5


def _render_sources(path: str, args: argparse.Namespace) -> list[tuple[str, object, object, object, object]]:
    """[(name, mosaic, colour map, neutral, colour matrix)] of one input file."""
    from visionflows.cameras import CAMERAS
    from visionflows.cameras.specs import CAMERA_SPECS
    from visionflows.data.dng import RAW_EXTENSIONS, read_raw
    from visionflows.data.raw_files import read_packed_raw
    from visionflows.data.render import unpack_packed
    from visionflows.noise.context import check_raw_values

    p = Path(path)
    if p.suffix.lower() in RAW_EXTENSIONS:
        from visionflows.cameras.specs import GENERIC_AS_SHOT_NEUTRAL, GENERIC_COLOR_MATRIX

        f = read_raw(p)
        cmap = np.tile(np.asarray(f.cfa).reshape(2, 2), (f.bayer.shape[0] // 2, f.bayer.shape[1] // 2))
        neutral = f.as_shot_neutral if f.as_shot_neutral is not None else GENERIC_AS_SHOT_NEUTRAL
        cm = f.color_matrix if f.color_matrix is not None else GENERIC_COLOR_MATRIX
        return [(p.stem, f.bayer.astype(np.float64), cmap, neutral, cm)]
    if args.camera is None:
        raise InputError(f"{p} is packed raw without metadata.", "pass --camera (a SIDD code or a zoo camera).")
    if args.camera.strip().upper() in CAMERAS:
        spec = CAMERA_SPECS[args.camera.strip().upper()]
    else:
        spec = load_zoo(args).camera(args.camera).spec()
    check_input_file(p, "input", "packed raw file")
    arr, _, batched = read_packed_raw(p)
    check_raw_values(arr, str(p), "raw", margin=RENDER_MARGIN)
    out = []
    for i, packed in enumerate(arr.numpy()):
        mosaic, cmap = unpack_packed(np.clip(packed, 0.0, 1.0), spec.packed_colors, transposed=True)
        out.append((f"{p.stem}_{i}" if batched else p.stem, mosaic, cmap, spec.as_shot_neutral, spec.color_matrix))
    return out


#: file extensions of images: an --out ending in one names a file, not the folder several images need
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def _check_render_out(out: Path, n: int) -> None:
    """``--out`` of several images: a folder that can be created or written (checked before any rendering)."""
    from visionflows.errors import OutputError
    from visionflows.validation import check_output_dir

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, but there are {n} images to write.",
                          "give a folder for several images.")
    if not out.is_dir() and out.suffix.lower() in _IMAGE_SUFFIXES:
        raise OutputError(f"--out {out} names a {out.suffix[1:].upper()} file, but there are {n} images to write "
                          "(one PNG each, into a folder).",
                          f"give a folder, e.g. --out {out.with_suffix('')}, or render one input at a time.")
    check_output_dir(out, "--out")


def _write_pngs(out: Path, images: list[tuple[str, bytes]]) -> list[str]:
    """Write the encoded PNGs into the folder ``out`` (created if needed), each atomically; if one fails, the ones
    written (and the folder, if created here) are removed again."""
    import shutil

    from visionflows.io import atomic_write_bytes
    from visionflows.io.atomic import output_error

    created = not out.exists()
    written: list[Path] = []
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(out, err, "create folder") from err
        for name, data in images:
            target = out / f"{name}.png"
            atomic_write_bytes(target, data)
            written.append(target)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for target in written:
                target.unlink(missing_ok=True)
        raise
    return [str(t) for t in written]


def _render(args: argparse.Namespace) -> int:
    from PIL import Image

    from visionflows.data.render import render_mosaic
    from visionflows.io import atomic_write_bytes

    sources = [src for path in args.inputs for src in _render_sources(path, args)]
    many = len(sources) > 1
    out = Path(args.out)
    if many:
        _check_render_out(out, len(sources))
    else:
        check_output_file(out, "--out", suffixes=[".png"])
    gain = args.gain
    if gain is None:
        ref = _render_sources(args.reference, args)[0] if args.reference else sources[0]
        gain = render_mosaic(*ref[1:])[1]
    images = []
    for name, mosaic, cmap, neutral, cm in sources:
        img, _ = render_mosaic(mosaic, cmap, neutral, cm, gain)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        images.append((name, buf.getvalue()))
    if many:
        written = _write_pngs(out, images)
    else:
        atomic_write_bytes(out, images[0][1])
        written = [str(out)]
    print(json.dumps({"out": written, "gain": gain}))
    return 0


def _cameras(args: argparse.Namespace) -> int:
    zoo = load_zoo(args)
    cams = zoo.by_maker(args.maker) if args.maker else list(zoo)
    if args.json:
        print(json.dumps({"profiles": str(zoo.path), "cameras": [
            {"camera": c.name, "maker": c.maker, "model": c.model, "isos": list(c.isos)} for c in cams]}))
        return 0
    n_prof = sum(len(c.profiles) for c in cams)
    print(f"# {len(cams)} cameras, {len({c.maker for c in cams})} makers, {n_prof} (camera, ISO) profiles "
          f"from {zoo.path}")
    width = max(len(c.name) for c in cams) + 2
    for c in cams:
        print(f"{c.name:<{width}}{len(c.isos):>3} ISOs: {' '.join(map(str, c.isos))}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from visionflows.cameras import CAMERAS
    from visionflows.cameras.darktable import DEFAULT_VARIANCE_SCALE, ZOO_BITS
    from visionflows.cameras.physics import physics_from_names
    from visionflows.data.raw_files import read_packed_raw, write_packed_raw
    from visionflows.data.sensor import CameraSimulator, SensorSimulator
    from visionflows.noise.context import check_raw_values

    suffix = Path(args.clean).suffix.lower()
    check_output_file(args.out, "--out", suffixes=[suffix] if suffix in (".npy", ".mat") else None,
                      inputs={"--clean": args.clean})
    physics = physics_from_names(args.physics)
    if args.bits is not None and not 8 <= args.bits <= 16:
        raise InputError(f"--bits {args.bits} is outside 8..16.", "use the sensor's bit depth, e.g. 12 or 14.")
    clean, fmt, batched = read_packed_raw(args.clean)
    check_raw_values(clean, str(args.clean))  # as noise sample / adapt: normalised raw in [0, 1]
    if args.camera.strip().upper() in CAMERAS:
        sim: SensorSimulator = CameraSimulator(args.camera.strip().upper(), args.iso, physics=physics)
        name = sim.params.name
    else:
        zoo = load_zoo(args)
        cam = zoo.camera(args.camera)
        params = cam.sensor_params(args.iso, args.variance_scale or DEFAULT_VARIANCE_SCALE, args.bits or ZOO_BITS)
        sim, name = SensorSimulator(params, physics), cam.name
    noisy = sim.simulate(clean.double().numpy(), np.random.default_rng(args.seed))
    noisy_t = torch.from_numpy(np.asarray(noisy))
    out = write_packed_raw(args.out, noisy_t, fmt, batched)
    noise = noisy_t.double() - clean.double()
    print(json.dumps({"out": str(out), "camera": name, "iso": args.iso, "physics": physics.describe(),
                      "noise_std": float(noise.std()) if noise.numel() > 1 else 0.0,
                      "nlf": sim.params.nlf().tolist()}))
    return 0
