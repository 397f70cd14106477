"""Simulated raw-noise datasets: real bundled photos → unprocessed camera raw → simulated sensor noise.

Pipeline (normalised raw units in [0, 1] unless stated):

1. **Unprocessing** sRGB -> linear camera raw (Brooks et al., "Unprocessing Images for Learned Raw
   Denoising", CVPR 2019): inverse smoothstep tone curve ``x = 0.5 - sin(asin(1 - 2y) / 3)``, inverse gamma
   2.2, inverse colour correction with ``rgb2cam = normalise_rows(ColorMatrix · M_sRGB->XYZ)``, inverse white
   balance (multiply R and B by the camera's AsShotNeutral), a random exposure scale, then a Bayer mosaic with
   the camera's CFA and packing as SIDD does (the mosaic is built in the h5py-transposed frame, so packed
   channel colours are IP [R,G,B,G], S6 [G,B,G,R], GP/N6/G4 [B,G,R,G]; ``docs/noiseflow.md`` §7).
2. **Noise**: :class:`~visionflows.data.sensor.SensorSimulator` (physics and sources in
   :mod:`visionflows.cameras.physics`; SIDD phone constants in :mod:`visionflows.cameras.specs`).

Two datasets: :func:`make_simulated_dataset` (the five SIDD phones on the 15 official training pairs, the
built-in data of ``noise train``) and :func:`make_zoo_dataset` (any cameras and ISOs of a darktable profile
file, :mod:`visionflows.cameras.darktable`, with switchable sensor physics). Both split by source photo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from visionflows.cameras import TRAIN_PAIRS, camera_index, camera_name
from visionflows.cameras.darktable import DEFAULT_VARIANCE_SCALE, ZOO_BITS, CameraZoo, ZooCamera
from visionflows.cameras.physics import SIDD_PHYSICS, SensorPhysics
from visionflows.cameras.specs import CAMERA_SPECS, CameraSpec
from visionflows.data.images import BUILTIN_PHOTOS, builtin_photo
from visionflows.data.sensor import CameraSimulator, SensorSimulator
from visionflows.errors import InputError

__all__ = [
    "PHOTOS",
    "TEST_PHOTOS",
    "load_photo",
    "unprocess",
    "mosaic_packed",
    "SimulatedSidd",
    "make_simulated_dataset",
    "make_zoo_dataset",
]

#: Source photos bundled with scikit-image (the same set as the Wavelet Flow built-in data).
PHOTOS: tuple[str, ...] = BUILTIN_PHOTOS
#: Photos reserved for the held-out test split (scene-disjoint; the motorcycle stereo pair stays together).
TEST_PHOTOS: tuple[str, ...] = ("coffee", "chelsea", "immunohistochemistry")


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float64 sRGB [H, W, 3] in [0, 1]."""
    if name not in PHOTOS:
        raise InputError(f"Unknown simulator photo {name!r}.", f"Use one of {', '.join(PHOTOS)}.")
    return builtin_photo(name, 3).permute(1, 2, 0).numpy().astype(np.float64) / 255.0


def unprocess(srgb: np.ndarray, spec: CameraSpec, exposure: float = 1.0) -> np.ndarray:
    """sRGB [H, W, 3] in [0, 1] -> linear camera RGB [H, W, 3] in [0, 1] (Brooks et al. 2019).

    Inverse smoothstep tone curve, inverse gamma 2.2, inverse colour correction, inverse white balance
    (multiply by AsShotNeutral), times ``exposure``; clipped to [0, 1].
    """
    y = np.clip(srgb, 0.0, 1.0)
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)  # inverse smoothstep
    lin = np.maximum(x, 1e-8) ** 2.2
    cam = lin @ spec.rgb2cam.T
    cam = cam * np.asarray(spec.as_shot_neutral) * exposure
    return np.clip(cam, 0.0, 1.0)


def mosaic_packed(cam_rgb: np.ndarray, spec: CameraSpec) -> np.ndarray:
    """Camera RGB [H, W, 3] (H, W even) -> packed Bayer [4, W/2, H/2] in SIDD's h5py-transposed frame."""
    t = np.transpose(cam_rgb, (1, 0, 2))  # h5py returns the MATLAB (sensor) array transposed
    offsets = ((0, 0), (0, 1), (1, 1), (1, 0))
    colors = spec.packed_colors
    return np.stack([t[dy::2, dx::2, colors[c]] for c, (dy, dx) in enumerate(offsets)], axis=0)


