"""Segmentation steps: a probability map (one channel per class) becomes a label image.

``segment="argmax:c"`` (:class:`Segment`) gives each pixel 1 + the index of its largest channel
along ``c`` (ties: the first, as :func:`numpy.argmax`), NaN channels left out, 0 where every
channel is NaN; ``threshold="c=1:>0.5"`` (:class:`Threshold`) gives 1 where one channel meets
the condition (``>``, ``>=``, ``<``, ``<=``, compared as numpy compares the array with the
number) and 0 elsewhere (NaN: 0). The channel axis disappears; the labels are ``uint8`` when
they fit (at most 255 labels), else ``uint16`` (by the number of channels; more than 65535
channels are refused). Both are :class:`~lazyexport.step_settings.StepSetting` entries
(:data:`SEGMENT`, :data:`THRESHOLD`) of :mod:`lazyexport.step_settings`.

Invariants: an output region needs the same region of the input with the whole axis (segment)
or the one channel (threshold) along the step's axis; the block path and the lazy path apply the
same function (:meth:`LabelStep.labels`) to blocks holding that whole axis, so both give the
same labels. Channel indices in ``threshold`` are the source's (as ROIs are): the cutout must
keep that channel, and no step before it may rescale the axis (a bin along it is refused). A
label step's result is a label image (:func:`label_names`, which steps with ``keeps_labels``
keep): OME-Zarr pyramids take the mode, and its metadata names the labels. Settings that make
no sense for labels are refused when the settings are made: renormalizing them, converting them
to floats, both steps at once; a ``dtype`` that cannot hold every label is refused when the
export is planned.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .axes import names, parse_axes
from .errors import AxisError, SettingsError
from .steps import Axes, Cutout, Pipeline, Region, Shape, Step

MAX_LABELS = 65535  # uint16
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
THRESHOLD_TEXT = re.compile(
    r"^\s*(?P<axis>[A-Za-z])\s*=\s*(?P<index>\d+)\s*:\s*(?P<op>>=|<=|>|<)\s*(?P<value>\S+)\s*$"
)


def label_dtype(count: int) -> np.dtype:
    """The dtype of ``count`` labels (and 0): uint8 up to 255, else uint16."""
    return np.dtype("uint8" if count <= 255 else "uint16")


class LabelStep(Step):
    """A step whose output is a label image made along one axis of its input (``axis`` of
    ``in_axes``, dropped from the output): labels 1..n named ``names``, 0 for none."""

    kind = "general"

    def __init__(self, in_axes: Sequence[str], axis: str, label_names: Sequence[str]):
        self.in_axes = tuple(in_axes)
        self.axis = axis
        self.at = self.in_axes.index(axis)
        self.names = tuple(label_names)
        self.out = label_dtype(len(self.names))

    def axes(self, in_axes: Axes) -> Axes:
        return tuple(a for a in in_axes if a != self.axis)

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(n for i, n in enumerate(in_shape) if i != self.at)

    def dtype(self, in_dtype: np.dtype) -> np.dtype:
        return self.out

    def along(self, in_shape: Shape) -> slice:
        """The part of the step's axis an output pixel needs."""
        return slice(0, in_shape[self.at])

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        region = list(out_region)
        region.insert(self.at, self.along(in_shape))
        return tuple(region)

    def labels(self, block: np.ndarray) -> np.ndarray:
        """The labels of ``block`` (the input, :meth:`along` the axis), without the axis."""
        raise NotImplementedError

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return self.labels(block)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        data = arr.data[
            tuple(self.along(arr.shape) if i == self.at else slice(None) for i in range(arr.ndim))
        ]
        data = data.rechunk({self.at: -1})
        out = da.map_blocks(self.labels, data, drop_axis=self.at, dtype=self.out)
        return xr.DataArray(out, dims=self.axes(names(arr)), attrs=arr.attrs)


class Segment(LabelStep):
    """1 + the index of the largest channel along ``axis`` (NaN left out; 0: all NaN)."""

    def labels(self, block: np.ndarray) -> np.ndarray:
        return argmax_labels(block, self.at, self.out)

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        n, size = math.prod(in_shape), np.dtype(in_dtype).itemsize
        pixels = n // max(in_shape[self.at], 1)
        if np.dtype(in_dtype).kind != "f":  # the int64 indices, and one plus them
            return 16 * pixels
        # the NaN mask and the copy with NaN as -inf (twice where -inf ties: the mask negated),
        # then per output pixel the indices, the largest values, and two masks
        return n * (2 + size) + pixels * (8 + 8 + size + 2)

    def describe(self) -> str:
        return f"segment argmax:{self.axis} (labels 1..{len(self.names)}, {self.out})"


