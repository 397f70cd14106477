"""The CLI's shared behaviour: one-line errors with exit 2 for bad input, resume, config files."""

from __future__ import annotations

import json

import pytest

from visionflows.cli.main import main
from visionflows.training import find_checkpoints

TINY = ["--resolution", "8", "--levels", "2", "--flow-steps", "1", "--width", "8", "--batch-size", "4",
        "--no-progress", "--device", "cpu"]


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def test_glow_train_resume_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = _run(capsys, "glow", "train", "--run-dir", str(run), "--steps", "2", *TINY)
    assert code == 0, err
    code, err = _run(capsys, "glow", "train", "--run-dir", str(run), "--steps", "2", *TINY)
    assert code == 2 and "not empty" in err and "--resume" in err and "Traceback" not in err
    code, err = _run(capsys, "glow", "train", "--run-dir", str(run), "--steps", "4", "--resume", *TINY)
    assert code == 0, err
    assert find_checkpoints(run)[-1].name == "step-00000004"
    # a corrupt checkpoint: clear error, exit 2
    (find_checkpoints(run)[-1] / "state.pt").write_bytes(b"broken")
    code, err = _run(capsys, "glow", "train", "--run-dir", str(run), "--steps", "6", "--resume", *TINY)
    assert code == 2 and "corrupt" in err and err.count("\n") == 1


def test_unknown_config_key_and_bad_config_file(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"steps": 1, "learning_rate": 0.1}))
    code, err = _run(capsys, "glow", "train", "--run-dir", str(tmp_path / "r"), "--config", str(cfg), *TINY)
    assert code == 2 and "learning_rate" in err
    cfg.write_text("{not json")
    code, err = _run(capsys, "glow", "train", "--run-dir", str(tmp_path / "r2"), "--config", str(cfg), *TINY)
    assert code == 2 and "cfg.json" in err


def test_unwritable_run_dir_and_missing_model(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run(capsys, "glow", "train", "--run-dir", str(blocker / "run"), "--steps", "1", *TINY)
    assert code == 2 and "run" in err
    code, err = _run(capsys, "glow", "eval", "--model", str(tmp_path / "nope.safetensors"))
    assert code == 2 and "does not exist" in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("noise", "wavelet", "denoise", "srgb-noise", "glow", "demo"):
        assert cmd in out


def _all_parsers(parser):
    """``parser`` and every sub-command parser below it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _all_parsers(sub)


def test_help_shows_every_numeric_flags_range():
    import argparse

    from visionflows.cli.main import build_parser

    checked = 0
    for parser in _all_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            rule = getattr(action.type, "rule", None)
            if rule is None or not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            flag = action.option_strings[-1]
            assert f"[{rule.describe()}]" in text, f"{parser.prog} --help does not show the range of {flag}"
            checked += 1
    assert checked > 60  # every command's numeric flags, not a few
