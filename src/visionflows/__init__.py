"""visionflows: normalizing flows for computer vision (Noise Flow, Wavelet Flow).

Every model is created, listed, saved and loaded through one registry::

    import visionflows
    visionflows.list_models("noiseflow*")               # presets of every family
    model = visionflows.create_model("noiseflow")       # a fresh model (a visionflows.flows.FlowModel)
    visionflows.save_model(model, "nf.safetensors")     # versioned, self-describing file
    model = visionflows.load_model("nf.safetensors")    # or a run directory
"""

__version__ = "0.1.0"

from visionflows.io.files import load_model, save_model  # noqa: E402
from visionflows.registry import create_model, list_models, model_info, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_model", "model_info", "register_model", "save_model"]
