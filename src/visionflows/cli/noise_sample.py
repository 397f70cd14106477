"""``visionflows noise sample``: add noise sampled from a raw noise model to a clean packed raw image.

What a model needs besides the clean image and the ISO:

* **Camera one-hot models** (the released Noise Flow, a flow trained on zoo cameras, an adapted one): ``--camera``
  must be one of the model's cameras; any other camera is refused with the two ways to reach it (a
  measured-parameter model, or ``noise adapt``).
* **Measured-parameter models** (``noiseflow_nlf``, the camera NLF): each packed channel's ``(K, σ²)``, from, in
  this order: ``--nlf-params`` (e.g. a DNG NoiseProfile), a camera registered in the model by ``noise adapt``, a
  SIDD phone's NLF table row, or a darktable zoo camera's profile at ``--iso`` (``--profiles``; mapped as
  ``noise simulate`` maps it, :mod:`visionflows.cameras.darktable`).
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionflows.errors import ConfigError, InputError
from visionflows.validation import NON_NEGATIVE_INT, POSITIVE_INT, TEMPERATURE, check_output_file, number_arg

__all__ = ["add_sample_parser", "parse_nlf_params", "measured_params"]

_INT1 = number_arg(POSITIVE_INT)
_INT0 = number_arg(NON_NEGATIVE_INT)
#: colour (0 R, 1 G, 2 B) of each packed channel of an RGGB sensor (the zoo cameras' assumed CFA)
_RGGB_PACKED = (0, 1, 2, 1)


def add_sample_parser(s: argparse._SubParsersAction) -> None:
    """Add ``sample`` to the ``noise`` actions ``s``."""
    from visionflows.cli.noise_zoo import add_profiles_arg

    m = s.add_parser("sample", help="add sampled noise to a clean packed raw image (any zoo camera with a "
                     "measured-parameter model)")
    m.add_argument("--model", required=True, help="model file, run dir or official ckpt dir")
    m.add_argument("--clean", required=True, help="clean packed raw .npy [4,H,W] or [B,4,H,W], or a SIDD GT .MAT")
    m.add_argument("--iso", required=True, type=_INT1)
    m.add_argument("--camera", default=None,
                   help="a camera of the model (IP, GP, S6, N6, G4 for the released one; its own for a zoo-trained "
                        "or adapted one); for a measured-parameter model (noiseflow_nlf, camera NLF) also any "
                        "camera of the profile file (see `noise cameras`); required unless --nlf-params")
    m.add_argument("--nlf-params", default=None, metavar="LIST",
                   help="measured noise parameters for a measured-parameter model: variance = S·x + O in "
                        "normalised raw units, as 'S,O' (all channels), 'S_R,O_R,S_G,O_G,S_B,O_B' (a DNG "
                        "NoiseProfile per colour plane) or 8 numbers (per packed channel); S >= 0, O >= 0. A "
                        "list that starts with '-' needs the '=' form: --nlf-params=-1e-4,1e-6")
    add_profiles_arg(m)
    m.add_argument("--out", required=True, help="output file (same format as --clean)")
    m.add_argument("--temperature", type=number_arg(TEMPERATURE), default=1.0,
                   help="sampling temperature (1 = the model; 0 = no noise)")
    m.add_argument("--seed", type=_INT0, default=0)
    m.set_defaults(func=_sample)


def parse_nlf_params(text: str, colors: tuple[int, ...] = _RGGB_PACKED) -> np.ndarray:
    """``[4, 2]`` float64 (S, O) per packed channel from ``--nlf-params`` text (commas or spaces): one pair for
    every channel, one per colour plane R, G, B (DNG NoiseProfile order; ``colors`` gives each packed channel's
    colour), or one per packed channel. InputError for anything else, non-finite values, ``S < 0``, ``O < 0``
    or a channel with ``S = O = 0`` (no noise, which the models cannot represent: they floor O at 1e-6)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = np.asarray([float(p) for p in parts], np.float64)
    except ValueError:
        raise InputError(f"--nlf-params {text!r} is not a list of numbers.",
                         "give S,O (variance = S·x + O), e.g. 2e-4,1e-6, or a DNG NoiseProfile.") from None
    if values.size not in (2, 6, 8):
        raise InputError(f"--nlf-params has {values.size} numbers; it needs 2 (one S,O pair), 6 (a pair per colour "
                         "plane R, G, B) or 8 (a pair per packed channel).", "e.g. --nlf-params 2e-4,1e-6.")
    if not np.isfinite(values).all() or (values[0::2] < 0).any():
        raise InputError(f"--nlf-params {text!r}: every value must be finite and every S >= 0.",
                         "give the shot gain S >= 0 and the read variance O of variance = S·x + O.")
    pairs = values.reshape(-1, 2)
    if (pairs[:, 1] < 0).any():  # a variance; the model would quietly replace it by 1e-6 (NoiseContext.with_nlf)
        raise InputError(f"--nlf-params {text!r}: every read variance O must be >= 0 (variance = S·x + O is a "
                         "variance; a negative O is a fit artefact).",
                         "give O >= 0, e.g. the DNG NoiseProfile's own O, or a small positive floor such as 1e-6.")
    if ((pairs[:, 0] == 0) & (pairs[:, 1] == 0)).any():  # zero variance: the model would still add 1e-6 of it
        raise InputError(f"--nlf-params {text!r}: S and O are both 0 for a channel, i.e. no noise at all, which a "
                         "measured-parameter model cannot represent (it floors the read variance at 1e-6).",
                         "give the channel's measured S,O; for a noise-free output use --temperature 0.")
    if (pairs[:, 1] == 0).any():
        warnings.warn(f"--nlf-params {text!r}: a read variance O of 0 is used as 1e-6, the floor of the models "
                      "(as SIDD does).", UserWarning, stacklevel=2)
    if len(pairs) == 1:
        return np.repeat(pairs, 4, axis=0)
    if len(pairs) == 3:
        return pairs[list(colors)]
    return pairs


