"""ilastik's headless export flags as aliases of lazyexport's (docs/usage.md, "Coming from
ilastik").

``lazyexport export`` accepts ``--output_format``, ``--output_filename_format``,
``--output_internal_path``, ``--cutout_subregion``, ``--export_dtype``, ``--export_drange``,
``--pipeline_result_drange``, ``--output_axis_order``, ``--input_axes``, ``--raw_data`` and
``--headless`` with ilastik's value syntax. The simple ones are extra names of lazyexport's own
options; this module translates the values whose syntax differs: format names, the positional
cutout (one tuple of starts and one of stops, in the source's axis order, ``None`` for "from the
start" / "to the end") and the data ranges.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from .errors import SettingsError

# ilastik's --output_format names -> (lazyexport format, settings that make the same files)
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "hdf5": ("hdf5", {"compression": "none"}),
    "compressed hdf5": ("hdf5", {"compression": "gzip"}),
    "numpy": ("npy", {}),
    "tif": ("tiff", {}),
    "tiff": ("tiff", {}),
    "multipage tiff": ("tiff", {}),
    "tif sequence": ("tiff-sequence", {}),
    "tiff sequence": ("tiff-sequence", {}),
    "png sequence": ("png-sequence", {}),
    "n5": ("n5", {"compression": "raw"}),
    "compressed n5": ("n5", {"compression": "gzip"}),
    "single-scale ome-zarr": ("ome-zarr", {"levels": 1}),
    "multi-scale ome-zarr": ("ome-zarr", {}),
}


def output_format(name: str) -> tuple[str, dict[str, Any]]:
    """lazyexport's format and settings for ilastik's ``--output_format`` ``name``."""
    found = FORMATS.get(name.strip().lower())
    if found is None:
        known = ", ".join(f"'{n}'" for n in FORMATS)
        raise SettingsError(
            f"--output_format {name!r} has no lazyexport equivalent (ilastik names it knows: "
            f"{known}); or name a lazyexport format with --format"
        )
    return found


def _literal(text: str, option: str, example: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise SettingsError(f"cannot read {option} {text!r}; write e.g. {example}") from None


def _bound(value: Any, option: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise SettingsError(f"{option} holds {value!r}; each bound is a whole number or None")


def cutout_roi(
    text: str, axes: Sequence[str], shape: Sequence[int], notes: list[str] | None = None
) -> dict[str, tuple[int, int]]:
    """``--cutout_subregion`` (``[(start, ...), (stop, ...)]`` in the source's axis order) as a
    ROI by axis, read as ilastik reads it: ``None`` (and a stop of 0) is the axis's edge, and
    bounds beyond the data are clipped to it (a note in ``notes`` says so). A tuple one longer
    than the source's axes gives the channel an ilastik result always has: for a source without
    ``c`` it must start at the (single) channel."""
    example = "[(None,0,0),(None,100,200)]"
    value = _literal(text, "--cutout_subregion", example)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (list, tuple)) for v in value)
        or len(value[0]) != len(value[1])
    ):
        raise SettingsError(
            f"--cutout_subregion is two tuples of equal length (starts, stops), e.g. {example}; "
            f"got {text!r}"
        )
    starts = [_bound(v, "--cutout_subregion") for v in value[0]]
    stops = [_bound(v, "--cutout_subregion") for v in value[1]]
    axes = list(axes)
    axes, shape = list(axes), list(shape)
    channel = len(starts) == len(axes) + 1 and "c" not in axes  # ilastik's added channel
    if channel:
        axes, shape = [*axes, "c"], [*shape, 1]
    if len(starts) != len(axes):
        raise SettingsError(
            f"--cutout_subregion has {len(starts)} bounds per tuple, but the source's axes are "
            f"{''.join(axes)!r} ({len(axes)})"
        )
    roi: dict[str, tuple[int, int]] = {}
    clipped = []
    for a, n, lo, hi in zip(axes, shape, starts, stops):
        lo, hi = lo or 0, hi or n  # as ilastik reads them: None and a stop of 0 are the edge
        if lo < 0 or hi > n:
            clipped.append(f"{a}={lo}:{hi} to {a}={max(lo, 0)}:{min(hi, n)}")
        lo, hi = max(lo, 0), min(hi, n)
        if lo >= hi:
            which = "the source's single channel" if channel and a == "c" else f"axis {a}"
            raise SettingsError(f"--cutout_subregion selects nothing of {which} ({lo}:{hi} of {n})")
        roi[a] = (lo, hi)
    if clipped and notes is not None:
        notes.append(
            f"--cutout_subregion clipped to the data, as ilastik does: {', '.join(clipped)}"
        )
    if channel:
        del roi["c"]
    return roi


def drange(text: str, option: str) -> tuple[float, float]:
    """``--export_drange`` / ``--pipeline_result_drange``: ``(min, max)``."""
    value = _literal(text, option, "(0,255)")
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise SettingsError(f"{option} is (min, max), e.g. (0,255); got {text!r}")
    return float(value[0]), float(value[1])


def renormalize(
    export: str | None, pipeline: str | None
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The renormalization ``--pipeline_result_drange`` -> ``--export_drange`` (None: none).
    ilastik refuses an export range without the pipeline's, and so does lazyexport."""
    if export is None:
        return None
    if pipeline is None:
        raise SettingsError(
            "--export_drange needs --pipeline_result_drange (the input range), as in ilastik; "
            "or --renormalize with p0,p100 (the data's min/max) or percentiles as the input range"
        )
    return drange(pipeline, "--pipeline_result_drange"), drange(export, "--export_drange")
