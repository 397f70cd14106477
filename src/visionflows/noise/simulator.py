"""Compatibility re-exports of the camera simulator, which now lives where its parts belong:

* the dataset (photos, unprocessing, mosaicking, :class:`SimulatedSidd`, :func:`make_simulated_dataset`,
  :func:`~visionflows.data.simulated.make_zoo_dataset`): :mod:`visionflows.data.simulated`;
* sampling the sensor (:class:`CameraSimulator`, :class:`~visionflows.data.sensor.SensorSimulator`):
  :mod:`visionflows.data.sensor`;
* its exact density (:func:`simulator_log_prob`, :func:`simulator_nll_floor`):
  :mod:`visionflows.noise.simulator_density`;
* the camera physics (:class:`CameraSpec`, :data:`CAMERA_SPECS`, :func:`noise_params`, …):
  :mod:`visionflows.cameras.specs` and :mod:`visionflows.cameras.physics`.

``from visionflows.noise.simulator import make_simulated_dataset`` keeps working.
"""

from __future__ import annotations

from visionflows.cameras.specs import (
    CAMERA_SPECS,
    PRNU_STD,
    READ_VARIANCE_RANGE,
    ROW_TO_READ_STD,
    SYSTEM_GAIN,
    CameraSpec,
    noise_params,
)
from visionflows.data.sensor import CameraSimulator
from visionflows.data.simulated import (
    PHOTOS,
    TEST_PHOTOS,
    SimulatedSidd,
    load_photo,
    make_simulated_dataset,
    mosaic_packed,
    unprocess,
)
from visionflows.noise.simulator_density import simulator_log_prob, simulator_nll_floor

__all__ = [
    "CameraSpec",
    "CAMERA_SPECS",
    "SYSTEM_GAIN",
    "READ_VARIANCE_RANGE",
    "PRNU_STD",
    "ROW_TO_READ_STD",
    "PHOTOS",
    "TEST_PHOTOS",
    "noise_params",
    "load_photo",
    "unprocess",
    "mosaic_packed",
    "CameraSimulator",
    "simulator_log_prob",
    "simulator_nll_floor",
    "SimulatedSidd",
    "make_simulated_dataset",
]