def _packed_colors(camera: str | None) -> tuple[int, ...]:
    from visionflows.cameras import CAMERAS
    from visionflows.cameras.specs import CAMERA_SPECS

    code = (camera or "").strip().upper()
    return CAMERA_SPECS[code].packed_colors if code in CAMERAS else _RGGB_PACKED


def measured_params(model: Any, camera: str | None, iso: int, nlf_text: str | None,
                    profiles: str | None) -> tuple[np.ndarray, str]:
    """``([4, 2] (K, σ²) per packed channel, where they came from)`` for a measured-parameter model (module
    docstring: ``--nlf-params``, the model's registered cameras, the SIDD table, the darktable zoo)."""
    from visionflows.cameras import CAMERAS, NLF_TABLE

    if nlf_text is not None:
        return parse_nlf_params(nlf_text, _packed_colors(camera)), "--nlf-params"
    if camera is None:
        raise InputError("a measured-parameter model needs the camera's noise parameters.",
                         "pass --camera NAME (a zoo camera, see `visionflows noise cameras`) or --nlf-params S,O.")
    names = [str(c).strip().lower() for c in getattr(model, "camera_names", ())]
    table = getattr(model, "camera_nlf", None)
    if table is not None and camera.strip().lower() in names:
        return table[names.index(camera.strip().lower())].double().cpu().numpy(), "the model (noise adapt)"
    code = camera.strip().upper()
    if code in CAMERAS:
        if (code, iso) not in NLF_TABLE:
            have = sorted(i for c, i in NLF_TABLE if c == code)
            raise InputError(f"the SIDD NLF table has no row for {code} at ISO {iso}.",
                             f"use one of its ISOs {', '.join(map(str, have))}, or pass --nlf-params S,O.")
        b1, b2 = NLF_TABLE[(code, iso)]
        return np.tile([[b1, b2]], (4, 1)).astype(np.float64), "the SIDD NLF table"
    from visionflows.cli.noise_zoo import load_zoo

    zoo = load_zoo(argparse.Namespace(profiles=profiles))
    try:
        cam = zoo.camera(camera)
        params = cam.sensor_params(iso)
    except InputError as err:
        raise InputError(err.problem, f"{err.fix} Or pass the camera's own measured parameters with --nlf-params "
                         "(a DNG NoiseProfile).") from None
    return params.nlf(), f"darktable profile of {cam.name} at ISO {iso} ({zoo.path})"


