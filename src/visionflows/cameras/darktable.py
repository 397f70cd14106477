"""The camera zoo: darktable's measured Poisson-Gaussian noise profiles, read at run time.

darktable (the open-source raw developer) ships ``noiseprofiles.json`` in its data directory: per camera and
ISO, per colour channel R, G, B, a fit ``var = a·x + b``. This module reads that file (it is never copied into
the package), lists its cameras, and maps a profile into the simulator's normalised packed-Bayer units.

**File format** (``src/common/noiseprofiles.c`` of darktable, read for facts only): ``{"version": 0,
"noiseprofiles": [{"maker", "models": [{"model", "comment", "profiles": [{"name", "iso", "a": [3], "b": [3],
optional "skip"}]}]}]}``. darktable refuses any version but 0 and ignores profiles with ``"skip": true``; so do we.

**Where darktable measures the profile** (verified in darktable's ``tools/noise/``, read for facts only):

1. ``darktable-gen-noiseprofile`` exports every profiling shot with ``darktable-cli`` and the style
   ``profiling-shot.xmp``: ``rawprepare`` (default: ``(DN − black_c)/(white − black_c)`` per CFA position, i.e.
   our normalised units), ``temperature`` with coefficients 1, 1, 1 (no white balance), highlight reconstruction
   off, the default demosaic, ``colorin`` and ``colorout`` both *linear Rec709* (colour-space codes 3 and 3
   decoded from the style's parameters; together an identity on camera RGB), written as a float PFM.
2. ``noiseprofile.c`` clamps the PFM to ≥ 0, takes one level of a separable Haar lifting transform on 2×2
   blocks, uses the LL band as brightness ``x`` (300 bins in [0, 1]) and the diagonal HH band
   ``(p00 − p01 − p10 + p11)/4`` as noise, with a robust std ``MAD/0.6745`` per bin and channel.
3. gnuplot fits ``std² = a·x + b`` per channel (x ∈ [0, 0.35] R, [0, 0.8] G, [0, 0.5] B, weighted by 1/bin
   count). A channel it cannot fit (negative ``a``) is written as ``a = b = 0``.

So ``(a, b)`` describe the variance of a *Haar detail coefficient of the demosaiced, not white-balanced,
black/white-normalised* image, at brightness ``x`` in our units. For uncorrelated pixel noise of variance σ²,
``var(HH) = σ²/4``: the per-pixel raw variance is ``κ·(a·x + b)`` with ``κ = 4``. Demosaicing correlates
neighbouring pixels and lowers ``var(HH)``, so κ = 4 is a lower bound (for bilinear demosaicing we computed
κ ≈ 21 for G and 64 for R/B; the demosaic darktable used for each profile is not recorded). We default to
``variance_scale = κ = 4`` and let the user change it.

**Mapping into packed-Bayer units** (:meth:`NoiseProfile.packed_nlf`), per packed channel of colour c:
``K_c = κ·a_c`` (shot-noise gain), ``σ²_read,c = max(κ·b_c, K_c², (1 DN)²)`` at the assumed bit depth
(:data:`ZOO_BITS`): at least one electron and one DN of read noise. Assumptions, each a choice we could not
verify from the file:

- R and B profiles contain demosaic leakage from green (colour-difference demosaicers), so per-channel
  ratios are not pure sensor properties; a channel written as ``a ≤ 0`` (unfit) takes green's (a, b).
- ``b ≤ 0`` (967 of the 6,316 profiles have one) is a fit artefact of the clamped dark end. The floor of
  one electron (``K_c²``) and one DN² keeps the read variance positive and physical: without it the
  simulated values sit on the electron lattice (read noise ≪ one electron, spacing ``K_c`` of a few DN at
  high ISO), a comb that no real camera shows at this read noise and that only the simulator's exact
  density could exploit.
- Repeated measurements at one ISO are averaged per channel.
- The file has no CFA, bit depth, black/white level, white balance or colour matrix: the zoo simulator uses
  RGGB, 14 bits, black 512 / white 16383, and the mean SIDD colour matrix and white balance.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from visionflows.cameras.physics import SensorParams
from visionflows.cameras.specs import GENERIC_AS_SHOT_NEUTRAL, GENERIC_COLOR_MATRIX, CameraSpec
from visionflows.errors import DataError, InputError

__all__ = [
    "DARKTABLE_VERSION",
    "INSTALLED_PATHS",
    "DEFAULT_VARIANCE_SCALE",
    "ZOO_BITS",
    "ZOO_BLACK",
    "NoiseProfile",
    "ZooCamera",
    "CameraZoo",
    "default_profiles_path",
    "load_darktable_profiles",
]

#: The only file version darktable (and this reader) understands.
DARKTABLE_VERSION = 0
#: Where an installed darktable keeps its profiles (Debian/Ubuntu/Fedora, /usr/local builds, Flatpak, Homebrew,
#: the macOS app bundle); the first existing one is the default.
INSTALLED_PATHS: tuple[str, ...] = (
    "/usr/share/darktable/noiseprofiles.json",
    "/usr/local/share/darktable/noiseprofiles.json",
    "/app/share/darktable/noiseprofiles.json",
    "/var/lib/flatpak/app/org.darktable.Darktable/current/active/files/share/darktable/noiseprofiles.json",
    "/opt/homebrew/share/darktable/noiseprofiles.json",
    "/Applications/darktable.app/Contents/Resources/share/darktable/noiseprofiles.json",
)
#: κ: per-pixel variance / variance of darktable's Haar detail coefficient (4 for uncorrelated pixels).
DEFAULT_VARIANCE_SCALE = 4.0
#: Assumed sensor of a zoo camera (the file has none of these).
ZOO_BITS = 14
ZOO_BLACK = 512
_RGGB = (0, 1, 1, 2)


def _checkout_copy() -> Path:
    # src/visionflows/cameras/darktable.py -> checkout root -> ../shared/data/noise_profiles/
    return Path(__file__).resolve().parents[4] / "shared" / "data" / "noise_profiles" / "darktable_noiseprofiles.json"


def default_profiles_path() -> Path | None:
    """The default profile file: an installed darktable's ``noiseprofiles.json``, else the reference copy next
    to a source checkout (``../shared/data/noise_profiles/``); ``None`` when there is neither."""
    for p in INSTALLED_PATHS:
        if os.path.isfile(p):
            return Path(p)
    p = _checkout_copy()
    return p if p.is_file() else None


@dataclass(frozen=True)
class NoiseProfile:
    """One (camera, ISO) profile: darktable's ``a``, ``b`` for R, G, B (module docstring: what they measure)."""

    camera: str
    iso: int
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    measurements: int = 1

    def rgb_nlf(self, variance_scale: float = DEFAULT_VARIANCE_SCALE, bits: int = ZOO_BITS) -> np.ndarray:
        """``[3, 2]`` float64: per-pixel raw (K, σ²_read) for R, G, B (the mapping of the module docstring)."""
        if not (math.isfinite(variance_scale) and variance_scale > 0):
            raise InputError(f"variance_scale must be positive, got {variance_scale}.", "use e.g. 4 (the default).")
        a, b = np.asarray(self.a, np.float64), np.asarray(self.b, np.float64)
        unfit = a <= 0
        a, b = np.where(unfit, a[1], a), np.where(unfit, b[1], b)
        dn2 = (1.0 / ((1 << bits) - 1 - ZOO_BLACK)) ** 2
        k = variance_scale * a
        return np.stack([k, np.maximum(np.maximum(variance_scale * b, k * k), dn2)], axis=1)

    def packed_nlf(self, colors: tuple[int, ...] = (0, 1, 2, 1), variance_scale: float = DEFAULT_VARIANCE_SCALE,
                   bits: int = ZOO_BITS) -> np.ndarray:
        """``[len(colors), 2]`` (K_c, σ²_read,c) per packed channel of colour ``colors`` (0 R, 1 G, 2 B)."""
        return self.rgb_nlf(variance_scale, bits)[list(colors)]


