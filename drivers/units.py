"""Quantities with explicit units, parsed from strings such as ``"700 W"`` or ``"0.061 C/W"``.

NVIDIA's own per-SKU threshold file mixes units (one entry is 1000x off), so every figure in a
profile carries its unit and is converted to the canonical unit of its field when it loads; a
figure in the wrong dimension is a load error, not a silent 1000x.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

MIB = 1 << 20  # bytes in a MiB: profiles give memory in MiB, the device API counts bytes
GIB = 1 << 30

# unit -> (canonical unit, factor to canonical)
_UNITS: dict[str, tuple[str, float]] = {
    "W": ("W", 1.0),
    "mW": ("W", 1e-3),
    "kW": ("W", 1e3),
    "C": ("C", 1.0),
    "C/W": ("C/W", 1.0),
    "mC/W": ("C/W", 1e-3),
    "s": ("s", 1.0),
    "ms": ("s", 1e-3),
    "min": ("s", 60.0),
    "h": ("s", 3600.0),
    "MHz": ("MHz", 1.0),
    "GHz": ("MHz", 1e3),
    "RPM": ("RPM", 1.0),
    "%": ("%", 1.0),
    "ratio": ("%", 100.0),
    "TFLOPS": ("TFLOPS", 1.0),
    "GFLOPS": ("TFLOPS", 1e-3),
    "MiB": ("MiB", 1.0),
    "GiB": ("MiB", 1024.0),
    "GB/s": ("GB/s", 1.0),
    "MB/s": ("GB/s", 1e-3),
    "/min": ("/min", 1.0),
    "/h": ("/min", 1.0 / 60.0),
    "count": ("count", 1.0),
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S+)\s*$")


def parse_quantity(text: Any, canonical: str) -> float:
    """``"700 W"`` -> 700.0 for canonical ``"W"``; raises ValueError naming the problem."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"expected a quantity with a unit in {canonical} (e.g. \"1 {canonical}\"), got {text!r}")
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"expected '<number> <unit>', got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} in {text!r}")
    canon, factor = _UNITS[unit]
    if canon != canonical:
        raise ValueError(f"{text!r} is in {canon}, this field is in {canonical}")
    return value * factor


def Q(canonical: str) -> Any:  # noqa: N802 - reads as a type
    """A pydantic field type: a float in ``canonical`` units, given in the profile with a unit."""
    return Annotated[float, BeforeValidator(lambda v: parse_quantity(v, canonical))]


Watts = Q("W")
Celsius = Q("C")
CPerW = Q("C/W")
Seconds = Q("s")
MHz = Q("MHz")
RPM = Q("RPM")
Percent = Q("%")
TFLOPS = Q("TFLOPS")
MiB = Q("MiB")
GBps = Q("GB/s")
PerMinute = Q("/min")
Count = Q("count")
