"""The ``visionflows`` command line: a thin layer over the library.

Each feature module defines ``register(subparsers)`` that adds its sub-command and sets ``func`` on its parsers;
``func(args) -> int | None`` does the work by calling library functions. User-fixable problems raise
:class:`visionflows.errors.VisionflowsError`; they are printed on one line (no traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from visionflows import __version__
from visionflows.errors import VisionflowsError

__all__ = ["main", "build_parser"]

# feature modules that add sub-commands (each has register(subparsers))
COMMAND_MODULES = (
    "visionflows.cli.train_cmd",
    "visionflows.cli.noise",
    "visionflows.cli.wavelet",
    "visionflows.cli.denoise",
    "visionflows.cli.srgb_noise",
    "visionflows.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionflows",
        description="Normalizing flows for computer vision: Noise Flow and Wavelet Flow.",
    )
    parser.add_argument("--version", action="version", version=f"visionflows {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not (err.name and (name == err.name or name.startswith(err.name + "."))):
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = args.func(args)
    except VisionflowsError as err:
        print(f"visionflows: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("visionflows: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