@dataclass(frozen=True)
class ZooCamera:
    """A camera of the profile file: ``maker``, ``model``, its usable profiles sorted by ISO."""

    maker: str
    model: str
    comment: str
    profiles: tuple[NoiseProfile, ...]
    skipped: int = 0

    @property
    def name(self) -> str:
        """``'Maker Model'`` (just the model when it already starts with the maker, e.g. 'Canon PowerShot …')."""
        return self.model if self.model.lower().startswith(self.maker.lower()) else f"{self.maker} {self.model}"

    @property
    def isos(self) -> tuple[int, ...]:
        return tuple(p.iso for p in self.profiles)

    def profile(self, iso: int) -> NoiseProfile:
        """The profile at exactly ``iso``; InputError naming the nearest measured ISOs otherwise."""
        for p in self.profiles:
            if p.iso == int(iso):
                return p
        near = sorted(self.isos, key=lambda i: (abs(math.log(i / max(int(iso), 1))), i))[:3]
        raise InputError(f"{self.name} has no noise profile at ISO {iso} (nearest: {', '.join(map(str, near))}).",
                         f"use one of its ISOs: {', '.join(map(str, self.isos))}.")

    def spec(self, bits: int = ZOO_BITS) -> CameraSpec:
        """The assumed sensor constants (module docstring): RGGB, ``bits``-bit, black 512, generic colour."""
        return CameraSpec(self.name, _RGGB, ZOO_BLACK, (1 << bits) - 1, bits, GENERIC_AS_SHOT_NEUTRAL,
                          GENERIC_COLOR_MATRIX)

    def sensor_params(self, iso: int, variance_scale: float = DEFAULT_VARIANCE_SCALE,
                      bits: int = ZOO_BITS) -> SensorParams:
        """Simulator parameters at ``iso`` (packed channels in the order of :meth:`spec`'s packing)."""
        spec = self.spec(bits)
        nlf = self.profile(iso).packed_nlf(spec.packed_colors, variance_scale, bits)
        seed = (0x200, zlib.crc32(self.name.encode()))
        return SensorParams(self.name, int(iso), tuple(map(float, nlf[:, 0])), tuple(map(float, nlf[:, 1])),
                            spec.black, spec.white, seed)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


