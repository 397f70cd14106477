"""Sensor format (size class) of a zoo camera, from its maker and model name.

darktable's profile file does not record sensor sizes. These rules are our classification from the cameras'
public specifications (by model line), used to split the zoo by sensor size for zero-shot evaluation; they were
written from general knowledge of the product lines, not checked against a source offline, and a camera no
rule matches is ``"unknown"``.

Classes: ``medium`` (larger than 36×24 mm), ``full-frame``, ``aps-h``, ``aps-c``, ``four-thirds``, ``1-inch``
(including 1.5"), ``small`` (compacts, phones, drones: smaller than 1").
"""

from __future__ import annotations

import re

__all__ = ["SENSOR_FORMATS", "sensor_format"]

SENSOR_FORMATS = ("medium", "full-frame", "aps-h", "aps-c", "four-thirds", "1-inch", "small", "unknown")

# maker (lower case) -> ordered (regex on the model, format); the first match wins
_RULES: dict[str, list[tuple[str, str]]] = {
    "canon": [(r"^EOS-1D Mark (II|III|IV)$", "aps-h"), (r"^EOS-1D(s| X)", "full-frame"),
              (r"^EOS (5D|6D|R|R5|R6|RP)\b(?! ?(7|10)\b)", "full-frame"), (r"^EOS (R7|R10)$", "aps-c"),
              (r"^EOS ", "aps-c"), (r"G1 X Mark III", "aps-c"), (r"G1 X Mark II", "1-inch"),
              (r"PowerShot G(3|5|7|9) X", "1-inch"), (r"PowerShot", "small")],
    "dji": [(r".", "small")],
    "fujifilm": [(r"^GFX", "medium"), (r"^(FinePix X10|X10|X20|X30)$|^FinePix HS", "small"),
                 (r"^(X-|X100|X70|XF10|FinePix X100)", "aps-c")],
    "hasselblad": [(r"^L1D", "1-inch")],
    "leica": [(r"^(M |M10|M \(|Q|SL)", "full-frame"), (r"^X2$", "aps-c"), (r"^D-Lux", "four-thirds")],
    "lge": [(r".", "small")],
    "minolta": [(r"Dynax", "aps-c")],
    "nikon": [(r"^1 ", "1-inch"), (r"^Coolpix A$", "aps-c"), (r"(?i)^coolpix", "small"),
              (r"^(D3|D4|D4S|D5|D6|D600|D610|D700|D750|D780|D800|D800E|D810|D850|Df)$", "full-frame"),
              (r"^Z (5|6|7|7_2|9)$", "full-frame"), (r"^(D\d+|D\d+S|D2X|Z 50)$", "aps-c")],
    "olympus": [(r"^(TG-|XZ-)", "small"), (r"^(E-|PEN)", "four-thirds")],
    "om system": [(r".", "four-thirds")],
    "oneplus": [(r".", "small")],
    "panasonic": [(r"^DC-S", "full-frame"), (r"(FZ1000|FZ10002|TZ100|LX15)$", "1-inch"),
                  (r"(LX100)", "four-thirds"), (r"-(G|GF|GH|GM|GX)\d", "four-thirds"), (r".", "small")],
    "pentax": [(r"^K-1\b", "full-frame"), (r".", "aps-c")],
    "raspberrypi": [(r".", "small")],
    "ricoh": [(r"^GR", "aps-c")],
    "samsung": [(r"^WB", "small"), (r".", "aps-c")],
    "sony": [(r"^DSC-RX1$", "full-frame"), (r"^DSC-RX10", "1-inch"), (r"^DSC-RX100", "1-inch"),
             (r"^(DSLR-A850|DSLR-A900|SLT-A99|ILCE-1|ILCE-7|ILCE-9)", "full-frame"),
             (r"^(DSLR-|ILCA-|SLT-|ILCE-[56]|NEX-)", "aps-c")],
    "yi technology": [(r"^M1$", "four-thirds")],
}


def sensor_format(maker: str, model: str) -> str:
    """The size class of ``maker`` ``model`` (one of :data:`SENSOR_FORMATS`; ``"unknown"`` when no rule matches)."""
    for pattern, fmt in _RULES.get(maker.strip().lower(), []):
        if re.search(pattern, model.strip()):
            return fmt
    return "unknown"
