"""Camera facts shared by the data loaders, the simulator and the noise models (so that none of them imports
another's package): the SIDD cameras, ISO levels and noise-level functions (:mod:`.sidd`)."""

from visionflows.cameras.sidd import (
    CAMERA_NAMES,
    CAMERAS,
    ISOS,
    NLF_TABLE,
    TRAIN_PAIRS,
    camera_index,
    camera_name,
    iso_index,
    load_nlf_table,
    nlf_params,
)

__all__ = [
    "CAMERAS",
    "CAMERA_NAMES",
    "ISOS",
    "NLF_TABLE",
    "TRAIN_PAIRS",
    "camera_index",
    "camera_name",
    "iso_index",
    "load_nlf_table",
    "nlf_params",
]
