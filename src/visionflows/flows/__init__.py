"""Invertible layers sharing one contract (see :mod:`visionflows.flows.base`)."""

from visionflows.flows.actnorm import ActNorm
from visionflows.flows.base import Bijector, Compose, Inverse, logdet_dtype, sum_except_batch, zeros_logdet
from visionflows.flows.conv1x1 import InvertibleConv1x1, LUInvertibleConv1x1
from visionflows.flows.coupling import AdditiveCoupling, AffineCoupling, ZeroConv2d, conv_net_factory
from visionflows.flows.model import FlowModel
from visionflows.flows.priors import DiagonalGaussian, FactoredPrior, StandardNormal
from visionflows.flows.reshape import HaarStep, Squeeze
from visionflows.flows.scale import ContextScale

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Bijector",
    "Compose",
    "ContextScale",
    "DiagonalGaussian",
    "FactoredPrior",
    "FlowModel",
    "HaarStep",
    "Inverse",
    "InvertibleConv1x1",
    "LUInvertibleConv1x1",
    "Squeeze",
    "StandardNormal",
    "ZeroConv2d",
    "conv_net_factory",
    "logdet_dtype",
    "sum_except_batch",
    "zeros_logdet",
]
