"""Experiments built from the library (not part of the model API): the end-to-end demo (:mod:`.demo`) and the
denoising experiments of the Noise Flow and sRGB papers (:mod:`.denoising`)."""

from visionflows.experiments.denoising import run_denoising_experiment, run_srgb_experiment

__all__ = ["run_denoising_experiment", "run_srgb_experiment"]
