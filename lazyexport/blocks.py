"""Block tasks: what one task of an export computes, piece by piece.

A plan's output is cut into a grid of blocks (:class:`BlockGrid`); one task computes one block
and hands it to the writer. :class:`BlockSource` computes a block: it reads the block's source
region in *pieces* of whole source read units (each read unit is decoded by one task, once),
applies the plan's transformations (:func:`lazyexport.plan.steps`, the same graph operations
as the lazy result) to each piece in sub-slabs of a few MiB, and assembles the block in the
output dtype. What that holds at most is what :mod:`lazyexport.cost` projects.

Both are picklable, so tasks run on threads, processes or distributed workers alike.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
from dask.core import flatten
from dask.core import get as dask_get
from dask.optimization import cull
import numpy as np
import xarray as xr

from .cost import scratch_bytes
from .plan import read_model, read_through, steps

Index = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """Where the blocks of an output lie: per axis, the edges 0, ..., length."""

    edges: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return math.prod(len(e) - 1 for e in self.edges)

    def indices(self) -> Iterator[Index]:
        """Every block's index, in C order, generated lazily (a grid may hold millions)."""
        return itertools.product(*(range(len(e) - 1) for e in self.edges))

    def region(self, index: Index) -> tuple[slice, ...]:
        return tuple(slice(e[i], e[i + 1]) for e, i in zip(self.edges, index))

    def size(self, index: Index) -> int:
        """Elements in block ``index``."""
        return math.prod(e[i + 1] - e[i] for e, i in zip(self.edges, index))


def _split(start: int, stop: int, offset: int, bounds: tuple[int, ...] | None, longest: int) -> list[tuple[int, int]]:
    """``[start, stop)`` (output coordinates; the source's are ``+ offset``) cut at the source's
    read-unit ``bounds`` into parts of whole read units, grouped up to ``longest`` (a read unit
    longer than that is one part); without bounds, into parts of ``longest``."""
    longest = max(longest, 1)
    if bounds is None:
        return [(a, min(a + longest, stop)) for a in range(start, stop, longest)]
    inside = bounds[bisect.bisect_right(bounds, start + offset):bisect.bisect_left(bounds, stop + offset)]
    cuts = [b - offset for b in inside]
    parts: list[tuple[int, int]] = []
    for a, b in zip([start, *cuts], [*cuts, stop]):
        if parts and b - parts[-1][0] <= longest:
            parts[-1] = (parts[-1][0], b)
        else:
            parts.append((a, b))
    return parts


class BlockSource:
    """Computes blocks of a plan's result from its source (see the module's docstring)."""

    def __init__(self, plan: Any):
        src = plan.source
        self.reader = read_through(src)
        self.data = src.data if self.reader is None else None     # a dask graph, computed per piece
        self.dims = tuple(str(d) for d in src.dims)
        self.dtype = src.dtype
        self.start = {str(d): plan.roi[d][0] for d in src.dims}
        self.axes = plan.axes
        self.out_dtype = plan.dtype
        self.settings, self.renorm, self.order = plan.settings, plan.renormalize, plan.order
        _, bounds = read_model(src)
        self.bounds = {a: bounds.get(a) for a in self.axes}
        piece = dict(zip([*self.axes, *(d for d in self.dims if d not in self.axes)], plan.costs.piece))
        self.piece = {a: piece.get(a, 1) for a in self.axes}
        self.subslab = scratch_bytes(plan.memory_limit)[1]

    def compute(self, region: tuple[slice, ...]) -> np.ndarray:
        """The block at ``region`` (output coordinates), in the output dtype, C-contiguous."""
        shape = tuple(s.stop - s.start for s in region)
        out = np.empty(shape, dtype=self.out_dtype)
        per_axis = []
        for axis, s in zip(self.axes, region):
            offset = self.start.get(axis, 0)
            if axis in self.start:
                per_axis.append(_split(s.start, s.stop, offset, self.bounds[axis], self.piece[axis]))
            else:
                per_axis.append([(s.start, s.stop)])
        for parts in itertools.product(*per_axis):
            where = dict(zip(self.axes, parts))
            key = tuple(slice(self.start[d] + where[d][0], self.start[d] + where[d][1]) if d in where
                        else slice(self.start[d], self.start[d] + 1) for d in self.dims)
            target = out[tuple(slice(a - s.start, b - s.start) for (a, b), s in zip(parts, region))]
            self._fill(self._read(key), target)
        return out

    def _read(self, key: tuple[slice, ...]) -> np.ndarray:
        if self.reader is None:
            data = _compute(self.data[key])
        else:
            data = np.asarray(self.reader[key])
        if data.dtype != self.dtype or data.dtype.type is not self.dtype.type:
            data = data.view(self.dtype)
        return data

    def _fill(self, data: np.ndarray, target: np.ndarray) -> None:
        """Transform the source piece ``data`` into ``target`` (a view of the block), a sub-slab
        at a time."""
        piece = xr.DataArray(da.from_array(_Held(data), chunks=_subslabs(data.shape, data.dtype.itemsize, self.subslab),
                                           asarray=False, name=False, meta=data[:0]), dims=self.dims)
        result = steps(piece, self.settings, self.renorm, self.order)
        da.store(result.data, target, lock=False, scheduler="synchronous")


class _Held:
    """A numpy array seen through ``__getitem__`` only: ``da.from_array`` copies a numpy array
    chunk by chunk when the graph is made (a whole piece more in memory); this is sliced
    (views) as the sub-slabs are computed."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim

    def __getitem__(self, key) -> np.ndarray:
        return self.array[key]


def _compute(arr: da.Array) -> np.ndarray:
    """``arr`` computed chunk by chunk in this thread: a single chunk as dask returns it (no
    final copy, unlike ``compute()``), several copied one at a time into the result (no list
    of all of them joined at the end)."""
    (arr,) = dask.optimize(arr)
    graph = dict(arr.__dask_graph__())
    keys = arr.__dask_keys__()
    grid = [len(c) for c in arr.chunks]
    if math.prod(grid) == 1:
        return np.asarray(dask_get(graph, [next(iter(flatten(keys)))])[0])
    out = np.empty(arr.shape, dtype=arr.dtype)
    starts = [np.cumsum((0, *c)) for c in arr.chunks]
    for index in itertools.product(*(range(n) for n in grid)):
        key = keys
        for i in index:
            key = key[i]
        where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index))
        needed, _ = cull(graph, [key])
        out[where] = dask_get(needed, [key])[0]
    return out


def _subslabs(shape: tuple[int, ...], itemsize: int, limit: int) -> tuple[int, ...]:
    """Chunks of at most ``limit`` bytes, cut along the outer axes first."""
    chunks = list(shape)
    for i in range(len(shape)):
        inner = math.prod(shape[i + 1:]) * itemsize
        if inner >= limit:
            chunks[i] = 1
            continue
        chunks[i] = max(1, min(shape[i], limit // max(inner, 1)))
        break
    return tuple(max(c, 1) for c in chunks)
