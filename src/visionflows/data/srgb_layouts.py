"""Finding noisy/clean sRGB pairs in the layouts real-noise datasets are published in.

========== ============================================================ ==========================================
layout     files                                                        camera / ISO from
========== ============================================================ ==========================================
``ours``   ``<stem>_noisy.<ext>`` / ``<stem>_clean.<ext>``              the stem (``d800_iso3200_1``, or PolyU)
``sidd``   ``<scene>/<NNNN>_NOISY_SRGB_<k>.<ext>`` / ``…_GT_SRGB_…``    the scene folder
                                                                        ``SCENE-INSTANCE_SCENE_CAMERA_ISO_SHUTTER_
                                                                        TEMP_BRIGHTNESS`` (``0001_001_S6_00100_
                                                                        00060_3200_L``)
``polyu``  ``<stem>_real.<ext>`` / ``<stem>_mean.<ext>``                ``Camera_F_Shutter_ISO_Scene_Index``
                                                                        (``Canon5D2_5_160_3200_chair_11``)
``nam``    ``<stem>_real.<ext>`` / ``<stem>_mean.<ext>``                ``{camera}_iso{N}_{k}`` (``d800_iso1600_2``)
``manifest`` a CSV file: columns ``noisy``, ``clean`` (paths relative to  the ``camera`` and ``iso`` columns
           the CSV), optional ``camera``, ``iso``                       (optional; empty = unknown)
========== ============================================================ ==========================================

``<ext>`` is ``png``, ``jpg`` or ``jpeg`` in any case (8-bit; 16-bit PNGs are scaled to 8 bits by the reader).
Folders are searched recursively. ``layout="auto"`` picks the manifest for a ``.csv`` path, else the one layout
whose files the folder holds; a folder mixing layouts is an error asking for ``--layout``. ``polyu`` and ``nam``
share their file names and both parsers are tried on each stem; auto-detection reports ``polyu`` when the
stems follow PolyU's naming. Names that carry no camera or ISO give an unknown (None) camera / ISO.

A noisy file without its clean partner (or the reverse) raises :class:`~visionflows.errors.DataError` naming it,
or, with ``on_error="skip"``, is left out with one warning listing every skipped file.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from visionflows.errors import ConfigError, DataError

__all__ = ["LAYOUTS", "SRGBPair", "find_pairs", "detect_layout", "parse_stem", "parse_sidd_scene",
           "parse_polyu_stem", "check_on_error"]

#: the layouts ``find_pairs`` reads (``auto`` detects one)
LAYOUTS = ("ours", "sidd", "polyu", "nam", "manifest")
_EXT = r"\.(?:png|jpe?g)"
_PATTERNS: dict[str, tuple[re.Pattern, str, str]] = {
    # layout -> (file regex with groups key / role, noisy role, clean role)
    "ours": (re.compile(rf"^(?P<key>.+)_(?P<role>noisy|clean){_EXT}$", re.IGNORECASE), "noisy", "clean"),
    "sidd": (re.compile(rf"^(?P<pre>\d+)_(?P<role>NOISY|GT)_SRGB_(?P<idx>\d+){_EXT}$", re.IGNORECASE), "noisy",
             "gt"),
    "real_mean": (re.compile(rf"^(?P<key>.+)_(?P<role>real|mean){_EXT}$", re.IGNORECASE), "real", "mean"),
}
_FAMILY = {"ours": "ours", "sidd": "sidd", "polyu": "real_mean", "nam": "real_mean"}
_NAM_RE = re.compile(r"^(?P<camera>[A-Za-z0-9]+)_iso(?P<iso>\d+)(?:_.*)?$", re.IGNORECASE)
_POLYU_RE = re.compile(r"^(?P<camera>.+?)_(?P<f>\d+(?:\.\d+)?)_(?P<shutter>\d+(?:\.\d+)?)_(?P<iso>\d+)_"
                       r"(?P<scene>[A-Za-z][A-Za-z0-9-]*)(?:_(?P<index>\d+))?$")
_SIDD_SCENE_RE = re.compile(r"^(?P<instance>\d{4})_(?P<scene>\d{3})_(?P<camera>[A-Za-z0-9]{2})_(?P<iso>\d{5})_"
                            r"(?P<shutter>\d{5})_(?P<temp>\d{4})_(?P<brightness>[LNH])$")
_FIX = {
    "ours": "name the files <name>_noisy.png and <name>_clean.png (or .jpg)",
    "sidd": "keep SIDD's names: <scene folder>/NNNN_NOISY_SRGB_010.PNG next to NNNN_GT_SRGB_010.PNG",
    "polyu": "keep the dataset's names: <name>_real.JPG next to <name>_mean.JPG",
    "nam": "keep the dataset's names: <name>_real.png next to <name>_mean.png",
}


@dataclass(frozen=True)
class SRGBPair:
    """One pair of files; ``name`` identifies it (the stem relative to the root, e.g. ``cc15/d800_iso3200_1``)."""

    name: str
    noisy_path: Path
    clean_path: Path
    camera: str | None = None
    iso: int | None = None


def check_on_error(on_error: str) -> None:
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"on_error must be 'stop' or 'skip', got {on_error!r}.", "use 'stop' or 'skip'.")


def parse_polyu_stem(stem: str) -> tuple[str | None, int | None]:
    """PolyU ``Camera_F_Shutter_ISO_Scene_Index``: ``'Canon5D2_5_160_3200_chair_11'`` → ``('canon5d2', 3200)``."""
    m = _POLYU_RE.match(stem)
    return (m.group("camera").lower(), int(m.group("iso"))) if m else (None, None)


def parse_stem(stem: str) -> tuple[str | None, int | None]:
    """Camera and ISO from a file stem: ``{camera}_iso{N}…`` (Nam, ours: ``'d800_iso3200_1'`` → ``('d800',
    3200)``), else PolyU's ``Camera_F_Shutter_ISO_Scene_Index``; ``(None, None)`` for stems with neither."""
    m = _NAM_RE.match(stem)
    if m:
        return m.group("camera").lower(), int(m.group("iso"))
    return parse_polyu_stem(stem)


