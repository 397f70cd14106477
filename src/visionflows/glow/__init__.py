"""Glow (Kingma & Dhariwal, NeurIPS 2018): the multi-scale flow Wavelet Flow is compared with."""

from visionflows.glow.model import Glow, GlowTransform, dequantize, glow_step, to_pixels
from visionflows.glow.train import GlowImageTask

__all__ = ["Glow", "GlowImageTask", "GlowTransform", "dequantize", "glow_step", "to_pixels"]