def argmax_labels(block: np.ndarray, at: int, dtype: np.dtype) -> np.ndarray:
    """1 + the index of the largest value along axis ``at`` (the first of ties; NaN values
    left out), 0 where all are NaN, as ``dtype``."""
    if block.dtype.kind != "f":
        return (block.argmax(axis=at) + 1).astype(dtype)
    nan = np.isnan(block)
    filled = np.where(nan, -np.inf, block)
    index = filled.argmax(axis=at)
    best = np.take_along_axis(filled, np.expand_dims(index, at), axis=at).squeeze(at)
    low = best == -np.inf  # -inf ties with the NaN filled in: the first value that is not NaN
    if low.any():
        index[low] = (~nan).argmax(axis=at)[low]
    out = (index + 1).astype(dtype)
    out[nan.all(axis=at)] = 0
    return out


class Threshold(LabelStep):
    """1 where channel ``index`` along ``axis`` meets ``op value``, else 0 (NaN: 0)."""

    def __init__(
        self, in_axes: Sequence[str], axis: str, index: int, op: str, value: float, name: str
    ):
        super().__init__(in_axes, axis, (name,))
        self.index = index
        self.op = op
        self.value = value

    def along(self, in_shape: Shape) -> slice:
        return slice(self.index, self.index + 1)

    def labels(self, block: np.ndarray) -> np.ndarray:
        return COMPARISONS[self.op](block, self.value).take(0, axis=self.at).astype(self.out)

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        return 2 * math.prod(in_shape)  # the comparison's mask, and the channel taken from it

    def describe(self) -> str:
        return f"threshold {self.names[0]} (a {self.out} mask)"


def label_names(steps: Sequence[Step]) -> tuple[str, ...] | None:
    """The names of labels 1, 2, ... where the steps' result is a label image (a label step and
    after it only steps on values, axes, or ``keeps_labels``), else None."""
    found = None
    for step in steps:
        if isinstance(step, LabelStep):
            found = step.names
        elif step.kind == "general" and not getattr(step, "keeps_labels", False):
            found = None
    return found


# ------------------------------------------------------------------------------------------
# the settings: text, checks, builders


def parse_segment(value: Any) -> str:
    """``"argmax:c"`` (``"argmax"`` alone: along ``c``), normalized."""
    text = value.strip() if isinstance(value, str) else ""
    method, _, axis = text.partition(":")
    if method.strip().lower() != "argmax":
        raise SettingsError(f"segment must be 'argmax:AXIS', e.g. 'argmax:c', got {value!r}")
    letters = parse_axes(axis.strip() or "c")
    if len(letters) != 1:
        raise SettingsError(f"segment names one axis, like 'argmax:c', got {value!r}")
    return f"argmax:{letters[0]}"


def parse_threshold(value: Any) -> tuple[str, int, str, float]:
    """``"c=1:>0.5"`` as (axis, source index, comparison, number)."""
    found = THRESHOLD_TEXT.match(value) if isinstance(value, str) else None
    number = _number(found.group("value")) if found else None
    if found is None or number is None:
        raise SettingsError(
            "threshold must be AXIS=INDEX:OP NUMBER with OP one of >, >=, <, <=, e.g. 'c=1:>0.5', "
            f"got {value!r}"
        )
    return (found.group("axis").lower(), int(found.group("index")), found.group("op"), number)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def threshold_text(axis: str, index: int, op: str, value: float) -> str:
    return f"{axis}={index}:{op}{value!r}"


def check_labels(settings: Any, what: str) -> None:
    """Refuse settings that make no sense for the labels a step makes (``what``: its text)."""
    if settings.renormalize is not None:
        raise SettingsError(
            f"{what} makes labels, and renormalize would change them: drop renormalize "
            "(to rescale the probabilities, export them without the step)"
        )
    if settings.dtype is not None and np.dtype(settings.dtype).kind == "f":
        raise SettingsError(
            f"{what} makes whole-number labels: give an integer dtype (or none), not "
            f"{settings.dtype}"
        )


