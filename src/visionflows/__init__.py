"""visionflows: normalizing flows for computer vision (Noise Flow, Wavelet Flow)."""

__version__ = "0.1.0"
