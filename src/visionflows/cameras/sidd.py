"""SIDD camera noise-level functions (NLF): variance = beta1 * y + beta2 in normalised raw units.

The (beta1, beta2) values per camera and ISO are facts published with the official Noise Flow code
(``BorealisAI/noise_flow@48d1e07:cam_iso_nlf_all.txt``, reproduced in ``docs/noiseflow.md`` §11 of the
reference material). ``cam_iso_nlf.txt`` of the same repository lists the 15 pairs present in the official
training split (§7). Camera order IP=0, GP=1, S6=2, N6=3, G4=4 is fixed by the official code (the columns of
``model/sdn_gain/cam_params``); ISO order 100, 400, 800, 1600, 3200 indexes ``gain_params``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from visionflows.errors import DataError, InputError

__all__ = [
    "CAMERAS",
    "CAMERA_NAMES",
    "ISOS",
    "NLF_TABLE",
    "TRAIN_PAIRS",
    "camera_index",
    "camera_name",
    "iso_index",
    "load_nlf_table",
    "nlf_params",
]

#: Camera codes in the official index order (IP=0, GP=1, S6=2, N6=3, G4=4).
CAMERAS: tuple[str, ...] = ("IP", "GP", "S6", "N6", "G4")
#: Long names (SIDD readme).
CAMERA_NAMES: dict[str, str] = {
    "IP": "Apple iPhone 7",
    "GP": "Google Pixel",
    "S6": "Samsung Galaxy S6 Edge",
    "N6": "Motorola Nexus 6",
    "G4": "LG G4",
}
#: ISO levels in the official index order (``gain_params``).
ISOS: tuple[int, ...] = (100, 400, 800, 1600, 3200)

#: (camera, ISO) -> (beta1, beta2); all 22 rows of ``cam_iso_nlf_all.txt`` (noiseflow.md §11).
NLF_TABLE: dict[tuple[str, int], tuple[float, float]] = {
    ("IP", 100): (0.000702, 0.000003),
    ("IP", 400): (0.000735, 0.000003),
    ("IP", 800): (0.000723, 0.000003),
    ("IP", 1600): (0.000687, 0.000002),
    ("GP", 100): (0.000228, 0.000002),
    ("GP", 400): (0.000886, 0.000005),
    ("GP", 800): (0.001764, 0.000012),
    ("GP", 1600): (0.003519, 0.000045),
    ("GP", 3200): (0.007029, 0.000179),
    ("S6", 100): (0.000479, 0.000002),
    ("S6", 400): (0.001774, 0.000002),
    ("S6", 800): (0.003696, 0.000002),
    ("S6", 1600): (0.008211, 0.000002),
    ("S6", 3200): (0.019930, 0.000002),
    ("N6", 100): (0.000473, 0.000003),
    ("N6", 400): (0.001760, 0.000013),
    ("N6", 800): (0.003476, 0.000052),
    ("N6", 1600): (0.006909, 0.000208),
    ("N6", 3200): (0.013773, 0.000833),
    ("G4", 100): (0.000739, 0.000002),
    ("G4", 400): (0.001860, 0.000002),
    ("G4", 800): (0.003356, 0.000063),
}

#: The 15 (camera, ISO) pairs of the official training split, i.e. the rows of ``cam_iso_nlf.txt`` (§7).
TRAIN_PAIRS: tuple[tuple[str, int], ...] = (
    ("IP", 100),
    ("IP", 400),
    ("IP", 800),
    ("IP", 1600),
    ("GP", 100),
    ("GP", 800),
    ("S6", 100),
    ("S6", 400),
    ("S6", 800),
    ("S6", 1600),
    ("S6", 3200),
    ("N6", 100),
    ("N6", 800),
    ("G4", 100),
    ("G4", 800),
)


def camera_index(name_or_int: str | int) -> int:
    """Camera index 0..4 from a code (``'S6'``, case-insensitive) or an index; InputError if unknown."""
    if isinstance(name_or_int, bool):
        name_or_int = int(name_or_int)
    if isinstance(name_or_int, int) or hasattr(name_or_int, "__index__"):
        idx = int(name_or_int)  # type: ignore[arg-type]
        if 0 <= idx < len(CAMERAS):
            return idx
        raise InputError(
            f"Unknown camera index {idx}.",
            f"Use 0..{len(CAMERAS) - 1} ({', '.join(f'{i}={c}' for i, c in enumerate(CAMERAS))}).",
        )
    if isinstance(name_or_int, str):
        code = name_or_int.strip().upper()
        if code in CAMERAS:
            return CAMERAS.index(code)
    raise InputError(
        f"Unknown camera {name_or_int!r}.",
        f"Use one of the SIDD camera codes {', '.join(CAMERAS)} or an index 0..{len(CAMERAS) - 1}.",
    )


def camera_name(name_or_int: str | int) -> str:
    """Camera code (``'IP'`` …) from a code or index."""
    return CAMERAS[camera_index(name_or_int)]


def iso_index(iso: int) -> int:
    """Index of ``iso`` in :data:`ISOS`; InputError for any other ISO."""
    try:
        value = int(iso)
    except (TypeError, ValueError):
        value = None
    if value is None or value != iso or value not in ISOS:
        raise InputError(f"Unsupported ISO {iso!r}.", f"Use one of {', '.join(map(str, ISOS))}.")
    return ISOS.index(value)


def load_nlf_table(path: str | Path) -> dict[tuple[str, int], tuple[float, float]]:
    """Read a ``cam_iso_nlf*.txt`` file: CSV header ``cam_iso,beta1,beta2`` then rows ``S6_00100,b1,b2``.

    Returns ``{(camera, iso): (beta1, beta2)}``. Raises DataError for a missing or malformed file.
    """
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"Cannot read NLF table {p}: {exc}.", "Pass an existing cam_iso_nlf*.txt file.") from exc
    table: dict[tuple[str, int], tuple[float, float]] = {}
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or (lineno == 1 and line.replace(" ", "").lower().startswith("cam_iso")):
            continue
        parts = [s.strip() for s in line.split(",")]
        try:
            if len(parts) != 3:
                raise ValueError
            cam, iso_s = parts[0].split("_")
            cam = cam.upper()
            if cam not in CAMERAS:
                raise ValueError
            key = (cam, int(iso_s))
            beta1, beta2 = float(parts[1]), float(parts[2])
        except ValueError:
            raise DataError(
                f"Malformed line {lineno} in NLF table {p}: {line!r}.",
                "Each line must be 'CAM_ISO,beta1,beta2', e.g. 'S6_00100,0.000479,0.000002', "
                f"with CAM one of {', '.join(CAMERAS)}.",
            ) from None
        table[key] = (beta1, beta2)
    if not table:
        raise DataError(f"NLF table {p} has no rows.", "Pass a cam_iso_nlf*.txt file with data rows.")
    return table


def nlf_params(
    camera: str | int, iso: int, table: Mapping[tuple[str, int], tuple[float, float]] | None = None
) -> tuple[float, float]:
    """(beta1, beta2) of ``camera`` at ``iso`` from ``table`` (default :data:`NLF_TABLE`).

    InputError names the pair when the table has no row for it (e.g. G4 at ISO 1600).
    """
    cam = camera_name(camera)
    tab = NLF_TABLE if table is None else table
    try:
        key = (cam, int(iso))
    except (TypeError, ValueError):
        raise InputError(f"ISO must be an integer, got {iso!r}.", "Pass e.g. iso=800.") from None
    if key not in tab:
        have = sorted(i for c, i in tab if c == cam)
        raise InputError(
            f"No NLF entry for camera {cam} at ISO {key[1]}.",
            f"Available ISOs for {cam}: {', '.join(map(str, have)) or 'none'}.",
        )
    b1, b2 = tab[key]
    return float(b1), float(b2)
