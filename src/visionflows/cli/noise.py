"""``visionflows noise train | eval | sample | import-official``: Noise Flow from the command line.

Thin layer over :mod:`visionflows.noise`. Without ``--data`` the built-in camera simulator provides the data.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionflows.cli.common import add_trainer_args, trainer_config
from visionflows.errors import CheckpointError, InputError, OutputError

__all__ = ["register", "load_noise_model", "read_clean", "write_noisy"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("noise", help="Noise Flow: raw camera noise models (train / eval / sample / import-official)")
    s = p.add_subparsers(dest="noise_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="train a Noise Flow preset (default data: the built-in simulator)")
    t.add_argument("--data", default=None, help="SIDD-Medium Raw folder (official 56/22 split); default: simulator")
    t.add_argument("--preset", default="noiseflow", help="Noise Flow preset (see `visionflows noise presets`)")
    _sim_args(t)
    t.add_argument("--eval-batches", type=int, default=20, help="test batches scored at the end")
    t.add_argument("--init", choices=["data", "official"], default="data",
                   help="data: moment-match the signal-dependent layer to the training noise first (default); "
                        "official: the paper's initial values")
    add_trainer_args(t, steps=300, lr=1e-3, batch_size=138)
    t.set_defaults(func=_train)

    e = s.add_parser("eval", help="NLL and marginal KL of Gaussian, camera NLF, heteroscedastic and Noise Flow models")
    e.add_argument("--model", action="append", default=[], help="model file, run dir or official ckpt dir (repeat)")
    e.add_argument("--data", default=None, help="SIDD-Medium Raw folder; default: simulator")
    e.add_argument("--out", default=None, help="write table.txt, results.csv/json and PNG figures here")
    e.add_argument("--batch-size", type=int, default=138)
    e.add_argument("--max-batches", type=int, default=None)
    e.add_argument("--fit-images", type=int, default=2, help="SIDD: training images per (camera, ISO) to fit "
                   "the Gaussian/heteroscedastic baselines on")
    e.add_argument("--seed", type=int, default=0)
    _sim_args(e)
    e.set_defaults(func=_eval)

    m = s.add_parser("sample", help="add sampled noise to a clean packed raw image")
    m.add_argument("--model", required=True, help="model file, run dir or official ckpt dir")
    m.add_argument("--clean", required=True, help="clean packed raw .npy [4,H,W] or [B,4,H,W], or a SIDD GT .MAT")
    m.add_argument("--iso", required=True, type=int)
    m.add_argument("--camera", required=True, help="IP, GP, S6, N6 or G4")
    m.add_argument("--out", required=True, help="output file (same format as --clean)")
    m.add_argument("--temperature", type=float, default=1.0)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=_sample)

    i = s.add_parser("import-official", help="convert the official TF checkpoint to a visionflows model file")
    i.add_argument("ckpt_dir", help="folder with model.ckpt.best.index/.data-00000-of-00001 (or the prefix)")
    i.add_argument("--out", required=True, help="output .safetensors file")
    i.set_defaults(func=_import)

    pr = s.add_parser("presets", help="list the Noise Flow presets")
    pr.set_defaults(func=_presets)


def _sim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulator (when no --data)")
    g.add_argument("--sim-train-images", type=int, default=16, help="simulated training images (16 patches each)")
    g.add_argument("--sim-test-images", type=int, default=8, help="simulated test images")
    g.add_argument("--sim-seed", type=int, default=0)


def _simulated(args: argparse.Namespace) -> dict[str, Any]:
    from visionflows.noise.simulator import make_simulated_dataset

    return make_simulated_dataset(args.sim_train_images, args.sim_test_images, seed=args.sim_seed)


def load_noise_model(path: str) -> torch.nn.Module:
    """A noise model from a visionflows model file / run dir, or an official TF checkpoint folder or prefix."""
    from visionflows.io import load_model
    from visionflows.noise.official import load_official

    p = Path(path)
    if (p.is_dir() and any(p.glob("*.index"))) or Path(str(p) + ".index").is_file():
        return load_official(p)
    if not p.exists():
        raise CheckpointError(f"model {p} does not exist.", "give a .safetensors file, a run dir or a ckpt folder.")
    model = load_model(p)
    if not hasattr(model, "sample") or not hasattr(model, "log_prob") or not hasattr(model, "nll_per_dim"):
        raise CheckpointError(f"{p} holds a {getattr(model, 'kind', '?')} model, not a noise model.",
                              "pass a Noise Flow or noise-baseline model file.")
    return model


def _train(args: argparse.Namespace) -> int:
    from visionflows.noise.train import NoiseFlowTask
    from visionflows.training import train

    cfg = trainer_config(args)
    if args.data:
        from visionflows.data.sidd import SiddRawDataset

        train_data, test_data = SiddRawDataset(args.data, "train"), SiddRawDataset(args.data, "test")
        desc = f"SIDD {args.data}"
    else:
        sim = _simulated(args)
        train_data, test_data = sim["train"], sim["test"]
        desc = f"simulator train={args.sim_train_images} test={args.sim_test_images} seed={args.sim_seed}"
    task = NoiseFlowTask(train_data, test_data, preset=args.preset, batch_size=cfg.batch_size,
                         eval_batches=args.eval_batches, seed=cfg.seed, data_description=desc, init=args.init)
    result = train(task, cfg, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"step": result.step, "run_dir": str(result.run_dir), **result.eval_metrics}))
    return 0


def _fit_baselines(train_data: Any, fit_images: int, seed: int) -> tuple[Any, Any]:
    from visionflows.noise.baselines import GaussianNoise, HeteroscedasticNoise

    if hasattr(train_data, "tensors"):
        t = train_data.tensors()
        noise, clean, iso, cam = t["noise"], t["clean"], t["iso"], t["camera"]
    else:  # SIDD: a few images per (camera, ISO), 256 random patches each
        rng = np.random.default_rng(seed)
        per_pair: dict[tuple[str, int], int] = {}
        parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        for image in train_data.images:
            key = (image.info.camera, image.info.iso)
            if per_pair.get(key, 0) >= fit_images:
                continue
            per_pair[key] = per_pair.get(key, 0) + 1
            d = train_data.load_image(image)
            pick = rng.choice(d["clean"].shape[0], size=min(256, d["clean"].shape[0]), replace=False)
            parts.append((d["noise"][pick], d["clean"][pick], d["iso"], d["camera"]))
        noise = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        clean = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        iso = torch.from_numpy(np.concatenate([np.full(len(p[0]), p[2]) for p in parts]))
        cam = torch.from_numpy(np.concatenate([np.full(len(p[0]), p[3]) for p in parts]))
    gauss = GaussianNoise().fit(noise)
    hetero = HeteroscedasticNoise().fit(noise, clean, iso, cam, generator=torch.Generator().manual_seed(seed))
    return gauss, hetero


def _eval(args: argparse.Namespace) -> int:
    from visionflows.noise.baselines import CameraNLF
    from visionflows.noise.evaluate import format_table, write_noise_report
    from visionflows.noise.metrics import evaluate_noise_models

    if args.out:
        _check_writable_dir(Path(args.out))
    loaded = [(m, load_noise_model(m)) for m in args.model]
    if args.data:
        from visionflows.data.sidd import SiddRawDataset

        train_data, test_data = SiddRawDataset(args.data, "train"), SiddRawDataset(args.data, "test")
    else:
        sim = _simulated(args)
        train_data, test_data = sim["train"], sim["test"]
    gauss, hetero = _fit_baselines(train_data, args.fit_images, args.seed)
    models: dict[str, Any] = {"Gaussian": gauss, "Camera NLF": CameraNLF(), "Heteroscedastic (fitted)": hetero}
    for path, model in loaded:
        name = Path(path).stem if Path(path).is_file() else Path(path).name
        while name in models:
            name += "'"
        models[name] = model
    results = evaluate_noise_models(models, test_data, batch_size=args.batch_size,
                                    generator=torch.Generator().manual_seed(args.seed), max_batches=args.max_batches)
    summary = results.summary()
    print(format_table(summary), end="")
    if not args.data:
        from visionflows.noise.simulator import simulator_nll_floor

        t = test_data.tensors()
        n = results.iso.size
        floor = simulator_nll_floor(t["noise"][:n], t["clean"][:n], t["camera"][:n], t["iso"][:n])
        print(f"\nsimulator marginal NLL floor on these patches: {floor:.4f} nats/dim")
    if args.out:
        paths = write_noise_report(results, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _check_writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OutputError(f"cannot write to {path}: {err.strerror or err}.", "choose a writable --out.") from err


def read_clean(path: str | os.PathLike) -> tuple[torch.Tensor, str, bool]:
    """Clean packed raw ``[B, 4, H, W]`` from ``.npy`` (``[4,H,W]``/``[B,4,H,W]``) or a SIDD ``.MAT`` (packed).

    Returns ``(clean, format, had_batch_dim)``; format is ``"npy"`` or ``"mat"``.
    """
    from visionflows.data.sidd import pack_raw, read_raw_mat
    from visionflows.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"clean file {p} does not exist.", "check the --clean path.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {p} as a .npy array ({err}).", "save it with numpy.save.") from err
        fmt = "npy"
    elif suffix == ".mat":
        try:
            arr = pack_raw(read_raw_mat(p))
        except DataError as err:
            raise InputError(str(err.problem), err.fix) from err
        fmt = "mat"
    else:
        raise InputError(f"unsupported clean file type {p.suffix!r} ({p}).",
                         "use a packed raw .npy [4,H,W] / [B,4,H,W] or a SIDD .MAT file.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{p} holds {arr.dtype} values; expected floats in [0, 1].",
                         "normalise raw values: (DN - black) / (white - black).")
    batched = arr.ndim == 4
    if arr.ndim not in (3, 4) or arr.shape[-3] != 4:
        raise InputError(f"{p} has shape {arr.shape}; expected packed raw [4,H,W] or [B,4,H,W].",
                         "pack the Bayer image into 4 channels first (visionflows.data.sidd.pack_raw).")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return (t if batched else t[None]), fmt, batched


def _write_mat(path: Path, bayer: np.ndarray) -> None:
    """A MATLAB v7.3 (HDF5) file with one single-precision array ``x`` (as h5py reads SIDD files), atomically."""
    import time

    import h5py

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}.", "choose a writable --out.") from err
    try:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            dset = f.create_dataset("x", data=bayer.astype(np.float32))
            dset.attrs["MATLAB_class"] = np.bytes_("single")
        header = (f"MATLAB 7.3 MAT-file, Platform: visionflows, Created on: {time.ctime()} HDF5 schema 1.00 .")
        block = header.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
        with open(tmp, "r+b") as fh:
            fh.write(block.ljust(512, b"\x00"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_noisy(path: str | os.PathLike, noisy: torch.Tensor, fmt: str, batched: bool) -> None:
    """Write ``noisy [B, 4, H, W]`` as ``.npy`` (same batch layout as the input) or a v7.3 ``.MAT`` (unpacked)."""
    from visionflows.data.sidd import unpack_raw
    from visionflows.io import atomic_write

    p = Path(path)
    arr = noisy.detach().cpu().numpy().astype(np.float32)
    if fmt == "npy":
        if p.suffix.lower() != ".npy":
            raise InputError(f"--out {p} must end in .npy like the --clean file.", "use e.g. noisy.npy.")
        with atomic_write(p, "wb") as fh:
            np.save(fh, arr if batched else arr[0])
    else:
        if p.suffix.lower() != ".mat":
            raise InputError(f"--out {p} must end in .MAT like the --clean file.", "use e.g. noisy.MAT.")
        _write_mat(p, np.asarray(unpack_raw(arr[0])))


def _sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise OutputError(f"--out {out} is a directory.", "give a file name.")
    if not np.isfinite(args.temperature) or args.temperature < 0:
        raise InputError(f"--temperature must be a finite value >= 0, got {args.temperature}.")
    model = load_noise_model(args.model)
    clean, fmt, batched = read_clean(args.clean)
    model.eval()
    gen = torch.Generator().manual_seed(args.seed)
    noise = model.sample(clean, args.iso, args.camera, temperature=args.temperature, generator=gen)
    noisy = torch.clamp(clean + noise.to(clean.device, clean.dtype), 0.0, 1.0)
    write_noisy(out, noisy, fmt, batched)
    print(json.dumps({"out": str(out), "shape": list(noisy.shape if batched else noisy.shape[1:]),
                      "noise_std": float(noise.std())}))
    return 0


def _import(args: argparse.Namespace) -> int:
    from visionflows.io import save_model
    from visionflows.noise.official import load_official

    model = load_official(args.ckpt_dir)
    path = save_model(model, args.out, extra={"source": "official Noise Flow checkpoint (BorealisAI/noise_flow)"})
    print(json.dumps({"out": str(path), "arch": model.arch, "parameters": model.num_parameters(official=True)}))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from visionflows.noise.model import PRESETS

    for name, (arch, paper, count) in PRESETS.items():
        print(f"{name:<26}{paper:<40}{count:>6}  {arch}")
    return 0
