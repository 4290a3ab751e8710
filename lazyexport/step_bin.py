"""Binning: each window of ``factor`` pixels per axis becomes one pixel (``--bin z=2,y=4,x=4``,
``ExportSettings(bin={"z": 2, "y": 4, "x": 4}, bin_method="mean")``).

Windows start at the cutout's first pixel; the last window along an axis covers only the real
pixels left (as OME-Zarr pyramid levels do): the output has ``ceil(n / factor)`` pixels. The
reduction is the pyramid's (:func:`lazyexport.formats.pyramid.downsample`, one reducer for
both): ``mean`` (integers rounded half to even and clipped to their type, floats in their
type, accumulated in float64), ``max``, ``min``, ``mode`` (the most frequent value of the
window, ties to the smaller: for labels) and ``nearest`` (the window's first pixel). The dtype
is the input's. The mean of a bool mask is its majority: True where more than half the window
is (the fraction rounded half to even, as integers are; a tie is False), not the "any" a float
mean stored as bool would be (the pyramid's ``downsample="mean"`` keeps that).

Invariants: an output region needs exactly its windows (``factor`` times the region per axis,
cut at the input's end), so a block of the output never shares a window with another block;
the lazy result (:meth:`Bin.lazy`) applies the same :meth:`Bin.apply` to whole windows, so both
paths give the same values; a binned pixel spans ``factor`` input pixels (:meth:`Bin.scale`),
so pixel sizes multiply by the factors, and its centre lies ``(factor - 1) / 2`` input pixels
after its window's first (``nearest``: on it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .errors import SettingsError
from .formats.pyramid import downsample
from .step_segment import label_names
from .steps import Axes, Cutout, Pipeline, Region, Shape, Step

BIN_METHODS = ("mean", "max", "min", "mode", "nearest")
LABEL_METHODS = ("mode", "nearest", "max", "min")  # each binned value is one of its window


class Bin(Step):
    """Binning of the axes ``in_axes`` by ``factors`` (by axis name; others: 1) with ``method``
    (see the module's docstring)."""

    kind = "general"

    def __init__(self, in_axes: Sequence[str], factors: Mapping[str, int], method: str = "mean"):
        self.in_axes: Axes = tuple(in_axes)
        self.factors = tuple(int(factors.get(a, 1)) for a in self.in_axes)
        self.method = method

    @property
    def keeps_labels(self) -> bool:
        """Whether a label image stays one: every binned value is a value of its window (all
        methods but ``mean``; :func:`lazyexport.step_segment.label_names` reads it)."""
        return self.method in LABEL_METHODS

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(math.ceil(n / f) for n, f in zip(in_shape, self.factors))

    def scale(self, in_shape: Shape) -> tuple[float, ...]:
        return tuple(float(f) for f in self.factors)

    def origin(self, in_shape: Shape) -> tuple[float, ...]:
        # a binned pixel's centre: its window's (nearest: the window's first pixel)
        return tuple(0.0 if self.method == "nearest" else (f - 1) / 2 for f in self.factors)

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        return tuple(
            slice(s.start * f, min(s.stop * f, n))
            for s, f, n in zip(out_region, self.factors, in_shape)
        )

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        if block.dtype.kind == "b" and self.method == "mean":  # the majority (0/1 rounded)
            return downsample(block.view(np.uint8), self.factors, "mean").astype(bool)
        return downsample(block, self.factors, self.method)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        # the default: one task per output chunk over its whole windows (dask's coarsen with
        # trim_excess=False would pad the edge windows, not cut them short)
        return super().lazy(arr)

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        n, size = math.prod(in_shape), np.dtype(in_dtype).itemsize
        window = math.prod(self.factors)
        if self.method == "nearest" or window == 1:
            return 0
        # the mean's float64 sums (maxima and minima: their result); the mode's reordered and
        # sorted copies, its counts (int16 per pixel and window pixel) and comparisons
        if self.method == "mean":
            return n // window * 8
        if self.method == "mode":
            return 2 * n * size + n * 2 * 2 + n
        return 0

    def describe(self) -> str:
        shown = ",".join(f"{a}={f}" for a, f in zip(self.in_axes, self.factors) if f != 1)
        return f"bin {shown or 'nothing'} ({self.method})"


def parse_bin(text: str) -> dict[str, Any]:
    """``"z=2,y=4,x=4[:method]"`` -> the settings fields ``bin`` and ``bin_method``."""
    factors, _, method = str(text).partition(":")
    found: dict[str, Any] = {}
    for part in factors.split(","):
        axis, eq, value = part.partition("=")
        if not eq or not axis.strip():
            raise SettingsError(f"cannot read bin {text!r}; write e.g. z=2,y=4,x=4 or y=2,x=2:max")
        _once(axis.strip(), found)
        found[axis.strip()] = value.strip()
    return {"bin": found, "bin_method": method.strip() or None}


def _once(axis: str, found: Mapping[str, Any]) -> None:
    """Refuse an axis given twice (in any case)."""
    if axis.lower() in (a.lower() for a in found):
        raise SettingsError(f"bin gives axis {axis.lower()!r} twice: give each axis one factor")


def _factor(axis: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not (isinstance(value, int) or text.isdigit()):
        raise SettingsError(f"bin factor of {axis!r} must be a whole number, got {value!r}")
    if int(text) < 1:
        raise SettingsError(f"bin factor of {axis!r} must be 1 or more, got {value!r}")
    return int(text)


def check_bin(settings: Any) -> None:
    """Normalize ``bin`` to ``{axis letter: factor}`` and check ``bin_method``."""
    given, method = settings.bin, settings.bin_method
    if given is None:
        if method is not None:
            raise SettingsError("bin_method needs bin (the factors per axis)")
        return
    if isinstance(given, str):
        given = parse_bin(given)["bin"]
    if not isinstance(given, Mapping) or not given:
        raise SettingsError(f"bin must map axis letters to factors, e.g. {{'z': 2}}, got {given!r}")
    factors: dict[str, int] = {}
    for axis, value in given.items():
        letter = str(axis).strip().lower()
        if len(letter) != 1 or not letter.isalpha() or not letter.isascii():
            raise SettingsError(f"bin names {axis!r}, not an axis letter like z, y or x")
        _once(letter, factors)
        factors[letter] = _factor(letter, value)
    if method is not None and method not in BIN_METHODS:
        raise SettingsError(f"bin_method must be one of {', '.join(BIN_METHODS)}, got {method!r}")
    object.__setattr__(settings, "bin", factors)


def build_bin(settings: Any, found: Pipeline, src: xr.DataArray) -> Bin:
    """The binning step of ``settings`` on the pipeline so far; refuses axes it lacks, and a
    mean of a label image (a label step before it): without a method, labels take the mode."""
    before = _steps_before(found)
    missing = [a for a in settings.bin if a not in found.axes]
    if missing:
        data = f"the data after {before}" if before else "the source"
        raise SettingsError(
            f"bin names axis {', '.join(missing)}, which {data} (axes "
            f"{''.join(found.axes)!r}) does not have"
        )
    labels = label_names(found.steps) is not None
    if labels and settings.bin_method == "mean":
        raise SettingsError(
            f"bin_method mean after {before} would average labels into labels that do not exist: "
            f"use {', '.join(LABEL_METHODS)} (default: mode)"
        )
    return Bin(found.axes, settings.bin, settings.bin_method or ("mode" if labels else "mean"))


def _steps_before(found: Pipeline) -> str:
    """The names of the pipeline's steps after the cutout ("" for none), e.g. "segment"."""
    return ", ".join(s.describe().split(" ")[0] for s in found.steps if not isinstance(s, Cutout))


# the binning's lazyexport.step_settings.StepSetting (that module makes it: it imports this one)
BIN: dict[str, Any] = dict(
    fields=("bin", "bin_method"),
    check=check_bin,
    build=build_bin,
    parse=parse_bin,
    metavar="AXIS=N,...[:METHOD]",
    help="bin each window of N pixels per axis to one, e.g. z=2,y=4,x=4 (method: mean (default), "
    "max, min, mode for labels, nearest); pixel sizes multiply by the factors",
)
