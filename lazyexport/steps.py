"""Steps of the export pipeline: one interface for every transformation, and their composition.

A :class:`Step` maps an input array (its shape, dtype and axes) to an output array. It says
what its output is (:meth:`Step.axes`, :meth:`Step.output_shape`, :meth:`Step.dtype`,
:meth:`Step.scale`), which input region an output region needs (:meth:`Step.source_region`,
halo included), and computes an output region from that input (:meth:`Step.apply`, on numpy
blocks). A :class:`Pipeline` composes steps: shapes, dtypes and axes propagate forward through
every step, a region maps back through every step to a source region, and the same steps run on
numpy blocks (the block tasks, :mod:`lazyexport.blocks`) and on the lazy xarray/dask result
(:meth:`Pipeline.lazy`, ``compute=False`` and previews), so both paths give the same values.

Invariants: regions are tuples of ``slice(start, stop)`` (step 1, inside the array) in the
step's own axis order; :meth:`Step.apply` is given exactly ``source_region(region)`` of its
input and returns exactly ``region`` of its output, C order, in :meth:`Step.dtype`; it leaves
its input unchanged. A step's :attr:`Step.kind` tells the block path what shortcut it may take:

- ``"window"``: the output is a region of the input, values unchanged (the cutout): read it
  where it lies;
- ``"values"``: each output value is a function of the input value at the same place (same
  shape and axes): applied to any piece of a block, in sub-slabs (renormalize, convert);
- ``"axes"``: the output is the input with its axes reordered, length-1 axes dropped or added
  (transpose): applied as a view;
- ``"general"``: anything else (a shape change such as binning, a halo such as smoothing): the
  block path reads ``source_region`` of the block whole and applies the step to it.

The built-in steps are :class:`Cutout`, :class:`Renormalize`, :class:`Convert` and
:class:`Transpose`, over the functions of :mod:`lazyexport.transforms`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .axes import names, parse_axes
from .transforms import converter, cutout, renormalizer, transpose

Shape = tuple[int, ...]
Region = tuple[slice, ...]
Axes = tuple[str, ...]


class Step:
    """One transformation (see the module's docstring). The defaults are those of a step that
    keeps shape, dtype and axes and needs exactly the output region of its input; a step
    overrides what it changes, and always :meth:`apply`."""

    kind: ClassVar[str] = "general"

    def axes(self, in_axes: Axes) -> Axes:
        """The output's axes."""
        return in_axes

    def output_shape(self, in_shape: Shape) -> Shape:
        """The output's shape, given the input's."""
        return in_shape

    def dtype(self, in_dtype: np.dtype) -> np.dtype:
        """The output's dtype, given the input's."""
        return np.dtype(in_dtype)

    def scale(self, in_shape: Shape) -> tuple[float, ...]:
        """Per output axis, how many input pixels one output pixel spans (1: the same size)."""
        return (1.0,) * len(self.output_shape(in_shape))

    def origin(self, in_shape: Shape) -> tuple[float, ...]:
        """Per output axis, where the output's first pixel centre lies, in input pixels from the
        input's first pixel centre (0: on it)."""
        return (0.0,) * len(self.output_shape(in_shape))

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        """The region of the input that ``out_region`` of the output needs (with its halo)."""
        return out_region

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        """``out_region`` of the output, from ``block``: ``source_region(out_region)`` of the
        input."""
        raise NotImplementedError

    def work(self, in_shape: Shape, in_dtype: np.dtype) -> int:
        """Bytes :meth:`apply` holds beyond its input and output for an input block of
        ``in_shape`` (the planner's cost of the step; default 0)."""
        return 0

    def describe(self) -> str:
        """The step in one line (``--plan`` shows it); default: its class's name."""
        return type(self).__name__.lower()

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        """The step on a dask-backed array, computing nothing: by default each output chunk
        (the input's chunks divided by :meth:`scale`) applies :meth:`apply` to its source
        region."""
        return regionwise(self, arr)


class Cutout(Step):
    """The region ``roi`` (absolute ``[start, stop)`` per axis; axes left out: whole)."""

    kind = "window"

    def __init__(self, in_axes: Sequence[str], roi: Mapping[str, tuple[int, int]]):
        self.in_axes = tuple(in_axes)
        self.roi = {a: (int(b[0]), int(b[1])) for a, b in roi.items()}

    def start(self, axis: str) -> int:
        return self.roi[axis][0] if axis in self.roi else 0

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(
            self.roi[a][1] - self.roi[a][0] if a in self.roi else n
            for a, n in zip(self.in_axes, in_shape)
        )

    def origin(self, in_shape: Shape) -> tuple[float, ...]:
        return tuple(float(self.start(a)) for a in self.in_axes)

    def describe(self) -> str:
        return "cutout " + (",".join(f"{a}={b}:{c}" for a, (b, c) in self.roi.items()) or "whole")

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        return tuple(
            slice(s.start + self.start(a), s.stop + self.start(a))
            for a, s in zip(self.in_axes, out_region)
        )

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return block

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        return cutout(arr, self.roi)


class ValueStep(Step):
    """A step that maps each value alone (:attr:`values`, a function of a numpy block that
    leaves it unchanged) to :attr:`out` (see ``kind = "values"``)."""

    kind = "values"

    def __init__(self, values: Callable[[np.ndarray], np.ndarray], out: np.dtype):
        self.values = values
        self.out = np.dtype(out)

    def dtype(self, in_dtype: np.dtype) -> np.dtype:
        return self.out

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return self.values(block)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        return arr.copy(data=da.map_blocks(self.values, arr.data, dtype=self.out))


class Renormalize(ValueStep):
    """Linear map of ``in_range`` to ``out_range`` of a ``in_dtype`` input, converted to ``to``
    in the same pass (:func:`lazyexport.transforms.renormalizer`)."""

    def __init__(
        self,
        in_dtype: np.dtype,
        in_range: tuple[float, float],
        out_range: tuple[float, float],
        to: np.dtype | str | None = None,
    ):
        super().__init__(*renormalizer(in_dtype, in_range, out_range, to))


class Convert(ValueStep):
    """Conversion of a ``in_dtype`` input to ``to`` (:func:`lazyexport.transforms.convert_block`:
    integers rounded half to even and clipped, NaN -> 0)."""

    def __init__(self, in_dtype: np.dtype, to: np.dtype | str):
        values = converter(in_dtype, to)
        super().__init__(values if values is not None else np.asarray, np.dtype(to))


class Transpose(Step):
    """Reorder ``in_axes`` to ``order``: axes of ``order`` the input lacks are added with length
    1, input axes left out (length 1) are dropped (:func:`lazyexport.transforms.transpose`)."""

    kind = "axes"

    def __init__(self, in_axes: Sequence[str], order: str | Sequence[str]):
        self.in_axes = tuple(in_axes)
        self.order = tuple(parse_axes(order))

    def axes(self, in_axes: Axes) -> Axes:
        return self.order

    def describe(self) -> str:
        return f"transpose to {''.join(self.order)}"

    def output_shape(self, in_shape: Shape) -> Shape:
        sizes = dict(zip(self.in_axes, in_shape))
        return tuple(sizes.get(a, 1) for a in self.order)

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        where = dict(zip(self.order, out_region))
        return tuple(where.get(a, slice(0, 1)) for a in self.in_axes)

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return view_axes(block, self.in_axes, self.order)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        return transpose(arr, self.order)


def view_axes(block: np.ndarray, in_axes: Axes, out_axes: Axes) -> np.ndarray:
    """``block`` (axes ``in_axes``) as a view with axes ``out_axes``: input axes the output
    lacks (length 1) dropped, the rest reordered, output axes the input lacks added (length 1)."""
    kept = [a for a in in_axes if a in out_axes]
    drop = tuple(slice(None) if a in kept else 0 for a in in_axes)
    order = [kept.index(a) for a in out_axes if a in kept]
    added = tuple(i for i, a in enumerate(out_axes) if a not in kept)
    return np.expand_dims(block[drop].transpose(order), added)


class Pipeline:
    """Steps applied in order to an input of ``shape``, ``dtype`` and ``axes`` (see the module's
    docstring). :attr:`shapes`, :attr:`dtypes` and :attr:`axes_at` hold the input of each step,
    then the output."""

    def __init__(self, shape: Shape, dtype: np.dtype, axes: Sequence[str], steps: Iterable = ()):
        self.steps: tuple[Step, ...] = ()
        self.shapes: list[Shape] = [tuple(int(n) for n in shape)]
        self.dtypes: list[np.dtype] = [np.dtype(dtype)]
        self.axes_at: list[Axes] = [tuple(axes)]
        for step in steps:
            self.add(step)

    def add(self, step: Step) -> Pipeline:
        """Append ``step`` (its input: this pipeline's output); returns the pipeline."""
        shape, dtype, axes = self.shape, self.dtype, self.axes
        self.shapes.append(tuple(int(n) for n in step.output_shape(shape)))
        self.dtypes.append(np.dtype(step.dtype(dtype)))
        self.axes_at.append(tuple(step.axes(axes)))
        self.steps = (*self.steps, step)
        return self

    @property
    def shape(self) -> Shape:
        return self.shapes[-1]

    @property
    def dtype(self) -> np.dtype:
        return self.dtypes[-1]

    @property
    def axes(self) -> Axes:
        return self.axes_at[-1]

    def scale(self) -> tuple[float, ...]:
        """Per output axis, how many source pixels one output pixel spans (the product of the
        steps' :meth:`Step.scale` along the axis, followed by name)."""
        factors: dict[str, float] = {}
        for step, shape, axes in zip(self.steps, self.shapes, self.axes_at):
            out = step.axes(axes)
            factors = {a: factors.get(a, 1.0) * f for a, f in zip(out, step.scale(shape))}
        return tuple(factors.get(a, 1.0) for a in self.axes)

    def origin(self) -> tuple[float, ...]:
        """Per output axis, where the output's first pixel centre lies in the source, in source
        pixels (the steps' :meth:`Step.origin` times the scale before each, followed by name)."""
        where: dict[str, float] = {}
        factors: dict[str, float] = {}
        for step, shape, axes in zip(self.steps, self.shapes, self.axes_at):
            out = step.axes(axes)
            shift = dict(zip(out, step.origin(shape)))
            where = {a: where.get(a, 0.0) + shift[a] * factors.get(a, 1.0) for a in out}
            factors = {a: factors.get(a, 1.0) * f for a, f in zip(out, step.scale(shape))}
        return tuple(where.get(a, 0.0) for a in self.axes)

    def regions(self, out_region: Region) -> list[Region]:
        """The region of each step's input ``out_region`` of the output needs, then
        ``out_region`` itself."""
        found = [tuple(out_region)]
        for step, shape in zip(reversed(self.steps), reversed(self.shapes[:-1])):
            found.insert(0, tuple(step.source_region(found[0], shape)))
        return found

    def source_region(self, out_region: Region) -> Region:
        """The region of the pipeline's input that ``out_region`` of its output needs."""
        return self.regions(out_region)[0]

    def apply(self, block: np.ndarray, out_region: Region) -> np.ndarray:
        """``out_region`` of the output, from ``block``: :meth:`source_region` of the input."""
        regions = self.regions(out_region)
        for step, shape, region in zip(self.steps, self.shapes, regions[1:]):
            block = step.apply(block, region, shape)
        return block

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        """The steps on the dask-backed ``arr`` (the pipeline's input), computing nothing."""
        for step in self.steps:
            arr = step.lazy(arr)
        return arr

    def piecewise(self) -> bool:
        """Whether the steps are a ``"window"`` (the cutout), then ``"values"`` and ``"axes"``
        steps only: any piece of the window can then be transformed alone, in any order."""
        kinds = [step.kind for step in self.steps]
        return kinds[:1] == ["window"] and set(kinds[1:]) <= {"values", "axes"}

    def values(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The ``"values"`` steps as one function of a numpy block (None: there are none)."""
        found = [s.values for s in self.steps if isinstance(s, ValueStep)]
        if len(found) <= 1:
            return found[0] if found else None
        return functools.partial(_chain, tuple(found))


def _chain(functions: tuple[Callable[[np.ndarray], np.ndarray], ...], x: np.ndarray) -> np.ndarray:
    for f in functions:
        x = f(x)
    return x


def regionwise(step: Step, arr: xr.DataArray) -> xr.DataArray:
    """``step`` on the dask-backed ``arr`` as one task per output chunk, each applying
    :meth:`Step.apply` to its source region (read as one numpy block); output chunks are the
    input's (per axis of the same name) divided by the step's scale, whole where the input has
    no axis of the name. The result keeps ``arr``'s attrs, not its coordinates."""
    in_axes, in_shape = names(arr), tuple(arr.shape)
    out_axes, out_shape = step.axes(in_axes), step.output_shape(in_shape)
    chunk = {a: max(c, default=1) for a, c in zip(in_axes, arr.data.chunks)}
    lengths = [
        max(1, math.ceil(chunk[a] / f)) if a in chunk else n
        for a, n, f in zip(out_axes, out_shape, step.scale(in_shape))
    ]
    edges = [list(range(0, n, c)) + [n] for n, c in zip(out_shape, lengths)]
    dtype = step.dtype(arr.dtype)
    pieces = np.empty(tuple(len(e) - 1 for e in edges), dtype=object)
    for index in np.ndindex(*pieces.shape):
        region = tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index))
        source = arr.data[step.source_region(region, in_shape)]
        task = dask.delayed(step.apply, pure=True)(source, region, in_shape)
        shape = tuple(s.stop - s.start for s in region)
        pieces[index] = da.from_delayed(task, shape, dtype=dtype)
    data = da.block(pieces.tolist()) if pieces.size else da.empty(out_shape, dtype=dtype)
    return xr.DataArray(data, dims=out_axes, attrs=arr.attrs)
