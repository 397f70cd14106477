"""The ``visionflows`` command line: a thin layer over the library.

Each feature module defines ``register(subparsers)`` that adds its sub-command and sets ``func`` on its parsers;
``func(args) -> int | None`` does the work by calling library functions, after checking its inputs with
:mod:`visionflows.validation` (before any work starts). User-fixable problems raise
:class:`visionflows.errors.VisionflowsError`; they are printed on one line ``visionflows: error: … Fix: …``
(no traceback) with exit status 2, and so are command-line syntax errors (:class:`ArgumentParser`). Warnings
raised while a command runs are printed after it ends: after the error line when it fails.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import warnings

from visionflows import __version__
from visionflows.errors import VisionflowsError

__all__ = ["main", "build_parser", "ArgumentParser"]

# feature modules that add sub-commands (each has register(subparsers))
COMMAND_MODULES = (
    "visionflows.cli.train_cmd",
    "visionflows.cli.noise",
    "visionflows.cli.wavelet",
    "visionflows.cli.denoise",
    "visionflows.cli.srgb_noise",
    "visionflows.cli.demo",
)


class RangeHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows the accepted range of every numeric flag parsed by :func:`~visionflows.validation.number_arg`
    (e.g. ``--lr LR  learning rate (default 1e-3) [a finite number > 0]``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        rule = getattr(action.type, "rule", None)
        if rule is None or not text or text == argparse.SUPPRESS:
            return text
        return f"{text} [{rule.describe()}]"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with errors in the package's one-line form: ``visionflows: error: … Fix: …`` and exit 2; every
    (sub-)command's ``--help`` shows the ranges of its numeric flags (:class:`RangeHelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("formatter_class", RangeHelpFormatter)
        super().__init__(*args, **kwargs)

    def _add_action(self, action: argparse.Action) -> argparse.Action:
        if action.help is None and getattr(action.type, "rule", None) is not None:  # so that --help shows the range
            action.help = "required" if action.required else f"default {action.default}"
        return super()._add_action(action)

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"visionflows: error: {_usage_message(message, self.prog)}", file=sys.stderr)
        self.exit(2)

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, "_command_prog"):  # the innermost sub-command parser finishes first
            namespace._command_prog = self.prog
        return namespace, extras


def _usage_message(message: str, prog: str) -> str:
    message = " ".join(message.split())
    help_hint = f"`{prog} --help` lists its options"
    if " Fix: " in message:
        return message
    m = re.match(r"argument (\S+?): must be (.+?), got", message)
    if m:
        flag = m.group(1).split("/")[0]
        return f"{message}. Fix: give {flag} {m.group(2)}."
    m = re.match(r"argument (\S+?): invalid choice: .*\(choose from (.*)\)", message)
    if m:
        return f"{message}. Fix: give {m.group(1).split('/')[0]} one of {m.group(2)}."
    m = re.match(r"argument (\S+?): expected one argument", message)
    if m:
        flag = m.group(1).split("/")[0]
        return (f"{message}. Fix: give {flag} a value; a value that starts with '-' needs the '=' form, e.g. "
                f"{flag}=-1 ({help_hint}).")
    m = re.match(r"argument (\S+?): invalid (\S+) value: (.*)", message)
    if m:
        kind = {"int": "an integer", "float": "a number"}.get(m.group(2), f"a valid {m.group(2)}")
        return f"{message}. Fix: give {m.group(1).split('/')[0]} {kind}."
    if message.startswith("the following arguments are required"):
        return f"{message}. Fix: pass them ({help_hint})."
    if message.startswith("unrecognized arguments"):
        return f"{message}. Fix: remove them; {help_hint}."
    m = re.match(r"argument (\S+?): not allowed with argument (\S+)", message)
    if m:
        return f"{message}. Fix: pass only one of {m.group(1)} and {m.group(2)}."
    return f"{message}. Fix: {help_hint}."


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="visionflows",
        description="Normalizing flows for computer vision: Noise Flow and Wavelet Flow.",
    )
    parser.add_argument("--version", action="version", version=f"visionflows {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        mod.register(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"visionflows: warning: {' '.join(str(message).split())}\n"


def _emit(caught: list[warnings.WarningMessage]) -> None:
    """Re-issue the warnings recorded while the command ran (once each), in the CLI's one-line form."""
    seen: set[tuple[type, str]] = set()
    original = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        for w in caught:
            key = (w.category, str(w.message))
            if key in seen:
                continue
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        warnings.formatwarning = original
    sys.stderr.flush()


#: options whose value is a list of numbers that may start with '-' (argparse takes ``--nlf-params -1e-4,1e-6``
#: for two options; :func:`_join_negative_lists` passes it on as ``--nlf-params=-1e-4,1e-6``)
NEGATIVE_LIST_OPTIONS = ("--nlf-params",)
_NEGATIVE_LIST = re.compile(r"-\.?\d[\d.eE+\-,\s]*")


def _join_negative_lists(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_LIST_OPTIONS and i + 1 < len(argv) and _NEGATIVE_LIST.fullmatch(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _parse(parser: ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    argv = _join_negative_lists(list(sys.argv[1:] if argv is None else argv))
    args, extras = parser.parse_known_args(argv)
    if extras:
        prog = getattr(args, "_command_prog", parser.prog)
        parser.exit(2, f"visionflows: error: unrecognized arguments: {' '.join(extras)}. Fix: remove them; "
                       f"`{prog} --help` lists its options.\n")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    code: int
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args = _parse(parser, argv)
        except SystemExit as exc:  # --help / --version exit 0 (re-raised); usage errors return 2
            if exc.code in (0, None):
                raise
            _emit(caught)
            return int(exc.code) if isinstance(exc.code, int) else 2
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else 2
        try:
            code = int(args.func(args) or 0)
        except VisionflowsError as err:
            print(f"visionflows: error: {' '.join(str(err).split())}", file=sys.stderr)
            code = 2
        except KeyboardInterrupt:
            print("visionflows: interrupted", file=sys.stderr)
            code = 130
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = 1
        except OSError as err:
            if err.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise
            where = f" writing {err.filename}" if err.filename else ""
            print(f"visionflows: error: no space left on the device{where} ({err.strerror}). Fix: free disk space "
                  "or write the output to another disk, then rerun.", file=sys.stderr)
            code = 2
    _emit(caught)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
