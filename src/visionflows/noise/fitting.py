"""Fitting the noise baselines on training data (the library functions behind ``noise eval`` and
``srgb-noise eval``; the CLI only calls them).

* :func:`fit_baselines`: the raw Gaussian and heteroscedastic baselines on a simulated set (all its patches; a
  camera-zoo set: per channel, over its own cameras and ISOs) or on SIDD-Medium Raw (``fit_images`` images per
  (camera, ISO), 256 random patches each).
* :func:`fit_srgb_baselines`: the sRGB Gaussian and heteroscedastic baselines on grid patches of 8-bit pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["fit_baselines", "fit_srgb_baselines"]


def fit_baselines(train_data: Any, fit_images: int = 2, seed: int = 0) -> tuple[Any, Any]:
    """``(GaussianNoise, HeteroscedasticNoise)`` fitted on ``train_data``.

    ``train_data``: anything with ``tensors()`` (a simulated set: every patch is used) or a
    :class:`~visionflows.data.sidd.SiddRawDataset` (``fit_images`` images per (camera, ISO), 256 random
    patches each, drawn with ``seed``). A camera-zoo set (with ``camera_names``,
    :func:`~visionflows.data.simulated.make_zoo_dataset`) gets a heteroscedastic model per (camera, ISO) **and
    channel** over its own cameras and ISOs (indexed as the set indexes them)."""
    from visionflows.noise.baselines import GaussianNoise, HeteroscedasticNoise

    if hasattr(train_data, "tensors"):
        t = train_data.tensors()
        noise, clean, iso, cam = t["noise"], t["clean"], t["iso"], t["camera"]
    else:
        rng = np.random.default_rng(seed)
        per_pair: dict[tuple[str, int], int] = {}
        parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        for image in train_data.images:
            key = (image.info.camera, image.info.iso)
            if per_pair.get(key, 0) >= fit_images:
                continue
            per_pair[key] = per_pair.get(key, 0) + 1
            d = train_data.load_image(image)
            pick = rng.choice(d["clean"].shape[0], size=min(256, d["clean"].shape[0]), replace=False)
            parts.append((d["noise"][pick], d["clean"][pick], d["iso"], d["camera"]))
        noise = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        clean = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        iso = torch.from_numpy(np.concatenate([np.full(len(p[0]), p[2]) for p in parts]))
        cam = torch.from_numpy(np.concatenate([np.full(len(p[0]), p[3]) for p in parts]))
    gauss = GaussianNoise().fit(noise)
    names = getattr(train_data, "camera_names", None)
    if names is not None:  # a camera-zoo set: its own cameras and ISOs, channels that differ (darktable profiles)
        isos = tuple(sorted({int(i) for i in iso.tolist()}))
        hetero = HeteroscedasticNoise(num_cameras=len(names), isos=isos, per_channel=True)
    else:
        hetero = HeteroscedasticNoise()
    hetero.fit(noise, clean, iso, cam, generator=torch.Generator().manual_seed(seed))
    return gauss, hetero


def fit_srgb_baselines(train_pairs: Any, patch: int = 32, seed: int = 0, max_patches: int = 4096) -> tuple[Any, Any]:
    """``(SRGBGaussianNoise, SRGBHeteroscedasticNoise)`` fitted on at most ``max_patches`` grid patches of the
    training pairs (:class:`~visionflows.data.srgb_pairs.SRGBPairs`), noise dequantised with ``seed``."""
    from visionflows.noise.srgb import SRGBGaussianNoise, SRGBHeteroscedasticNoise, dequantize_noise

    fp = train_pairs.grid_patches(patch, max_patches, seed)
    noise = dequantize_noise(fp["noisy"], fp["clean"], torch.Generator().manual_seed(seed))
    return SRGBGaussianNoise.fit(noise), SRGBHeteroscedasticNoise.fit(noise, fp["clean"])
