"""Physical pixel sizes and their units, shared by settings, sources and writers.

Units are kept by their UDUNITS name (``micrometer``), as OME-NGFF requires; each format
spells them its own way (ImageJ ``micron``, OME-XML ``µm``, HDF5 ``element_size_um`` in
micrometers), and the tables here are the one place that knows those spellings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .axes import parse_axes
from .errors import SettingsError

DEFAULT_UNIT = "micrometer"

# UDUNITS name -> (OME-XML symbol, size in micrometers)
_UNITS: dict[str, tuple[str, float]] = {
    "angstrom": ("Å", 1e-4),
    "nanometer": ("nm", 1e-3),
    "micrometer": ("µm", 1.0),
    "millimeter": ("mm", 1e3),
    "centimeter": ("cm", 1e4),
    "meter": ("m", 1e6),
}
_ALIASES = {
    "a": "angstrom",
    "å": "angstrom",
    "nm": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "\\u00b5m": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}
SPATIAL_AXES = ("z", "y", "x")


def parse_unit(value: Any) -> str:
    """A unit name or symbol (``um``, ``µm``, ``micron``, ``nanometer``, ...) -> its UDUNITS
    name."""
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text.rstrip("s") if text.rstrip("s") in _UNITS else text)
    if text not in _UNITS:
        raise SettingsError(
            f"unknown unit {value!r}; choose one of {', '.join(_UNITS)} (or um, nm, mm)"
        )
    return text


def unit_symbol(unit: str) -> str:
    """The OME-XML symbol of a UDUNITS name (``micrometer`` -> ``µm``)."""
    return _UNITS[unit][0]


def imagej_unit(unit: str) -> str:
    """ImageJ's spelling: ``micron`` for micrometers (what Fiji shows as µm), else the symbol."""
    return "micron" if unit == "micrometer" else unit_symbol(unit)


def to_micrometers(size: float, unit: str) -> float:
    return size * _UNITS[unit][1]


def axis_pairs(text: str, what: str, example: str) -> list[tuple[str, str]]:
    """``"y=2,x=2um"`` -> ``[("y", "2"), ("x", "2um")]``, stripped, in order (an axis given
    twice stays twice: the caller refuses it); a part without ``=`` is a one-line error naming
    ``what`` and how to write it (``example``)."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, sep, value = part.partition("=")
        if not sep:
            raise SettingsError(f"cannot read {what} part {part!r}; write {example}")
        pairs.append((axis.strip(), value.strip()))
    return pairs


def parse_pixel_size(value: Any) -> dict[str, float]:
    """``{"z": 0.5, "y": 0.1}`` or ``"z=0.5,y=0.1"`` -> positive floats per spatial axis."""
    if isinstance(value, str):
        value = dict(axis_pairs(value, "pixel size", "axis=size, e.g. z=0.5,y=0.1,x=0.1"))
    if not isinstance(value, Mapping):
        raise SettingsError(
            f"pixel size must map axes to sizes, e.g. {{'z': 0.5, 'y': 0.1}}, got {value!r}"
        )
    out: dict[str, float] = {}
    for axis, size in value.items():
        (letter,) = parse_axes(str(axis))
        if letter not in SPATIAL_AXES:
            raise SettingsError(f"pixel size is for the spatial axes z, y, x; got axis {letter!r}")
        try:
            number = float(size)
        except (TypeError, ValueError):
            raise SettingsError(
                f"pixel size for axis {letter!r} must be a number, got {size!r}"
            ) from None
        if not (math.isfinite(number) and number > 0):
            raise SettingsError(f"pixel size for axis {letter!r} must be positive, got {size!r}")
        out[letter] = number
    return out


def source_attrs(
    sizes: Mapping[str, Any], unit: Any = None, default: str | None = DEFAULT_UNIT
) -> dict:
    """``pixel_size``/``unit`` attributes for a source, from sizes a file gives per axis (only
    positive finite spatial sizes kept). A missing or unknown unit means ``default``, the unit
    the format implies; with ``default=None`` the sizes have no unit and ``unit`` is left out.
    No sizes: no attributes (an unknown size stays unknown)."""
    clean = {}
    for axis, size in sizes.items():
        try:
            size = float(size)
        except (TypeError, ValueError):
            continue
        if axis in SPATIAL_AXES and math.isfinite(size) and size > 0:
            clean[axis] = size
    if not clean:
        return {}
    out: dict[str, Any] = {"pixel_size": clean}
    try:
        unit = parse_unit(unit) if unit else default
    except SettingsError:
        unit = default
    if unit:
        out["unit"] = unit
    return out
