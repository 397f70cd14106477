"""``visionflows wavelet superres``: super-resolution with a trained Wavelet Flow, of one ``--image`` or a folder of
``--images`` (a thin layer over :mod:`visionflows.wavelet.superres`)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from visionflows.cli.anneal_args import anneal_config as _anneal_config
from visionflows.cli.anneal_args import print_anneal_stats as _print_anneal_stats
from visionflows.cli.wavelet import _load
from visionflows.errors import ConfigError
from visionflows.validation import check_input_dir, check_input_file, check_output_dir

__all__ = ["superres"]


#: ``superres`` flags of one mode only → their default (a flag given in the other mode would be ignored)
_IMAGE_ONLY = {"factor": 4, "n_samples": 4, "mean": False}
_IMAGES_ONLY = {"factors": (2, 4), "mean_of": 8, "max_images": 64, "anneal_images": None}


def _check_superres_mode(args: argparse.Namespace) -> None:
    """A ``--image`` flag given with ``--images`` (or the other way round) is an error, not ignored; then the
    defaults are filled in."""
    given, other, mode = (_IMAGE_ONLY, "--images", "--image") if args.images else (_IMAGES_ONLY, "--image", "--images")
    flags = ["--" + k.replace("_", "-") for k in given if getattr(args, k) is not None]
    if flags:
        fix = ("give the factors of the table with --factors (e.g. --factors 2), " if "--factor" in flags and
               args.images else "give --factor F (one factor), " if "--factors" in flags else "")
        raise ConfigError(f"{', '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} to superres {mode} only; "
                          f"with {other} {'it' if len(flags) == 1 else 'they'} would be ignored.",
                          f"{fix}drop {', '.join(flags)}, or use {mode}.")
    if args.images and args.anneal_images is not None and args.anneal is None:
        raise ConfigError("--anneal-images limits the annealed sampling, but --anneal is not given.",
                          "add --anneal (hmc, mala, nuts or official), or drop --anneal-images.")
    for k, default in {**_IMAGE_ONLY, **_IMAGES_ONLY}.items():
        if getattr(args, k) is None:
            setattr(args, k, default)


def superres(args: argparse.Namespace) -> int:
    """``wavelet superres``: one ``--image`` (PSNR/SSIM of samples and baselines, a figure) or a folder of
    ``--images`` (the table of every method at every factor)."""
    check_output_dir(args.out, "--out")
    _check_superres_mode(args)
    anneal = _anneal_config(args)
    if args.images:
        return _superres_folder(args, anneal)
    from visionflows.data.images import load_image
    from visionflows.errors import InputError
    from visionflows.wavelet.sample import prepare_ground_truth
    from visionflows.wavelet.superres import super_resolution_report

    check_input_file(args.image, "--image", "image file")
    image = load_image(args.image, channels=None)
    model = _load(args, require=())
    _check_factor(model, args.factor, "--factor")
    if image.shape[0] != model.channels:
        raise InputError(
            f"{args.image} has {image.shape[0]} channel(s) but the model expects {model.channels}.",
            "convert the image (RGB ↔ greyscale) or use a model with the matching channel count.",
        )
    gt = prepare_ground_truth(image, model.resolution, args.center_crop)
    side, r = image.shape[-1], model.resolution
    if not args.center_crop and side > r:  # the model works at its own resolution only
        warnings.warn(f"--image {args.image} is {side}x{side}, larger than the model's {r}x{r}: it is "
                      f"block-averaged to {r}x{r} (the ground truth), whose x{args.factor} reduction "
                      f"({r // args.factor}x{r // args.factor}) is super-resolved back to {r}x{r}.", UserWarning,
                      stacklevel=2)
    rep = super_resolution_report(model, gt, args.factor, args.out, args.n_samples, args.temperature, args.seed,
                                  anneal=anneal, reduce="mean" if args.mean else None)
    print(f"super-resolution x{rep['factor']}: {rep['low_res']}² → {rep['resolution']}², T = {rep['temperature']} "
          f"({rep['mode']})")
    print(f"{'method':<12} {'PSNR (dB)':>10} {'SSIM':>8}")
    for k, m in enumerate(rep["samples"]):
        label = "mean" if rep["mode"] == "mean" else "mode" if rep["mode"] == "mode" else f"sample {k}"
        print(f"{label:<12} {m['psnr']:>10.3f} {m['ssim']:>8.4f}")
    for k in ("sample_mean", "bicubic", "box"):
        print(f"{k:<12} {rep[k]['psnr']:>10.3f} {rep[k]['ssim']:>8.4f}")
    _print_anneal_stats(model)
    print(f"wrote {Path(args.out) / 'superres.png'} and {Path(args.out) / 'metrics.json'}")
    return 0


def _check_factor(model, factor: int, flag: str) -> None:
    """A factor the model can super-resolve by from a low-res input of at least 2×2."""
    from visionflows.errors import InputError

    if factor >= model.resolution:
        top = model.resolution // 2
        raise InputError(f"{flag} {factor} is too large for this {model.resolution}x{model.resolution} model (the "
                         f"low-res input would be {model.resolution // factor}x{model.resolution // factor}).",
                         f"use a power of two from 2 to {top}." if top >= 2 else "use a larger model.")
    model.check_superres_factor(factor)


def _superres_folder(args: argparse.Namespace, anneal) -> int:
    """``superres --images DIR``: the PSNR/SSIM table of every method at every factor, figures, JSON."""
    from visionflows.data.images import open_images
    from visionflows.errors import DataError
    from visionflows.wavelet.superres import format_superres_table, superres_benchmark

    check_input_dir(args.images, "--images", "folder of photos")
    model = _load(args, require=())
    for f in args.factors:
        _check_factor(model, f, "--factors")
    try:
        pool = open_images(args.images, model.resolution, model.channels, "test")
    except DataError as err:
        raise DataError(err.problem, "point --images at a folder of .png/.jpg photos.") from err
    images = pool.eval_images[: args.max_images]
    print(f"super-resolution of {images.shape[0]} photos from {args.images} at {model.resolution}², factors "
          f"{', '.join(f'x{f}' for f in args.factors)}", flush=True)
    res = superres_benchmark(model, images, args.out, args.factors, args.temperature, args.mean_of, anneal,
                             args.anneal_images, seed=args.seed, log=lambda m: print(m, flush=True))
    print(format_superres_table(res))
    if res.get("anneal"):
        a = res["anneal"]
        print(f"annealed sampling: {a['seconds_per_image']:.2f} s per image")
        for name, rows in a["levels"].items():
            acc = sum(r["accept_rate"] for r in rows) / len(rows)
            step = sum(r["step_size"] for r in rows) / len(rows)
            print(f"  {name}: acceptance {acc:.2f}, step size {step:.3g}")
    out = Path(args.out)
    print(f"wrote {out / 'superres_table.json'} and " + ", ".join(str(out / f"superres_x{f}.png")
                                                                for f in args.factors))
    return 0