def parse_sidd_scene(folder: str) -> tuple[str | None, int | None]:
    """SIDD scene folder ``SCENE-INSTANCE_SCENE_CAMERA_ISO_SHUTTER_TEMP_BRIGHTNESS``: ``'0001_001_S6_00100_00060_
    3200_L'`` → ``('s6', 100)``; other names → ``(None, None)``."""
    m = _SIDD_SCENE_RE.match(folder)
    return (m.group("camera").lower(), int(m.group("iso"))) if m else (None, None)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and re.search(rf"{_EXT}$", p.name, re.IGNORECASE))


def _classify(files: list[Path]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in files:
        for family, (rx, _, _) in _PATTERNS.items():
            if rx.match(f.name):
                out.setdefault(family, []).append(f)
                break
    return out


def detect_layout(root: str | Path) -> str:
    """The layout of ``root`` (see the module docstring); DataError if it holds no pairs of any layout,
    ConfigError if it mixes layouts."""
    root = _check_root(root)
    if root.is_file():
        return "manifest"
    found = _classify(_files(root))
    if not found:
        raise DataError(f"no noisy/clean image pairs found under {root}.",
                        "name the files <name>_noisy.png / <name>_clean.png, keep a published layout (SIDD "
                        "*_NOISY_SRGB_* / *_GT_SRGB_*, PolyU / Nam *_real / *_mean) or pass a CSV manifest.")
    if len(found) > 1:
        parts = ", ".join(f"{'polyu/nam' if k == 'real_mean' else k} ({len(v)} files, e.g. {v[0]})"
                          for k, v in found.items())
        raise ConfigError(f"{root} mixes pair layouts: {parts}.",
                          f"pass --layout with one of {', '.join(LAYOUTS)}, or separate the datasets.")
    family = next(iter(found))
    if family != "real_mean":
        return family
    stems = [_PATTERNS["real_mean"][0].match(f.name).group("key") for f in found[family]]  # type: ignore[union-attr]
    return "polyu" if any(_POLYU_RE.match(s) and not _NAM_RE.match(s) for s in stems) else "nam"


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"sRGB pair folder {root} does not exist.",
                        "pass a folder of noisy/clean pairs (or a CSV manifest).")
    if root.is_file() and root.suffix.lower() != ".csv":
        raise DataError(f"sRGB pair folder {root} is a file, not a folder.",
                        "pass a folder of <name>_noisy.png / <name>_clean.png pairs, or a .csv manifest.")
    return root


