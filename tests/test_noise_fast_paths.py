"""The folded / cached fast paths of the Noise Flow layers equal the plain layer definitions (noiseflow.md §2.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visionflows.flows import LUInvertibleConv1x1
from visionflows.noise.layers import EdgeBiasZeroConv, NoiseFlowCouplingNet


def _reference_net(net: NoiseFlowCouplingNet, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The official template written out: conv → BN → ReLU → 1×1 conv → BN → ReLU → pad + ring channel → conv."""
    def bn(h, m):
        return F.batch_norm(h, None if training else m.running_mean, None if training else m.running_var,
                            training=training, eps=m.eps)

    h = F.relu(bn(F.conv2d(x, net.l_1.weight, net.l_1.bias, padding=1), net.bn_1))
    h = F.relu(bn(F.conv2d(h, net.l_2.weight, net.l_2.bias), net.bn_2))
    b, _, hh, ww = h.shape
    ring = torch.ones(b, 1, hh + 2, ww + 2, dtype=h.dtype)
    ring[:, :, 1:-1, 1:-1] = 0
    last = net.l_last
    out = F.conv2d(torch.cat([F.pad(h, (1, 1, 1, 1)), ring], 1), last.conv.weight, last.conv.bias)
    return out * torch.exp(last.logscale_factor * last.logs)


def _random_net(seed: int = 0) -> NoiseFlowCouplingNet:
    torch.manual_seed(seed)
    net = NoiseFlowCouplingNet(2, 4)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn_like(p))
        for bn in (net.bn_1, net.bn_2):
            bn.running_mean.copy_(0.1 * torch.randn(4))
            bn.running_var.copy_(torch.rand(4) + 0.05)
    return net


def test_eval_fast_path_equals_plain_template():
    net = _random_net().eval()
    x = torch.randn(3, 2, 6, 5)
    ref = _reference_net(net, x, training=False)
    with torch.no_grad():
        out = net(x)
        again = net(x)  # from the cache
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out, again)
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)  # with autograd: no cache, same values


def test_training_path_equals_plain_template_with_gradients():
    net = _random_net(1).train()
    x = torch.randn(3, 2, 5, 7)
    ref_net = _random_net(1).train()
    out = net(x)
    ref = _reference_net(ref_net, x, training=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref_net.parameters()):
        if name.endswith(("l_1.bias", "l_2.bias")):  # removed by training-mode BN: gradient is rounding noise
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_eval_cache_follows_parameter_and_buffer_changes():
    net = _random_net(2).eval()
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        net(x)
        net.l_last.conv.bias.add_(1.0)  # in-place parameter update (optimizer step)
        torch.testing.assert_close(net(x), _reference_net(net, x, False), rtol=1e-5, atol=1e-5)
        net.train()
        net(x)  # updates the BN running statistics
        net.eval()
        torch.testing.assert_close(net(x), _reference_net(net, x, False), rtol=1e-5, atol=1e-5)
        net.load_state_dict(_random_net(3).state_dict())
        torch.testing.assert_close(net(x), _reference_net(net, x, False), rtol=1e-5, atol=1e-5)
        y = torch.randn(2, 2, 3, 6)  # another spatial size: another ring bias map
        torch.testing.assert_close(net(y), _reference_net(net, y, False), rtol=1e-5, atol=1e-5)


def test_edge_bias_conv_folding_equals_concatenated_ring():
    torch.manual_seed(4)
    layer = EdgeBiasZeroConv(4, 4)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    h = torch.randn(2, 4, 5, 5)
    ring = torch.ones(2, 1, 7, 7)
    ring[:, :, 1:-1, 1:-1] = 0
    ref = F.conv2d(torch.cat([F.pad(h, (1, 1, 1, 1)), ring], 1), layer.conv.weight, layer.conv.bias)
    torch.testing.assert_close(layer(h), ref * torch.exp(3 * layer.logs), rtol=1e-5, atol=1e-5)


def test_lu_conv_weight_cache_follows_updates():
    torch.manual_seed(5)
    conv = LUInvertibleConv1x1(4, row_vector=True)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        z1, _ = conv(x)
        conv.lower.add_(0.2)
        z2, ld = conv(x)
        ref = F.conv2d(x, conv.weight()[:, :, None, None])
        x_back, ld_inv = conv.inverse(z2)
    assert not torch.allclose(z1, z2)
    torch.testing.assert_close(z2, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ld + ld_inv, torch.zeros(2))


def test_eval_batches_are_chunked_without_changing_results():
    from visionflows.noise import create_model

    model = create_model("noiseflow_s_ax1_g_ax1").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    clean = torch.rand(5, 4, 4, 4)
    noise = 0.05 * torch.randn(5, 4, 4, 4)
    with torch.no_grad():
        ref = model.log_prob(noise, clean, 800, "S6")
        ref_dec = model.decode(noise, clean, 800, "S6")
        model.eval_chunk_values = 2 * 64  # two patches per chunk
        out = model.log_prob(noise, clean, 800, "S6")
        dec = model.decode(noise, clean, 800, "S6")
        torch.manual_seed(0)
        s1 = model.sample(clean, 800, "S6")
        model.eval_chunk_values = 1 << 20
        torch.manual_seed(0)
        s2 = model.sample(clean, 800, "S6")
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(dec, ref_dec, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-6)