def _one_hot_camera(model: Any, camera: str | None, model_path: str) -> Any:
    """The camera argument for a model indexed by camera: its own index of ``camera``, refused with the fixes
    when the model has no such camera."""
    names = getattr(model, "camera_names", None)
    if camera is None:
        listed = f" ({', '.join(names)})" if names else ""
        raise InputError("this model is conditioned on the camera.", f"pass --camera NAME, one of its cameras{listed}.")
    if names is None:
        return camera  # a baseline: it checks its own table
    for i, n in enumerate(names):
        if str(n).strip().lower() == camera.strip().lower():
            return i
    raise InputError(f"Unknown camera {camera!r}: {model_path} is a camera one-hot model of the cameras "
                     f"{', '.join(names)} only.",
                     "use a Noise Flow conditioned on measured noise parameters, which takes any camera's noise "
                     "profile (`visionflows noise train --preset noiseflow_nlf --zoo-cameras ...`), or add this "
                     f"camera to the model with `visionflows noise adapt --model {model_path} --camera "
                     f"{camera!r} --data FRAMES --out M`.")


def _sample(args: argparse.Namespace) -> int:
    from visionflows.cli.noise import load_noise_model
    from visionflows.data.raw_files import read_packed_raw, write_packed_raw
    from visionflows.noise.metrics import uses_measured_params

    suffix = Path(args.clean).suffix.lower()
    check_output_file(args.out, "--out", suffixes=[suffix] if suffix in (".npy", ".mat") else None,
                      inputs={"--clean": args.clean})
    model = load_noise_model(args.model)
    info: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if uses_measured_params(model) and (args.nlf_params is not None or getattr(model, "uses_measured_params", False)
                                        or (args.camera or "").strip().upper() not in _sidd_codes()):
        nlf, source = measured_params(model, args.camera, args.iso, args.nlf_params, args.profiles)
        camera: Any = 0  # the parameters carry the camera; its index is not used
        info = {"camera": args.camera, "nlf_source": source, "nlf": nlf.tolist()}
    elif args.nlf_params is not None:
        raise ConfigError(f"{args.model} is conditioned on a camera one-hot, not on measured noise parameters; "
                          "--nlf-params would be ignored.",
                          "use a noiseflow_nlf model for measured parameters, or drop --nlf-params.")
    elif getattr(model, "num_cameras", 0) is None:
        camera = args.camera if (args.camera or "").strip().upper() in _sidd_codes() else 0  # ignored
    else:
        camera = _one_hot_camera(model, args.camera, args.model)
    clean, fmt, batched = read_packed_raw(args.clean)
    if info:
        extra["nlf"] = torch.from_numpy(nlf)[None].expand(clean.shape[0], -1, -1).contiguous()
    model.eval()
    gen = torch.Generator().manual_seed(args.seed)
    noise = model.sample(clean, args.iso, camera, temperature=args.temperature, generator=gen, **extra)
    if not bool(torch.isfinite(noise).all()):
        raise InputError(f"the model produced NaN/Inf noise for {args.clean} at ISO {args.iso}, {args.camera}.",
                         "lower --temperature, or check the clean values (normalised raw in [0, 1]).")
    noisy = torch.clamp(clean + noise.to(clean.device, clean.dtype), 0.0, 1.0)
    out = write_packed_raw(args.out, noisy, fmt, batched)
    print(json.dumps({"out": str(out), "shape": list(noisy.shape if batched else noisy.shape[1:]),
                      "noise_std": float(noise.std()) if noise.numel() > 1 else 0.0, **info}))
    return 0


def _sidd_codes() -> tuple[str, ...]:
    from visionflows.cameras import CAMERAS

    return CAMERAS