class CameraZoo:
    """All cameras of a darktable profile file (:func:`load_darktable_profiles`)."""

    def __init__(self, cameras: list[ZooCamera], path: Path, version: int) -> None:
        self.cameras = tuple(sorted(cameras, key=lambda c: (c.maker.lower(), c.name.lower())))
        self.path, self.version = path, version
        self._by_norm = {_norm(c.name): c for c in self.cameras}
        for c in self.cameras:  # also "Maker Model" for cameras whose model repeats the maker
            self._by_norm.setdefault(_norm(f"{c.maker} {c.model}"), c)

    def __len__(self) -> int:
        return len(self.cameras)

    def __iter__(self):
        return iter(self.cameras)

    @property
    def makers(self) -> tuple[str, ...]:
        return tuple(sorted({c.maker for c in self.cameras}, key=str.lower))

    @property
    def n_profiles(self) -> int:
        return sum(len(c.profiles) for c in self.cameras)

    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def by_maker(self, maker: str) -> list[ZooCamera]:
        """Cameras of ``maker`` (case-insensitive); InputError naming the nearest makers when there is none."""
        got = [c for c in self.cameras if c.maker.lower() == maker.strip().lower()]
        if not got:
            near = difflib.get_close_matches(maker, self.makers, n=3, cutoff=0.3)
            raise InputError(f"no maker {maker!r} in {self.path}" + (f" (nearest: {', '.join(near)})." if near
                             else "."), f"use one of {', '.join(self.makers)}.")
        return got

    def camera(self, name: str) -> ZooCamera:
        """The camera called ``name`` (case, spaces and punctuation ignored); InputError listing the nearest."""
        found = self._by_norm.get(_norm(name))
        if found is not None:
            return found
        names = self.names()
        near = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
        if not near:
            lowered = {n.lower(): n for n in names}
            near = [lowered[n] for n in difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.2)]
        raise InputError(f"no camera {name!r} among the {len(self)} cameras of {self.path}"
                         + (f"; nearest: {'; '.join(near)}." if near else "."),
                         "list them with `visionflows noise cameras` (--maker X to filter).")

    def profile(self, camera: str, iso: int) -> NoiseProfile:
        return self.camera(camera).profile(iso)


def _fail(path: Path, where: str, what: str) -> DataError:
    return DataError(f"{path} is not a darktable noise profile file: {where}: {what}.",
                     "pass darktable's noiseprofiles.json (--profiles PATH).")


def _number(value: object, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, where, f"expected a finite number, got {value!r}")
    return float(value)