class SimulatedSidd(Dataset):
    """In-memory simulated patches. Items: dict(noise, clean [4,p,p] float32, iso, camera, photo (, nlf)).

    Attributes ``clean``, ``noise`` [N,4,p,p] float32, ``iso``, ``camera``, ``photo`` [N] int64 (photo = index
    in :data:`PHOTOS`; camera = SIDD index, or an index into ``camera_names`` for a zoo set). Zoo sets also
    carry ``nlf`` [N, 4, 2] float64: each patch's measured per-channel noise parameters (K, σ²_read) in
    normalised units (the darktable profile mapped into packed-Bayer units), and ``physics``.
    """

    def __init__(self, clean: torch.Tensor, noise: torch.Tensor, iso: torch.Tensor, camera: torch.Tensor,
                 photo: torch.Tensor, nlf: torch.Tensor | None = None, camera_names: Sequence[str] | None = None,
                 physics: SensorPhysics | None = None) -> None:
        self.clean, self.noise, self.iso, self.camera, self.photo = clean, noise, iso, camera, photo
        self.nlf = nlf
        self.camera_names = tuple(camera_names) if camera_names is not None else None
        self.physics = physics

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"noise": self.noise[i], "clean": self.clean[i], "iso": self.iso[i], "camera": self.camera[i],
                "photo": self.photo[i]}
        if self.nlf is not None:
            item["nlf"] = self.nlf[i]
        return item

    def tensors(self) -> dict[str, torch.Tensor]:
        """All tensors as a dict (clean, noise, iso, camera, photo (, nlf))."""
        out = {"clean": self.clean, "noise": self.noise, "iso": self.iso, "camera": self.camera, "photo": self.photo}
        if self.nlf is not None:
            out["nlf"] = self.nlf
        return out

    def subset(self, mask: torch.Tensor) -> SimulatedSidd:
        """The patches where ``mask`` [N] is true (same camera names and physics)."""
        nlf = self.nlf[mask] if self.nlf is not None else None
        return SimulatedSidd(self.clean[mask], self.noise[mask], self.iso[mask], self.camera[mask],
                             self.photo[mask], nlf, self.camera_names, self.physics)

    def nll_floor(self) -> float:
        """The simulator's per-pixel marginal NLL on this set (nats/dim): SIDD sets only; see
        :func:`visionflows.noise.simulator_density.simulator_nll_floor`."""
        from visionflows.noise.simulator_density import simulator_nll_floor

        if self.camera_names is not None:
            raise InputError("nll_floor of a zoo set needs its profiles.",
                             "use visionflows.noise.simulator_density.sensor_nll_floor with the zoo's parameters.")
        return simulator_nll_floor(self.noise, self.clean, self.camera, self.iso)


