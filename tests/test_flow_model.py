"""FlowModel and priors: densities, exact encode/decode, sampling with temperature as an argument."""

from __future__ import annotations

import math

import torch

from visionflows.flows import (
    ActNorm,
    AffineCoupling,
    Compose,
    DiagonalGaussian,
    FlowModel,
    LUInvertibleConv1x1,
    StandardNormal,
    conv_net_factory,
)


def test_standard_normal_matches_torch_distributions():
    z = torch.randn(3, 2, 4, 4)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=(1, 2, 3))
    torch.testing.assert_close(StandardNormal().log_prob(z), ref)


def test_diagonal_gaussian_log_prob_and_temperature():
    prior = DiagonalGaussian(2)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([1.0, -2.0]))
        prior.log_scale.copy_(torch.tensor([0.5, -0.3]))
    z = torch.randn(4, 2, 3, 3)
    ref = torch.distributions.Normal(prior.loc.view(1, 2, 1, 1), prior.log_scale.exp().view(1, 2, 1, 1))
    torch.testing.assert_close(prior.log_prob(z), ref.log_prob(z).sum(dim=(1, 2, 3)))
    g = torch.Generator().manual_seed(0)
    s0 = prior.sample((2, 2, 3, 3), temperature=0.0, generator=g)
    assert torch.equal(s0, prior.loc.view(1, 2, 1, 1).expand(2, 2, 3, 3))
    big = prior.sample((2000, 2, 1, 1), temperature=0.5, generator=g).detach()
    assert abs(float(big[:, 0].std()) - 0.5 * math.exp(0.5)) < 0.05


def _model() -> FlowModel:
    step = Compose(ActNorm(4), LUInvertibleConv1x1(4), AffineCoupling(4, conv_net_factory(8)))
    return FlowModel(step, StandardNormal(), event_shape=(4, 4, 4))


def test_flow_model_encode_decode_exact_and_log_prob():
    torch.manual_seed(0)
    model = _model()
    x = torch.randn(8, 4, 4, 4) * 3 + 1
    model.train()
    model.log_prob(x)  # data-dependent init
    model.eval()
    z, logdet = model.encode(x)
    torch.testing.assert_close(model.decode(z), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.log_prob(x), StandardNormal().log_prob(z) + logdet)
    # after ActNorm init the latent is standardised, so the density is far better than at the raw scale
    assert float(z.detach().std()) < 1.5


def test_flow_model_sampling_reproducible_and_temperature_argument():
    model = _model().eval()
    a = model.sample(3, temperature=0.7, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 4, 4) and torch.equal(a, b)
    zero = model.sample(2, temperature=0.0)
    torch.testing.assert_close(zero, model.decode(torch.zeros(2, 4, 4, 4)))