def _parse(doc: object, path: Path) -> CameraZoo:
    if not isinstance(doc, dict) or "version" not in doc:
        raise _fail(path, "top level", "no 'version' entry")
    version = doc["version"]
    if version != DARKTABLE_VERSION or isinstance(version, bool):
        raise DataError(f"{path} has noise-profile file version {version!r}; this reader (like darktable 4) "
                        f"understands version {DARKTABLE_VERSION} only.",
                        "pass a noiseprofiles.json of version 0 (darktable 1.6 … 5.x).")
    makers = doc.get("noiseprofiles")
    if not isinstance(makers, list):
        raise _fail(path, "top level", "'noiseprofiles' must be a list")
    cameras: list[ZooCamera] = []
    for i, mk in enumerate(makers):
        if not isinstance(mk, dict) or not isinstance(mk.get("maker"), str) or not isinstance(mk.get("models"), list):
            raise _fail(path, f"maker #{i + 1}", "needs a 'maker' string and a 'models' list")
        for j, md in enumerate(mk["models"]):
            where = f"{mk['maker']} model #{j + 1}"
            if not isinstance(md, dict) or not isinstance(md.get("model"), str) or not isinstance(
                    md.get("profiles"), list):
                raise _fail(path, where, "needs a 'model' string and a 'profiles' list")
            by_iso: dict[int, list[tuple[list[float], list[float]]]] = {}
            skipped = 0
            for k, pr in enumerate(md["profiles"]):
                pw = f"{mk['maker']} {md['model']} profile #{k + 1}"
                if not isinstance(pr, dict) or any(key not in pr for key in ("name", "iso", "a", "b")):
                    raise _fail(path, pw, "needs 'name', 'iso', 'a' and 'b'")
                if pr.get("skip") is True:
                    skipped += 1
                    continue
                iso = _number(pr["iso"], path, pw + " iso")
                if iso <= 0 or iso != int(iso):
                    raise _fail(path, pw, f"ISO {pr['iso']!r} is not a positive integer")
                ab = []
                for key in ("a", "b"):
                    v = pr[key]
                    if not isinstance(v, list) or len(v) != 3:
                        raise _fail(path, pw, f"'{key}' must hold 3 numbers (R, G, B)")
                    ab.append([_number(x, path, f"{pw} {key}") for x in v])
                by_iso.setdefault(int(iso), []).append((ab[0], ab[1]))
            profiles = []
            cam = ZooCamera(mk["maker"].strip(), md["model"].strip(), str(md.get("comment", "")), ())
            for iso in sorted(by_iso):
                rows = by_iso[iso]
                a = tuple(float(x) for x in np.mean([r[0] for r in rows], axis=0))
                b = tuple(float(x) for x in np.mean([r[1] for r in rows], axis=0))
                if a[1] <= 0:  # darktable's generator refuses a green channel it cannot fit
                    skipped += len(rows)
                    continue
                profiles.append(NoiseProfile(cam.name, iso, a, b, len(rows)))  # type: ignore[arg-type]
            if profiles:
                cameras.append(ZooCamera(cam.maker, cam.model, cam.comment, tuple(profiles), skipped))
    if not cameras:
        raise _fail(path, "noiseprofiles", "no usable camera profile")
    return CameraZoo(cameras, path, int(version))


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> CameraZoo:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _fail(p, "encoding", f"not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise DataError(f"cannot read noise profile file {p}: {err.strerror or err}.",
                        "check the path and its permissions (--profiles PATH).") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{p} is not JSON: {err.msg} at line {err.lineno}, column {err.colno}.",
                        "pass darktable's noiseprofiles.json (--profiles PATH).") from None
    return _parse(doc, p)


def load_darktable_profiles(path: str | Path | None = None) -> CameraZoo:
    """The camera zoo of darktable profile file ``path`` (default: :func:`default_profiles_path`).

    Raises DataError for a missing file, a file that is not JSON, of another version, or malformed.
    Parsed once per file version (cached by path, modification time and size).
    """
    if path is None:
        found = default_profiles_path()
        if found is None:
            raise DataError("no darktable noise profile file found (no installed darktable, no reference copy in "
                            f"{_checkout_copy().parent}).",
                            "install darktable (its noiseprofiles.json) or pass --profiles PATH.")
        path = found
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"noise profile file {p} does not exist.",
                        "pass darktable's noiseprofiles.json, e.g. /usr/share/darktable/noiseprofiles.json.")
    if p.is_dir():
        if (p / "noiseprofiles.json").is_file():
            p = p / "noiseprofiles.json"
        else:
            raise DataError(f"{p} is a folder without noiseprofiles.json.", "pass the file itself (--profiles PATH).")
    st = p.stat()
    return _load(str(p.resolve()), st.st_mtime_ns, st.st_size)
