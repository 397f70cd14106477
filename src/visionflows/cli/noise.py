"""``visionflows noise train | eval | sample | import-official | presets | cameras | simulate | adapt | render``:
Noise Flow from the command line (the camera-zoo actions live in :mod:`visionflows.cli.noise_zoo`, ``sample`` in
:mod:`visionflows.cli.noise_sample`). ``train`` and ``eval`` take simulated camera-zoo data (``--zoo-cameras``).

A skin over :mod:`visionflows.noise` (models, baselines via :mod:`visionflows.noise.fitting`, metrics) and
:mod:`visionflows.data.raw_files` (raw files). Without ``--data`` the built-in camera simulator provides the data.
Every input is checked (:mod:`visionflows.validation`) before any work starts.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from visionflows.cli.common import add_trainer_args, check_train_args
from visionflows.cli.noise_zoo import add_zoo_data_args
from visionflows.errors import CheckpointError, ConfigError
from visionflows.validation import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    check_finite_weights,
    check_input_dir,
    check_model_file,
    check_output_dir,
    check_output_file,
    number_arg,
)

__all__ = ["register", "load_noise_model"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("noise", help="Noise Flow: raw camera noise models (train / eval / sample / import-official)")
    s = p.add_subparsers(dest="noise_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="train a Noise Flow preset (default data: the built-in simulator)")
    t.add_argument("--data", default=None, help="SIDD-Medium Raw folder (official 56/22 split); default: simulator")
    t.add_argument("--preset", default="noiseflow", help="Noise Flow preset (see `visionflows noise presets`)")
    _sim_args(t)
    add_zoo_data_args(t)
    t.add_argument("--eval-batches", type=_INT1, default=20, help="test batches scored at the end")
    t.add_argument("--init", choices=["data", "official"], default="data",
                   help="data: moment-match the signal-dependent layer to the training noise first (default); "
                        "official: the paper's initial values")
    add_trainer_args(t, steps=300, lr=1e-3, batch_size=138)
    t.set_defaults(func=_train)

    e = s.add_parser("eval", help="NLL and marginal KL of Gaussian, camera NLF, heteroscedastic and Noise Flow models")
    e.add_argument("--model", action="append", default=[], help="model file, run dir or official ckpt dir (repeat)")
    e.add_argument("--data", default=None, help="SIDD-Medium Raw folder; default: simulator")
    e.add_argument("--out", default=None, help="write table.txt, results.csv/json and PNG figures here")
    e.add_argument("--batch-size", type=_INT1, default=138)
    e.add_argument("--max-batches", type=_INT1, default=None)
    e.add_argument("--fit-images", type=_INT1, default=2, help="SIDD: training images per (camera, ISO) to fit "
                   "the Gaussian/heteroscedastic baselines on")
    e.add_argument("--seed", type=_INT0, default=0)
    _sim_args(e)
    add_zoo_data_args(e)
    e.set_defaults(func=_eval)

    from visionflows.cli.noise_sample import add_sample_parser  # sample: any camera with measured parameters

    add_sample_parser(s)

    i = s.add_parser("import-official", help="convert the official TF checkpoint to a visionflows model file")
    i.add_argument("ckpt_dir", help="folder with model.ckpt.best.index/.data-00000-of-00001 (or the prefix)")
    i.add_argument("--out", required=True, help="output .safetensors file")
    i.set_defaults(func=_import)

    pr = s.add_parser("presets", help="list the Noise Flow presets")
    pr.set_defaults(func=_presets)

    from visionflows.cli.noise_zoo import register_zoo  # cameras / simulate: the darktable camera zoo

    register_zoo(s)


def _sim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulator (when no --data)")
    g.add_argument("--sim-train-images", type=_INT1, default=16, help="simulated training images (16 patches each)")
    g.add_argument("--sim-test-images", type=_INT1, default=8, help="simulated test images")
    g.add_argument("--sim-seed", type=_INT0, default=0)


def _datasets(args: argparse.Namespace) -> tuple[Any, Any, str]:
    if getattr(args, "zoo_cameras", None):
        from visionflows.cli.noise_zoo import zoo_datasets

        return zoo_datasets(args)
    if args.data:
        from visionflows.data.sidd import SiddRawDataset

        return SiddRawDataset(args.data, "train"), SiddRawDataset(args.data, "test"), f"SIDD {args.data}"
    from visionflows.noise.simulator import make_simulated_dataset

    sim = make_simulated_dataset(args.sim_train_images, args.sim_test_images, seed=args.sim_seed)
    desc = f"simulator train={args.sim_train_images} test={args.sim_test_images} seed={args.sim_seed}"
    return sim["train"], sim["test"], desc


def _is_official(p: Path) -> bool:
    return (p.is_dir() and any(p.glob("*.index"))) or Path(str(p) + ".index").is_file()


def check_noise_model(path: str, flag: str = "--model") -> str:
    """A raw noise model: an official TF checkpoint (folder or prefix), or a raw noise model file / run dir / a
    folder holding one (e.g. the demo's run dir) with finite weights (an sRGB model, a denoiser … is refused).
    Returns the path to load (the model file a folder resolved to)."""
    p = Path(path)
    if _is_official(p):
        return str(p)
    return check_model_file(p, flag, families=("raw-noise",),
                            fix="pass a raw Noise Flow or raw noise-baseline model file, its run dir, or the "
                                "official checkpoint folder (sRGB models: `visionflows srgb-noise eval`).")["path"]


def load_noise_model(path: str) -> torch.nn.Module:
    """A raw noise model from a visionflows model file / run dir, or an official TF checkpoint folder or prefix
    (checked: the right family, finite weights)."""
    from visionflows.io import load_model
    from visionflows.noise.official import load_official

    p = Path(check_noise_model(path))
    if _is_official(p):
        return check_finite_weights(load_official(p), f"official checkpoint {p}")
    model = load_model(p)
    if not hasattr(model, "sample") or not hasattr(model, "log_prob") or not hasattr(model, "nll_per_dim"):
        raise CheckpointError(f"{p} holds a {getattr(model, 'kind', '?')} model, not a noise model.",
                              "pass a Noise Flow or noise-baseline model file.")
    return model


def _train(args: argparse.Namespace) -> int:
    from visionflows.noise.model import PARAM_PRESETS, PRESETS
    from visionflows.noise.train import NoiseFlowTask
    from visionflows.training import train

    cfg = check_train_args(args)
    if args.preset not in PRESETS and args.preset not in PARAM_PRESETS:
        raise ConfigError(f"unknown Noise Flow preset {args.preset!r}.",
                          f"choose one of {', '.join([*PRESETS, *PARAM_PRESETS])}.")
    if args.preset in PARAM_PRESETS and not getattr(args, "zoo_cameras", None):
        raise ConfigError(f"{args.preset} needs data with measured noise parameters.",
                          "train it on camera-zoo data: --zoo-cameras (see `visionflows noise cameras`).")
    if args.data and getattr(args, "zoo_cameras", None):
        raise ConfigError("--data and --zoo-cameras are two data sources.", "give one of them.")
    if args.data:
        check_input_dir(args.data, "--data", "SIDD-Medium Raw folder")
    train_data, test_data, desc = _datasets(args)
    names = getattr(train_data, "camera_names", None)  # a zoo set: its own cameras, any ISO
    task = NoiseFlowTask(train_data, test_data, preset=args.preset, batch_size=cfg.batch_size,
                         eval_batches=args.eval_batches, seed=cfg.seed, data_description=desc, init=args.init,
                         camera_names=names, continuous_iso=names is not None)
    result = train(task, cfg, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps({"step": result.step, "run_dir": str(result.run_dir), **result.eval_metrics}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from visionflows.noise.baselines import CameraNLF
    from visionflows.noise.evaluate import format_table, write_noise_report
    from visionflows.noise.fitting import fit_baselines
    from visionflows.noise.metrics import evaluate_noise_models, unknown_cameras

    zoo = bool(getattr(args, "zoo_cameras", None))
    if args.data and zoo:
        raise ConfigError("--data and --zoo-cameras are two data sources.", "give one of them.")
    if args.out:
        check_output_dir(args.out, "--out")
    if args.data:
        check_input_dir(args.data, "--data", "SIDD-Medium Raw folder")
    loaded = [(m, load_noise_model(m)) for m in args.model]
    train_data, test_data, desc = _datasets(args)
    gauss, hetero = fit_baselines(train_data, args.fit_images, args.seed)
    nlf_name = "Camera NLF (profile)" if zoo else "Camera NLF"
    models: dict[str, Any] = {"Gaussian": gauss, nlf_name: CameraNLF(), "Heteroscedastic (fitted)": hetero}
    for path, model in loaded:
        name = Path(path).stem if Path(path).is_file() else Path(path).name
        while name in models:
            name += "'"
        models[name] = model
    names = getattr(test_data, "camera_names", None)
    for name, missing in unknown_cameras(models, names).items():
        which = "any" if len(missing) == len(names) else str(len(missing))
        warnings.warn(f"model {name!r} has no camera column for {which} of the {len(names)} test cameras "
                      f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); it scores none of their "
                      "patches. Fix: use a noiseflow_nlf model (measured noise parameters: any camera) or add the "
                      "cameras with `visionflows noise adapt`.", stacklevel=1)
    results = evaluate_noise_models(models, test_data, batch_size=args.batch_size,
                                    generator=torch.Generator().manual_seed(args.seed), max_batches=args.max_batches)
    summary = results.summary()
    print(format_table(summary, f"Noise model evaluation: {desc}"), end="")
    floor = _nll_floor(args, test_data, results.iso.size) if not args.data else None
    if floor is not None:
        print(f"\nsimulator marginal NLL floor on these patches: {floor:.4f} nats/dim")
    if args.out:
        paths = write_noise_report(results, args.out, title=f"Noise model evaluation: {desc}")
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _nll_floor(args: argparse.Namespace, test_data: Any, n: int) -> float | None:
    """The simulator's own per-pixel NLL on the first ``n`` test patches (``None``: no tractable density)."""
    if getattr(args, "zoo_cameras", None):
        from visionflows.cli.noise_zoo import load_zoo
        from visionflows.experiments.any_camera import nll_floor

        zoo = load_zoo(argparse.Namespace(profiles=args.zoo_profiles))
        return nll_floor(zoo, test_data, test_data.physics, max_patches=n)
    from visionflows.noise.simulator import simulator_nll_floor

    t = test_data.tensors()
    return simulator_nll_floor(t["noise"][:n], t["clean"][:n], t["camera"][:n], t["iso"][:n])


def _import(args: argparse.Namespace) -> int:
    from visionflows.io import save_model
    from visionflows.noise.official import load_official

    check_output_file(args.out, "--out", suffixes=[".safetensors"])
    model = check_finite_weights(load_official(args.ckpt_dir), f"official checkpoint {args.ckpt_dir}")
    path = save_model(model, args.out, extra={"source": "official Noise Flow checkpoint (BorealisAI/noise_flow)"})
    print(json.dumps({"out": str(path), "arch": model.arch, "parameters": model.num_parameters(official=True)}))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from visionflows.noise.model import PRESETS

    for name, (arch, paper, count) in PRESETS.items():
        print(f"{name:<26}{paper:<40}{count:>6}  {arch}")
    from visionflows.noise.model import PARAM_PRESETS, NoiseFlow

    for name, (arch, _desc) in PARAM_PRESETS.items():  # visionflows presets (not in the paper)
        label = "measured (K, σ²) instead of camera"
        print(f"{name:<26}{label:<40}{NoiseFlow(arch).num_parameters():>6}  {arch}")
    return 0
