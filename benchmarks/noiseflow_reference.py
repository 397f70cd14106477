"""A plain eager Noise Flow (the released architecture ``sdn5|unc×4|gain4|unc×4``), written the straightforward way:
the reference the fast paths of visionflows are timed against (``bench_noiseflow.py``).

Every layer is the paper's / official code's definition with stock PyTorch modules and no fusion: ``nn.Conv2d``
(1×1 convolutions as convolutions), ``nn.BatchNorm2d``, the edge-ring channel concatenated to the zero-padded
input of the last convolution, ``torch.cat`` of the coupling halves. :meth:`ReferenceNoiseFlow.from_model` copies
the weights of a :class:`visionflows.noise.NoiseFlow`, so both compute the same function (the benchmark checks it).

Shapes: noise and clean ``[B, 4, H, W]``, ``iso`` ``[B]`` (ISO values), ``camera`` ``[B]`` (indices). Log-densities
in nats per patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RefSignalDependent(nn.Module):
    """S: ``z = n / sqrt(β̂1·y/γ + β̂2)``, ``γ = exp(g_k·ψ2)·ISO``, ``β̂1 = exp(β1·ψ0)``, ``β̂2 = exp(β2·ψ1)``."""

    def __init__(self, isos: list[int], num_cameras: int) -> None:
        super().__init__()
        self.isos = list(isos)
        self.beta1 = nn.Parameter(torch.tensor(-5.0))
        self.beta2 = nn.Parameter(torch.tensor(0.0))
        self.gain_params = nn.Parameter(torch.full((len(isos),), -5.0))
        self.cam_params = nn.Parameter(torch.ones(3, num_cameras))

    def scale(self, clean: Tensor, iso: Tensor, camera: Tensor) -> Tensor:
        idx = (iso[:, None] == torch.tensor(self.isos)[None]).long().argmax(dim=1)
        psi = torch.exp(self.cam_params[:, camera])
        gamma = torch.exp(self.gain_params[idx] * psi[2]) * iso.float()
        beta1 = torch.exp(self.beta1 * psi[0]) / gamma
        beta2 = torch.exp(self.beta2 * psi[1])
        return torch.sqrt(beta1.view(-1, 1, 1, 1) * clean + beta2.view(-1, 1, 1, 1))

    def forward(self, x, clean, iso, camera):
        s = self.scale(clean, iso, camera)
        return x / s, -torch.log(s).sum(dim=(1, 2, 3))

    def inverse(self, z, clean, iso, camera):
        s = self.scale(clean, iso, camera)
        return z * s, torch.log(s).sum(dim=(1, 2, 3))


class RefGain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, clean, iso, camera):
        return x / self.gain, -x[0].numel() * torch.log(self.gain.abs()).expand(x.shape[0])

    def inverse(self, z, clean, iso, camera):
        return z * self.gain, z[0].numel() * torch.log(self.gain.abs()).expand(z.shape[0])


class RefLUConv(nn.Module):
    """1×1 convolution ``z = x·A`` (row vectors), ``A = P·L·(U + diag(sign·exp(log_s)))``."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.register_buffer("permutation", torch.eye(channels))
        self.register_buffer("sign_s", torch.ones(channels))
        self.lower = nn.Parameter(torch.zeros(channels, channels))  # strictly lower part used
        self.upper = nn.Parameter(torch.zeros(channels, channels))  # strictly upper part used
        self.log_s = nn.Parameter(torch.zeros(channels))

    def matrix(self) -> Tensor:
        c = self.log_s.shape[0]
        lower = torch.tril(self.lower, -1) + torch.eye(c)
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def forward(self, x, clean, iso, camera):
        w = self.matrix().t()
        ld = self.log_s.sum() * x.shape[2] * x.shape[3]
        return F.conv2d(x, w[:, :, None, None]), ld.expand(x.shape[0])

    def inverse(self, z, clean, iso, camera):
        w = torch.inverse(self.matrix().t())
        ld = -self.log_s.sum() * z.shape[2] * z.shape[3]
        return F.conv2d(z, w[:, :, None, None]), ld.expand(z.shape[0])


