"""Every registered invertible layer goes through the one shared harness."""

from __future__ import annotations

import pytest
import torch

from visionflows.flows import AffineCoupling, Bijector, conv_net_factory
from visionflows.testing import BijectorCase, cases, check_bijector

ALL_CASES = cases()


def test_registry_is_populated():
    names = [c.name for c in ALL_CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for required in ("actnorm", "conv1x1", "conv1x1_lu", "affine_coupling", "additive_coupling_conditional",
                     "squeeze", "haar_orthonormal", "glow_step_compose"):
        assert required in names


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_bijector_harness(case):
    report = check_bijector(case)
    assert report["roundtrip64"] < 1e-10


class _WrongLogdet(Bijector):
    """Scales by 2 but reports log-det 0: the harness must catch it."""

    def forward(self, x, context=None):
        return 2 * x, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z / 2, z.new_zeros(z.shape[0])


class _NotInvertible(Bijector):
    def forward(self, x, context=None):
        return x + 1, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z, z.new_zeros(z.shape[0])


def test_harness_catches_wrong_logdet():
    with pytest.raises(AssertionError, match="Jacobian"):
        check_bijector(BijectorCase("bad", _WrongLogdet, torch.randn(2, 2, 2, 2)))


def test_harness_catches_bad_inverse():
    with pytest.raises(AssertionError, match="round trip"):
        check_bijector(BijectorCase("bad", _NotInvertible, torch.randn(2, 2, 2, 2)))


def test_harness_catches_parameter_without_gradient():
    class Unused(AffineCoupling):
        def __init__(self):
            super().__init__(4, conv_net_factory(4))
            self.orphan = torch.nn.Parameter(torch.zeros(3))

    with pytest.raises(AssertionError, match="orphan"):
        check_bijector(BijectorCase("orphan", Unused, torch.randn(2, 4, 2, 2)))
