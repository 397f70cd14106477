"""Files: versioned model files (:mod:`.files`), atomic writes (:mod:`.atomic`) and the TensorFlow tensor-bundle
reader (:mod:`.tf_bundle`, used to import the official Noise Flow weights without TensorFlow)."""

from visionflows.io.atomic import atomic_dir, atomic_write, atomic_write_bytes, atomic_write_text
from visionflows.io.files import (
    FORMAT_VERSION,
    clean_state_dict,
    load_model,
    model_kinds,
    read_model_file,
    register_model_kind,
    save_model,
)
from visionflows.io.tf_bundle import read_tf_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_state_dict",
    "load_model",
    "model_kinds",
    "read_model_file",
    "read_tf_checkpoint",
    "register_model_kind",
    "save_model",
]