class RefCouplingNet(nn.Module):
    """conv3×3 → BN → ReLU → conv1×1 → BN → ReLU → [zero-pad, ring channel] → conv3×3 VALID → ·exp(3·logs)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-4, affine=False)
        self.conv2 = nn.Conv2d(width, width, 1)
        self.bn2 = nn.BatchNorm2d(width, eps=1e-4, affine=False)
        self.conv3 = nn.Conv2d(width + 1, 4, 3)
        self.logs = nn.Parameter(torch.zeros(1, 4, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        ring = torch.ones(h.shape[0], 1, h.shape[2] + 2, h.shape[3] + 2)
        ring[:, :, 1:-1, 1:-1] = 0
        h = torch.cat([F.pad(h, (1, 1, 1, 1)), ring], dim=1)
        return self.conv3(h) * torch.exp(3.0 * self.logs)


class RefCoupling(nn.Module):
    """``zb = xb·exp(λ·tanh(r)) + t`` with ``[t, r] = net(xa)``."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = RefCouplingNet(width)
        self.lam = nn.Parameter(torch.tensor(1e-4))

    def forward(self, x, clean, iso, camera):
        xa, xb = x[:, :2], x[:, 2:]
        h = self.net(xa)
        shift, log_scale = h[:, :2], self.lam * torch.tanh(h[:, 2:])
        return torch.cat([xa, xb * torch.exp(log_scale) + shift], dim=1), log_scale.sum(dim=(1, 2, 3))

    def inverse(self, z, clean, iso, camera):
        za, zb = z[:, :2], z[:, 2:]
        h = self.net(za)
        shift, log_scale = h[:, :2], self.lam * torch.tanh(h[:, 2:])
        return torch.cat([za, (zb - shift) * torch.exp(-log_scale)], dim=1), -log_scale.sum(dim=(1, 2, 3))


class ReferenceNoiseFlow(nn.Module):
    """The stack of reference layers over a standard-normal prior; ``forward`` is ``log p(noise | clean, iso, cam)``."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, noise, clean, iso, camera):
        x, logdet = noise, torch.zeros(noise.shape[0])
        for layer in self.layers:
            x, ld = layer(x, clean, iso, camera)
            logdet = logdet + ld
        prior = -0.5 * (x**2).sum(dim=(1, 2, 3)) - 0.5 * x[0].numel() * math.log(2 * math.pi)
        return prior + logdet

    @torch.no_grad()
    def sample(self, clean, iso, camera, temperature: float = 1.0, eps: Tensor | None = None):
        x = temperature * (torch.randn_like(clean) if eps is None else eps)
        for layer in reversed(self.layers):
            x, _ = layer.inverse(x, clean, iso, camera)
        return x

    @classmethod
    @torch.no_grad()
    def from_model(cls, model) -> ReferenceNoiseFlow:
        """The same function as a visionflows ``NoiseFlow`` of tokens ``sdn5``/``gain4``/``unc`` (weights copied)."""
        from visionflows.flows import AffineCoupling, LUInvertibleConv1x1
        from visionflows.noise.layers import GainLayer, SignalDependentLayer

        layers: list[nn.Module] = []
        for layer in model.transform.layers:
            if isinstance(layer, SignalDependentLayer):
                if not layer.camera_params or layer.continuous_iso:
                    raise ValueError("the reference implements sdn5 with listed ISOs only")
                ref = RefSignalDependent(layer.isos.tolist(), layer.cam_params.shape[1])
                for name in ("beta1", "beta2", "gain_params", "cam_params"):
                    getattr(ref, name).copy_(getattr(layer, name))
            elif isinstance(layer, GainLayer):
                ref = RefGain()
                ref.gain.copy_(layer.gain_val)
            elif isinstance(layer, LUInvertibleConv1x1) and layer.row_vector:
                ref = RefLUConv(layer.channels)
                ref.permutation.copy_(layer.permutation)
                ref.sign_s.copy_(layer.sign_s)
                ref.lower.copy_(layer.lower_matrix())
                ref.upper.copy_(layer.upper_matrix())
                ref.log_s.copy_(layer.log_s)
            elif isinstance(layer, AffineCoupling):
                net = layer.net
                ref = RefCoupling(net.l_1.out_channels)
                ref.lam.copy_(layer.scale_bound)
                ref.net.load_state_dict({
                    "conv1.weight": net.l_1.weight, "conv1.bias": net.l_1.bias,
                    "conv2.weight": net.l_2.weight, "conv2.bias": net.l_2.bias,
                    "conv3.weight": net.l_last.conv.weight, "conv3.bias": net.l_last.conv.bias,
                    "logs": net.l_last.logs,
                    **{f"bn{k}.{s}": getattr(getattr(net, f"bn_{k}"), s) for k in (1, 2)
                       for s in ("running_mean", "running_var", "num_batches_tracked")},
                })
            else:
                raise ValueError(f"the reference has no layer for {type(layer).__name__}")
            layers.append(ref)
        return cls(layers)
