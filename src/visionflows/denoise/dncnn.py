"""DnCNN denoiser (Zhang et al., TIP 2017) as configured by the Noise Flow paper's denoising experiment.

The Noise Flow raw setup (``docs/noiseflow.md`` §10): depth 9, 32 filters: conv3×3 + ReLU; (depth − 2) ×
(conv3×3 without bias + BatchNorm(eps 1e-4) + ReLU); conv3×3 → C. The network predicts the noise and the
output is ``noisy − predicted noise`` (residual learning); conv weights are orthogonally initialised.
Packed raw uses C = 4, sRGB C = 3.

Deviation: the official Keras BN uses ``momentum=0.0`` (moving statistics = the last batch's statistics); we use
PyTorch's default running average (momentum 0.1), which gives stable eval-mode statistics. The last conv is
zero-initialised (the others orthogonally), so an untrained denoiser is the identity and every training budget
starts from the noisy input's quality rather than from a random residual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionflows.errors import ConfigError, InputError
from visionflows.flows.base import check_finite, check_nchw
from visionflows.registry import register_model

__all__ = ["DnCNN", "DOMAINS"]

#: Image domains a denoiser can be built for, with their default channel counts.
DOMAINS: dict[str, int] = {"raw": 4, "srgb": 3}


class DnCNN(nn.Module):
    """Residual DnCNN: ``denoised = noisy − net(noisy)``.

    Args:
        channels: image channels (4 packed raw, 3 sRGB); default from ``domain``.
        depth: number of conv layers (≥ 3; 9 in the Noise Flow experiment, 17 in the DnCNN paper).
        width: filters per hidden layer (32 in the Noise Flow experiment, 64 in the DnCNN paper).
        domain: ``"raw"`` (normalised packed raw in [0, 1]) or ``"srgb"`` (8-bit values / 255).
        seed: seed of the orthogonal initialisation.

    Input and output: ``[B, C, H, W]`` float in [0, 1] units (any H, W; zero 'same' padding).
    """

    kind = "dncnn"

    def __init__(
        self, channels: int | None = None, depth: int = 9, width: int = 32, domain: str = "raw", seed: int | None = 0
    ) -> None:
        super().__init__()
        if domain not in DOMAINS:
            raise ConfigError(f"unknown denoiser domain {domain!r}.", f"use one of {', '.join(DOMAINS)}.")
        channels = DOMAINS[domain] if channels is None else int(channels)
        if depth < 3 or width < 1 or channels < 1:
            raise ConfigError(f"invalid DnCNN size depth={depth}, width={width}, channels={channels}.",
                              "use depth >= 3 and positive width/channels.")
        self.channels, self.depth, self.width, self.domain, self.seed = channels, int(depth), int(width), domain, seed
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width, eps=1e-4),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.orthogonal_(m.weight, generator=gen)
                    if m.bias is not None:
                        m.bias.zero_()
            last = self.net[-1]
            last.weight.zero_()
            last.bias.zero_()

    def model_config(self) -> dict[str, Any]:
        return {"channels": self.channels, "depth": self.depth, "width": self.width, "domain": self.domain,
                "seed": self.seed}

    def predict_noise(self, noisy: Tensor) -> Tensor:
        """The network's noise estimate ``[B, C, H, W]``."""
        if not isinstance(noisy, Tensor):
            raise InputError(f"noisy must be a torch.Tensor, got {type(noisy).__name__}.", "use torch.as_tensor.")
        check_nchw(noisy, self.channels, "noisy")
        weight = self.net[0].weight
        if noisy.dtype != weight.dtype:
            raise InputError(f"noisy is {noisy.dtype} but the denoiser's weights are {weight.dtype}.",
                             "use model.denoise(noisy), which converts, or pass noisy.to(weight dtype); 8-bit "
                             "images: divide by 255 first.")
        return self.net(noisy)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple[Tensor, None]:
        """Noisy images ``[B, C, 16, 16]`` in [0, 1] (for the model harness)."""
        gen = generator or torch.Generator().manual_seed(0)
        clean = torch.rand(batch_size, self.channels, 16, 16, generator=gen)
        return (clean + 0.05 * torch.randn(clean.shape, generator=gen)).clamp(0, 1), None

    def forward(self, noisy: Tensor) -> Tensor:
        """Denoised image ``noisy − predict_noise(noisy)``, ``[B, C, H, W]`` (not clipped)."""
        return noisy - self.predict_noise(noisy)

    @torch.no_grad()
    def denoise(self, noisy: Tensor, clip: bool = True) -> Tensor:
        """Eval-mode denoising of ``[B, C, H, W]`` or ``[C, H, W]`` (validated, clipped to [0, 1])."""
        if not isinstance(noisy, Tensor):
            raise InputError(f"noisy must be a torch.Tensor, got {type(noisy).__name__}.", "use torch.as_tensor.")
        single = noisy.dim() == 3
        x = noisy[None] if single else noisy
        check_nchw(x, self.channels, "noisy")
        if not x.is_floating_point():
            raise InputError(f"noisy must be a float image in [0, 1] units, got dtype {x.dtype}.",
                             "8-bit images: pass noisy.float() / 255.")
        if x.numel() == 0:
            raise InputError(f"noisy holds no pixels (shape {tuple(x.shape)}).", "pass at least one image.")
        check_finite(x, "noisy")
        lo, hi = (float(v) for v in torch.aminmax(x))
        if lo < -1.0 or hi > 2.0:
            raise InputError(f"noisy values must be in [0, 1] units (noise may take them a little outside), got "
                             f"[{lo:.4g}, {hi:.4g}].", "8-bit images: divide by 255; raw: normalise with "
                             "(DN - black) / (white - black).")
        was = self.training
        self.eval()
        ref = next(self.parameters())
        out = self(x.to(device=ref.device, dtype=ref.dtype))
        self.train(was)
        out = out.clamp(0.0, 1.0) if clip else out
        return out[0] if single else out


def _dncnn_preset(domain: str, description: str):
    def preset(**overrides: Any) -> DnCNN:
        return DnCNN(**{"domain": domain, **overrides})

    preset.__doc__ = description
    preset.__qualname__ = preset.__name__ = f"dncnn_{domain}"
    return register_model(f"dncnn_{domain}", family="denoise", aliases=("dncnn",) if domain == "raw" else ())(preset)


_dncnn_preset("raw", "DnCNN for packed raw (depth 9, width 32: the Noise Flow paper's denoiser).")
_dncnn_preset("srgb", "DnCNN for 8-bit sRGB (depth 9, width 32).")
