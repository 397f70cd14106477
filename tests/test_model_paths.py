"""A folder written by another command resolves to the model the command needs (or one clear error)."""

from __future__ import annotations

import pytest

import visionflows
from visionflows.errors import CheckpointError
from visionflows.io import load_model, save_model
from visionflows.io.files import find_model_files, resolve_model_path


def _tree(root):
    nf = visionflows.create_model("noiseflow_s_g")
    save_model(nf, root / "noise" / "noiseflow.safetensors")
    save_model(nf, root / "noise" / "run" / "checkpoints" / "step-00000002" / "model.safetensors")
    save_model(nf, root / "noise" / "run" / "checkpoints" / "step-00000010" / "model.safetensors")
    for name in ("a", "b"):
        save_model(visionflows.create_model("dncnn_raw", depth=3, width=2),
                   root / "denoise" / "runs" / name / "checkpoints" / "step-00000001" / "model.safetensors")
    (root / "noise" / "notes.safetensors").write_bytes(b"not a model")


def test_find_and_resolve(tmp_path):
    _tree(tmp_path)
    files = find_model_files(tmp_path)
    assert tmp_path / "noise" / "noiseflow.safetensors" in files
    assert tmp_path / "noise" / "run" / "checkpoints" / "step-00000010" / "model.safetensors" in files
    assert not any("step-00000002" in str(f) or "notes" in str(f) for f in files)  # newest checkpoint only
    # a run directory: its newest checkpoint; a folder of runs: the shallowest model of the accepted kind
    run = resolve_model_path(tmp_path / "noise" / "run")
    assert run.parts[-2] == "step-00000010"
    assert resolve_model_path(tmp_path, lambda k: k == "noiseflow") == tmp_path / "noise" / "noiseflow.safetensors"
    with pytest.raises(CheckpointError, match="holds 2 suitable models"):
        resolve_model_path(tmp_path, lambda k: k == "dncnn")
    with pytest.raises(CheckpointError, match="no model file of the kind"):
        resolve_model_path(tmp_path, lambda k: k == "glow")
    model = load_model(tmp_path, accept=lambda k: k == "noiseflow")
    assert model.arch == "sdn4|gain4"


def test_cli_model_checks_accept_a_folder_holding_one_model(tmp_path):
    from visionflows.validation import check_model_file, model_family

    _tree(tmp_path)
    meta = check_model_file(tmp_path, "--model", families=("raw-noise",))
    assert meta["path"] == str(tmp_path / "noise" / "noiseflow.safetensors") and meta["kind"] == "noiseflow"
    with pytest.raises(CheckpointError, match="holds 2 suitable models"):
        check_model_file(tmp_path, "--model", families=("denoiser",))
    # families come from the registry: every preset's kind is known
    assert [model_family(k) for k in ("noiseflow", "camera_nlf", "srgb_noiseflow", "dncnn", "glow", "waveletflow",
                                      "waveletflow_level", "nonsense")] == [
        "raw-noise", "raw-noise", "srgb-noise", "denoiser", "glow", "wavelet", "wavelet-level", "other"]