def check_segment(settings: Any) -> None:
    if settings.segment is None:
        return
    object.__setattr__(settings, "segment", parse_segment(settings.segment))
    if getattr(settings, "threshold", None) is not None:
        raise SettingsError(
            "give segment or threshold, not both: each makes the label image from the channels"
        )
    check_labels(settings, f"segment {settings.segment}")


def check_threshold(settings: Any) -> None:
    if settings.threshold is None:
        return
    text = threshold_text(*parse_threshold(settings.threshold))
    object.__setattr__(settings, "threshold", text)
    check_labels(settings, f"threshold {text}")


def _axis_of(found: Pipeline, src: xr.DataArray, axis: str, what: str) -> int:
    """The index of ``axis`` in the pipeline so far; refuses an axis it lacks, and one an
    earlier step rescaled (binned channels are not the source's)."""
    if axis not in found.axes:
        raise AxisError(
            f"{what}: the data has no axis {axis!r} (the source's axes are {''.join(names(src))!r})"
        )
    at = found.axes.index(axis)
    factor = found.scale()[at]
    if factor != 1:
        raise SettingsError(
            f"{what}: an earlier step made each pixel along {axis!r} span {factor:g} of the "
            f"source's; it needs the source's channels: apply it first (step_order) or do not "
            f"bin {axis!r}"
        )
    return at


def _check_dtype(settings: Any, count: int, what: str) -> None:
    """The settings' dtype must hold every label 0..count."""
    if settings.dtype is None:
        return
    dtype = np.dtype(settings.dtype)
    top = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max)
    if count > top:
        raise SettingsError(
            f"{what} makes labels 0..{count}, more than dtype {dtype} holds (0..{top}): give a "
            "larger integer dtype, or none"
        )


def _channel_names(src: xr.DataArray, axis: str, start: int, stop: int) -> list[str]:
    """The source's names of channels ``start..stop`` along ``axis``, else ``axis=index``."""
    found = src.attrs.get("channel_names") if axis == "c" else None
    if found and len(found) == src.sizes.get(axis):
        return [str(n) for n in found[start:stop]]
    return [f"{axis}={i}" for i in range(start, stop)]


def _start(found: Pipeline, axis: str) -> int:
    cut = found.steps[0] if found.steps else None
    return cut.start(axis) if isinstance(cut, Cutout) and axis in cut.in_axes else 0


def build_segment(settings: Any, found: Pipeline, src: xr.DataArray) -> Segment:
    axis = settings.segment.partition(":")[2]
    what = f"segment {settings.segment}"
    count = found.shape[_axis_of(found, src, axis, what)]
    if count > MAX_LABELS:
        raise SettingsError(
            f"{what}: axis {axis!r} has {count} channels; labels go up to {MAX_LABELS}"
        )
    _check_dtype(settings, count, what)
    start = _start(found, axis)
    return Segment(found.axes, axis, _channel_names(src, axis, start, start + count))


def build_threshold(settings: Any, found: Pipeline, src: xr.DataArray) -> Threshold:
    axis, index, op, value = parse_threshold(settings.threshold)
    what = f"threshold {settings.threshold}"
    at = _axis_of(found, src, axis, what)
    start = _start(found, axis)
    stop = start + found.shape[at]
    if not start <= index < stop:
        raise SettingsError(
            f"{what}: channel {axis}={index} is outside the data, which keeps {axis}={start}:{stop}"
        )
    _check_dtype(settings, 1, what)
    (name,) = _channel_names(src, axis, index, index + 1)
    return Threshold(found.axes, axis, index - start, op, value, f"{name} {op} {value:g}")


# the StepSetting fields (lazyexport.step_settings builds the entries; it imports this module)
SEGMENT: dict[str, Any] = dict(
    fields=("segment",),
    check=check_segment,
    build=build_segment,
    parse=lambda text: {"segment": text},
    metavar="argmax:AXIS",
    help="a label image: 1 + the index of each pixel's largest channel along AXIS, e.g. "
    "argmax:c (0 where all are NaN); the axis disappears",
)
THRESHOLD: dict[str, Any] = dict(
    fields=("threshold",),
    check=check_threshold,
    build=build_threshold,
    parse=lambda text: {"threshold": text},
    metavar="AXIS=INDEX:OPVALUE",
    help="a mask from one channel: 1 where it meets the condition, else 0, e.g. c=1:>0.5 "
    "(OP: >, >=, <, <=); the axis disappears",
)