#: render(pair, camera RGB crop, rng) -> clean packed; then noise(pair, clean packed crop, rng) -> (noisy, nlf|None)
_Render = Callable[[object, np.ndarray, np.random.Generator], np.ndarray]
_Noise = Callable[[object, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def _make_split(n_images: int, photos: Sequence[str], pairs: Sequence[object], patch: int, patches_per_side: int,
                rng: np.random.Generator, render: _Render, add_noise: _Noise,
                index: Callable[[object], tuple[int, int]],
                camera_names: Sequence[str] | None = None, physics: SensorPhysics | None = None,
                cycle_pairs: bool = False) -> SimulatedSidd:
    crop = 2 * patch * patches_per_side  # RGB crop side; packed side = crop / 2
    cleans, noises, isos, cams, phs, nlfs = [], [], [], [], [], []
    images = {name: load_photo(name) for name in photos}
    for i in range(n_images):
        name = photos[i % len(photos)] if i < len(photos) else photos[int(rng.integers(len(photos)))]
        img = images[name]
        pair = pairs[int(rng.integers(len(pairs)))]
        if cycle_pairs and i < len(pairs):  # every pair at least once (when there are enough images)
            pair = pairs[i]
        h, w = img.shape[:2]
        side = min(crop, h // 2 * 2, w // 2 * 2)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        rgb = img[top : top + side, left : left + side]
        if rng.random() < 0.5:
            rgb = rgb[:, ::-1]
        rgb = np.rot90(rgb, int(rng.integers(4)))
        packed = render(pair, rgb, rng)
        n_side = packed.shape[-1] // patch
        packed = packed[:, : n_side * patch, : n_side * patch]
        noisy, nlf = add_noise(pair, packed, rng)
        clean32 = packed.astype(np.float32)
        for arr, out in ((clean32, cleans), (noisy - clean32, noises)):
            t = arr.reshape(4, n_side, patch, n_side, patch).transpose(1, 3, 0, 2, 4).reshape(-1, 4, patch, patch)
            out.append(t)
        n = n_side * n_side
        cam_i, iso = index(pair)
        isos.append(np.full(n, iso))
        cams.append(np.full(n, cam_i))
        phs.append(np.full(n, PHOTOS.index(name)))
        if nlf is not None:
            nlfs.append(np.broadcast_to(nlf, (n, 4, 2)))
    if not cleans:
        empty = torch.zeros((0, 4, patch, patch))
        z = torch.zeros(0, dtype=torch.int64)
        nlf_t = torch.zeros((0, 4, 2), dtype=torch.float64) if camera_names is not None else None
        return SimulatedSidd(empty, empty.clone(), z, z.clone(), z.clone(), nlf_t, camera_names, physics)
    return SimulatedSidd(
        torch.from_numpy(np.concatenate(cleans)),
        torch.from_numpy(np.ascontiguousarray(np.concatenate(noises))),
        torch.from_numpy(np.concatenate(isos).astype(np.int64)),
        torch.from_numpy(np.concatenate(cams).astype(np.int64)),
        torch.from_numpy(np.concatenate(phs).astype(np.int64)),
        torch.from_numpy(np.concatenate(nlfs).astype(np.float64)) if nlfs else None,
        camera_names,
        physics,
    )


def _check_sizes(n_train_images: int, n_test_images: int, patch: int, patches_per_side: int,
                 test_photos: Sequence[str]) -> list[str]:
    if n_train_images < 0 or n_test_images < 0 or patch < 1 or patches_per_side < 1:
        raise InputError(
            f"Invalid simulated dataset size: n_train_images={n_train_images}, n_test_images={n_test_images}, "
            f"patch={patch}, patches_per_side={patches_per_side}.",
            "Use non-negative image counts and positive patch sizes.",
        )
    unknown = [p for p in test_photos if p not in PHOTOS]
    if unknown:
        raise InputError(f"Unknown test photos {unknown}.", f"Use names from {', '.join(PHOTOS)}.")
    train_photos = [p for p in PHOTOS if p not in test_photos]
    if not train_photos or not test_photos:
        raise InputError("test_photos must leave at least one photo for each split.", f"Photos: {PHOTOS}.")
    return train_photos


def _exposure(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(0.2), 0.0)))  # SIDD scenes are often dim (assumption)


def make_simulated_dataset(
    n_train_images: int,
    n_test_images: int,
    patch: int = 32,
    cameras: Iterable[str | int] | None = None,
    isos: Iterable[int] | None = None,
    seed: int = 0,
    patches_per_side: int = 4,
    test_photos: Sequence[str] = TEST_PHOTOS,
) -> dict[str, SimulatedSidd]:
    """Simulated SIDD-like train/test sets, split by source photo (scene-disjoint).

    Each simulated "image" is a random crop (random flip/rotation, exposure) of one bundled photo, rendered by
    one (camera, ISO) pair drawn from the 15 official training pairs (``cam_iso_nlf.txt``, noiseflow.md §7),
    optionally filtered by ``cameras``/``isos``; it gives ``patches_per_side``² non-overlapping patches of
    [4, patch, patch]. Photos in ``test_photos`` are used only for test. Deterministic given ``seed``; the
    test set does not depend on ``n_train_images``.

    Returns ``{"train": SimulatedSidd, "test": SimulatedSidd}``.
    """
    train_photos = _check_sizes(n_train_images, n_test_images, patch, patches_per_side, test_photos)
    cam_set = None if cameras is None else {camera_name(c) for c in cameras}
    iso_set = None if isos is None else {int(i) for i in isos}
    pairs = [(c, i) for c, i in TRAIN_PAIRS if (cam_set is None or c in cam_set) and (iso_set is None or i in iso_set)]
    if not pairs:
        raise InputError(
            f"No training (camera, ISO) pair matches cameras={sorted(cam_set or [])} isos={sorted(iso_set or [])}.",
            f"Choose from {', '.join(f'{c}/{i}' for c, i in TRAIN_PAIRS)}.",
        )

    def render(pair: object, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = CAMERA_SPECS[pair[0]]  # type: ignore[index]
        return mosaic_packed(unprocess(rgb, spec, _exposure(rng)), spec)

    def add_noise(pair: object, packed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, None]:
        return CameraSimulator(*pair).simulate(packed, rng), None  # type: ignore[misc]

    def index(pair: object) -> tuple[int, int]:
        return camera_index(pair[0]), int(pair[1])  # type: ignore[index]

    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return {
        "train": _make_split(n_train_images, train_photos, pairs, patch, patches_per_side,
                             np.random.default_rng(train_seq), render, add_noise, index),
        "test": _make_split(n_test_images, list(test_photos), pairs, patch, patches_per_side,
                            np.random.default_rng(test_seq), render, add_noise, index),
    }


def make_zoo_dataset(
    zoo: CameraZoo,
    pairs: Sequence[tuple[str, int]],
    n_train_images: int,
    n_test_images: int,
    physics: SensorPhysics = SIDD_PHYSICS,
    patch: int = 32,
    seed: int = 0,
    patches_per_side: int = 4,
    test_photos: Sequence[str] = TEST_PHOTOS,
    variance_scale: float = DEFAULT_VARIANCE_SCALE,
    bits: int = ZOO_BITS,
) -> dict[str, SimulatedSidd]:
    """Simulated train/test sets of darktable zoo cameras: ``pairs`` of (camera name, ISO) of ``zoo``.

    Like :func:`make_simulated_dataset` (photo-disjoint split, ``patches_per_side``² patches per image), but
    each image is rendered by a zoo camera (:meth:`ZooCamera.spec`, :meth:`ZooCamera.sensor_params` with
    ``variance_scale`` and ``bits``) with ``physics``; the fixed-pattern maps start at a random sensor
    position per image; the first ``len(pairs)`` images of each split use every pair once, in order.
    ``camera`` indexes ``camera_names`` (the distinct cameras of ``pairs``, in order);
    ``nlf`` [N, 4, 2] holds each patch's mapped profile (K_c, σ²_read,c). InputError for an unknown camera or
    ISO (nearest ones named).
    """
    train_photos = _check_sizes(n_train_images, n_test_images, patch, patches_per_side, test_photos)
    if not pairs:
        raise InputError("no (camera, ISO) pairs to simulate.", "pass e.g. [('Canon EOS 5D Mark III', 800)].")
    cams: dict[str, ZooCamera] = {}
    resolved: list[tuple[str, int]] = []
    for name, iso in pairs:
        cam = zoo.camera(name)
        cam.profile(iso)  # unknown ISO: an error naming the nearest
        cams.setdefault(cam.name, cam)
        resolved.append((cam.name, int(iso)))
    names = tuple(cams)
    specs = {n: c.spec(bits) for n, c in cams.items()}
    sims = {(n, i): SensorSimulator(cams[n].sensor_params(i, variance_scale, bits), physics) for n, i in set(resolved)}

    def render(pair: object, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = specs[pair[0]]  # type: ignore[index]
        return mosaic_packed(unprocess(rgb, spec, _exposure(rng)), spec)

    def add_noise(pair: object, packed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sim = sims[pair]  # type: ignore[index]
        origin = (int(rng.integers(4096)), int(rng.integers(4096)))
        return sim.simulate(packed, rng, origin=origin), sim.params.nlf()

    def index(pair: object) -> tuple[int, int]:
        return names.index(pair[0]), int(pair[1])  # type: ignore[index]

    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return {
        "train": _make_split(n_train_images, train_photos, resolved, patch, patches_per_side,
                             np.random.default_rng(train_seq), render, add_noise, index, names, physics, True),
        "test": _make_split(n_test_images, list(test_photos), resolved, patch, patches_per_side,
                            np.random.default_rng(test_seq), render, add_noise, index, names, physics, True),
    }