def find_pairs(root: str | Path, layout: str = "auto", on_error: str = "stop") -> list[SRGBPair]:
    """Every pair under ``root`` (a folder, or a CSV manifest) in ``layout`` (``auto`` or one of
    :data:`LAYOUTS`), sorted by name. DataError if there is none or (``on_error="stop"``) a file lacks its
    partner; with ``on_error="skip"`` orphans are dropped with one warning."""
    check_on_error(on_error)
    root = _check_root(root)
    if layout not in ("auto", *LAYOUTS):
        raise ConfigError(f"unknown pair layout {layout!r}.", f"use auto or one of {', '.join(LAYOUTS)}.")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "manifest":
        return read_manifest(root if root.is_file() else root / "manifest.csv", on_error)
    if root.is_file():
        raise DataError(f"--layout {layout} needs a folder, but {root} is a file.",
                        "pass the dataset's folder, or --layout manifest for a CSV file.")
    rx, noisy_role, clean_role = _PATTERNS[_FAMILY[layout]]
    groups: dict[tuple, dict[str, Path]] = {}
    for f in _files(root):
        m = rx.match(f.name)
        if not m:
            continue
        key = (f.parent, m.group("pre"), m.group("idx")) if layout == "sidd" else (f.parent, m.group("key"))
        role = m.group("role").lower()
        slot = groups.setdefault(key, {})
        if role in slot:
            raise DataError(f"{slot[role]} and {f} are both the {role} image of one pair.",
                            "keep one file per pair and role (e.g. delete the .jpg copy of a .png).")
        slot[role] = f
    pairs, orphans = [], []
    for key in sorted(groups, key=lambda k: (str(k[0].relative_to(root)), *k[1:])):
        slot = groups[key]
        if noisy_role not in slot or clean_role not in slot:
            have_role = noisy_role if noisy_role in slot else clean_role
            want = clean_role if have_role == noisy_role else noisy_role
            orphans.append((slot[have_role], want))
            continue
        rel = slot[noisy_role].parent.relative_to(root)
        if layout == "sidd":
            cam, iso = parse_sidd_scene(slot[noisy_role].parent.name)
            stem = f"{key[1]}_{key[2]}"
        else:
            stem = key[1]
            cam, iso = parse_stem(stem)
        name = str(rel / stem) if str(rel) != "." else stem
        pairs.append(SRGBPair(name, slot[noisy_role], slot[clean_role], cam, iso))
    if orphans:
        if on_error == "stop":
            have, want = orphans[0]
            raise DataError(f"{have} has no {want} partner ({layout} layout).",
                            f"add the {want} image or remove the orphan file; or pass --on-error skip to leave "
                            f"it out. ({_FIX[layout]}.)")
        warnings.warn(f"skipped {len(orphans)} file(s) without a partner under {root}: "
                      + ", ".join(str(h) for h, _ in orphans[:10]) + (" ..." if len(orphans) > 10 else ""),
                      stacklevel=2)
    if not pairs:
        raise DataError(f"no complete {layout} pairs found under {root}.", f"{_FIX[layout]}.")
    return pairs


def read_manifest(path: Path, on_error: str = "stop") -> list[SRGBPair]:
    """Pairs listed in a CSV manifest (``noisy``, ``clean``; optional ``camera``, ``iso``; paths relative to the
    CSV). DataError naming the file and row for a missing column, a missing image or a bad ISO (rows with missing
    images are skipped with a warning when ``on_error="skip"``)."""
    if not path.is_file():
        raise DataError(f"CSV manifest {path} does not exist.", "pass the CSV file itself as --data.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read CSV manifest {path}: {err}.", "write it as UTF-8 CSV with a header row.") \
            from err
    missing = [c for c in ("noisy", "clean") if c not in header]
    if missing:
        raise DataError(f"CSV manifest {path} has no {' / '.join(missing)} column (header: {', '.join(header)}).",
                        "give a header row: noisy,clean,camera,iso (camera and iso optional).")
    pairs, skipped, names = [], [], set()
    for i, raw in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row.get("noisy") and not row.get("clean"):
            continue
        paths = {}
        for col in ("noisy", "clean"):
            if not row.get(col):
                raise DataError(f"CSV manifest {path}, line {i}: the {col} column is empty.",
                                f"give the {col} image's path on every row.")
            p = Path(row[col]).expanduser()
            paths[col] = p if p.is_absolute() else path.parent / p
        gone = [str(p) for p in paths.values() if not p.is_file()]
        if gone:
            if on_error == "skip":
                skipped.append(gone[0])
                continue
            raise DataError(f"CSV manifest {path}, line {i}: {gone[0]} does not exist.",
                            "fix the path (relative paths are relative to the CSV file), or pass --on-error skip.")
        iso_text = row.get("iso", "")
        try:
            iso = int(float(iso_text)) if iso_text else None
        except ValueError:
            raise DataError(f"CSV manifest {path}, line {i}: ISO {iso_text!r} is not a number.",
                            "write the ISO as an integer (e.g. 3200) or leave it empty.") from None
        if iso is not None and iso <= 0:
            raise DataError(f"CSV manifest {path}, line {i}: ISO {iso} is not positive.",
                            "write a positive ISO or leave it empty.")
        cam = row.get("camera", "").lower() or None
        name = str(Path(row["noisy"]).with_suffix(""))
        name = name if name not in names else f"{name}@line{i}"
        names.add(name)
        pairs.append(SRGBPair(name, paths["noisy"], paths["clean"], cam, iso))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} manifest row(s) of {path} with missing images: "
                      + ", ".join(skipped[:10]), stacklevel=2)
    if not pairs:
        raise DataError(f"CSV manifest {path} lists no pairs.", "add rows: noisy,clean,camera,iso.")
    return pairs
