"""Block tasks: what one task of an export computes, piece by piece.

A plan's output is cut into a grid of blocks (:class:`BlockGrid`); one task computes one block
and hands it to the writer. :class:`BlockSource` computes a block: it reads the block's source
region in *pieces* of whole source read units (each read unit is decoded by one task, once),
applies the plan's transformations to each piece in sub-slabs of a few MiB, in numpy (the steps
of the plan's :class:`~lazyexport.steps.Pipeline`, which the lazy result maps over its blocks;
here without building a graph per piece), and assembles the block in the output dtype. What
that holds at most is what :mod:`lazyexport.cost` projects. This is for a pipeline of a cutout
and steps on values and axes (all there is today, :meth:`~lazyexport.steps.Pipeline.piecewise`);
with any other step (a shape change, a halo) a task reads its block's source region whole and
runs the pipeline on it (not priced by the cost model yet).

Where blocks run as threads of one process (``plan.in_process``), a read unit that straddles
block edges is read whole by the first block that needs it and kept (:class:`SharedReads`)
until every other block that needs it has read its part, so each is decoded once.

Both are picklable (a copy sent to another process or worker keeps nothing shared), so tasks run on
threads, processes or distributed workers alike.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.core import flatten
from dask.core import get as dask_get
from dask.optimization import cull

from .axes import names
from .cost import scratch_bytes
from .plan import read_model, read_through
from .plan_steps import reads_into_block
from .sources.base import read_region
from .steps import Cutout

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


Part = tuple[
    int, int, int, int
]  # [start, stop) of a piece along an axis, and of what is read for it


def _split(
    start: int,
    stop: int,
    offset: int,
    bounds: tuple[int, ...] | None,
    longest: int,
    whole: tuple[int, int] | None = None,
) -> list[Part]:
    """``[start, stop)`` (output coordinates; the source's are ``+ offset``) cut at the source's
    read-unit ``bounds`` into parts of whole read units, grouped up to ``longest`` (a read unit
    longer than that is one part); without bounds, into parts of ``longest``. Each part comes
    with the range read for it: itself, or -- given ``whole``, the cutout's range -- for a read
    unit that reaches past ``[start, stop)`` inside the cutout, the whole unit (within the
    cutout), which other blocks share; such a unit is a part of its own."""
    longest = max(longest, 1)
    if bounds is None:
        return [
            (a, min(a + longest, stop), a, min(a + longest, stop))
            for a in range(start, stop, longest)
        ]
    inside = bounds[
        bisect.bisect_right(bounds, start + offset) : bisect.bisect_left(bounds, stop + offset)
    ]
    cuts = [b - offset for b in inside]
    pairs = list(zip([start, *cuts], [*cuts, stop]))
    parts: list[Part] = []
    for i, (a, b) in enumerate(pairs):
        read = (a, b)
        if whole is not None and (i == 0 or i == len(pairs) - 1):
            at = bisect.bisect_right(bounds, a + offset) - 1
            lo = max(bounds[at] - offset, whole[0])
            hi = min(bounds[at + 1] - offset if at + 1 < len(bounds) else whole[1], whole[1])
            read = (lo, hi)
        if read != (a, b):
            parts.append((a, b, *read))
        elif parts and parts[-1][:2] == parts[-1][2:] and b - parts[-1][0] <= longest:
            parts[-1] = (parts[-1][0], b, parts[-1][0], b)
        else:
            parts.append((a, b, a, b))
    return parts


class BlockSource:
    """Computes blocks of a plan's result from its source (see the module's docstring)."""

    def __init__(self, plan: Any):
        src = plan.source
        self.reader = read_through(src)
        self.data = src.data if self.reader is None else None  # a dask graph, computed per piece
        self.dims = names(src)
        self.name = str(src.attrs.get("source", "the source"))
        self.dtype = src.dtype
        pipeline = plan.pipeline
        cut = pipeline.steps[0]
        self.start = {d: cut.start(d) if isinstance(cut, Cutout) else 0 for d in self.dims}
        self.axes = plan.axes
        self.out_dtype = plan.dtype
        # a pipeline of a cutout, then steps on values and axes only, is computed piece by
        # piece; any other reads each block's source region whole and runs the pipeline on it
        fast = pipeline.piecewise()
        self.pipeline = None if fast else pipeline
        # the values of a piece, as the pipeline's value steps; then its axes are taken to the
        # block's: those kept (in the block's order), and length-1 axes added where the block
        # has axes it lacks
        self.values = pipeline.values()
        kept = [d for d in self.dims if d in self.axes]
        self.drop = tuple(slice(None) if d in kept else 0 for d in self.dims)
        self.order = [kept.index(a) for a in self.axes if a in kept]
        self.added = tuple(i for i, a in enumerate(self.axes) if a not in kept)
        _, bounds = read_model(src)
        self.bounds = {a: bounds.get(a) for a in self.axes}
        piece = dict(
            zip([*self.axes, *(d for d in self.dims if d not in self.axes)], plan.priced.piece)
        )
        self.piece = {a: piece.get(a, 1) for a in self.axes}
        self.subslab = scratch_bytes(plan.memory_limit)[1]
        shape = dict(zip(self.axes, plan.shape))
        self.whole = (
            {a: (0, shape[a]) for a in self.axes}
            if plan.in_process and plan.priced.shared and fast
            else None
        )
        self.edges = dict(zip(self.axes, plan.edges))
        self.shared: SharedReads | None = None
        # a piece the steps leave as it is (same values, dtype and axes) is decoded straight
        # into the block by a reader that reads into a given array: no piece array, no copy
        same = reads_into_block(
            self.reader, pipeline, self.dims, self.axes, self.dtype, self.out_dtype
        )
        self.into = self.reader.read_into if same else None

    def share(self, skip: Iterable[tuple[int, ...]] = ()) -> None:
        """Keep read units that straddle blocks for the blocks that run after (in this
        process), leaving out the blocks in ``skip`` (done by an earlier run)."""
        if self.whole is not None:
            self.shared = SharedReads(self.axes, self.edges, set(skip))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["shared"] = None  # another process has its own blocks: nothing to share
        return state

    def compute(self, region: tuple[slice, ...]) -> np.ndarray:
        """The block at ``region`` (output coordinates), in the output dtype, C-contiguous."""
        if self.pipeline is not None:
            data = self.pipeline.apply(self._read(self.pipeline.source_region(region)), region)
            return np.ascontiguousarray(data, dtype=self.out_dtype)
        shape = tuple(s.stop - s.start for s in region)
        out = np.empty(shape, dtype=self.out_dtype)
        shared = self.shared
        per_axis = []
        for axis, s in zip(self.axes, region):
            offset = self.start.get(axis, 0)
            if axis in self.start:
                whole = self.whole[axis] if shared is not None and self.whole is not None else None
                per_axis.append(
                    _split(s.start, s.stop, offset, self.bounds[axis], self.piece[axis], whole)
                )
            else:
                per_axis.append([(s.start, s.stop, s.start, s.stop)])
        for parts in itertools.product(*per_axis):
            target = out[
                tuple(slice(a - s.start, b - s.start) for (a, b, _, _), s in zip(parts, region))
            ]
            if shared is None or all(p[:2] == p[2:] for p in parts):
                if self.into is None:
                    self._fill(self._read(self._key(parts)), target)
                else:
                    self._read(self._key(parts), into=target)
                continue
            read = tuple((lo, hi) for _, _, lo, hi in parts)
            data = shared.get(read, functools.partial(self._read_whole, parts))
            self._fill(
                data[tuple(slice(a - lo, b - lo) for a, b, lo, _ in self._in_dims(parts))], target
            )
        return out

    def _read_whole(self, parts: tuple[Part, ...]) -> np.ndarray:
        return self._read(self._key(parts, whole=True))

    def _key(self, parts: tuple[Part, ...], whole: bool = False) -> tuple[slice, ...]:
        """The source region of a piece (``whole``: of what is read for it)."""
        where = dict(zip(self.axes, (p[2:] if whole else p[:2] for p in parts)))
        return tuple(
            slice(self.start[d] + where[d][0], self.start[d] + where[d][1])
            if d in where
            else slice(self.start[d], self.start[d] + 1)
            for d in self.dims
        )

    def _in_dims(self, parts: tuple[Part, ...]) -> list[Part]:
        """``parts`` in the source's axis order (a dropped axis: one element)."""
        where = dict(zip(self.axes, parts))
        return [where.get(d, (0, 1, 0, 1)) for d in self.dims]

    def _read(self, key: tuple[slice, ...], into: np.ndarray | None = None) -> np.ndarray:
        """The source region ``key`` (``into``: decoded into that array, through
        :attr:`into`)."""
        if self.data is not None:  # no reader: a dask graph
            data = _compute(self.data[key])
        else:
            into = into if self.into is not None else None
            data = read_region(self.reader, key, self.name, self.dims, into)
        if data.dtype != self.dtype or data.dtype.type is not self.dtype.type:
            data = data.view(self.dtype)
        return data

    def _fill(self, data: np.ndarray, target: np.ndarray) -> None:
        """Transform the source piece ``data`` (unchanged) into ``target`` (a view of the
        block), a sub-slab at a time: the steps' values function, then the piece's axes taken
        to the block's (dropped, reordered, added)."""
        chunks = _subslabs(data.shape, data.dtype.itemsize, self.subslab)
        for sub in itertools.product(*(range(0, n, c) for n, c in zip(data.shape, chunks))):
            where = {
                d: slice(i, min(i + c, n)) for d, i, c, n in zip(self.dims, sub, chunks, data.shape)
            }
            piece = data[tuple(where[d] for d in self.dims)]
            values = piece if self.values is None else self.values(piece)
            target[tuple(where.get(a, slice(None)) for a in self.axes)] = np.expand_dims(
                values[self.drop].transpose(self.order), self.added
            )


class SharedReads:
    """Source regions read for several blocks, each read once: the first block that asks reads
    it (the others wait for it), and it is kept until the last block that needs it has taken
    its part. Blocks are given by their ``edges`` per axis (output coordinates); a region is
    keyed by its range per axis."""

    def __init__(
        self, axes: tuple[str, ...], edges: dict[str, tuple[int, ...]], skip: set[tuple[int, ...]]
    ):
        self.edges = [edges[a] for a in axes]
        self.skip = skip
        self.lock = threading.Lock()
        self.entries: dict[tuple[tuple[int, int], ...], _Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def users(self, read: tuple[tuple[int, int], ...]) -> int:
        """How many blocks (not skipped) overlap the region ``read``."""
        spans = [
            range(bisect.bisect_right(e, lo) - 1, bisect.bisect_left(e, hi))
            for (lo, hi), e in zip(read, self.edges)
        ]
        return sum(1 for index in itertools.product(*spans) if index not in self.skip)

    def get(self, read: tuple[tuple[int, int], ...], load: Callable[[], np.ndarray]) -> np.ndarray:
        with self.lock:
            entry = self.entries.get(read)
            first = entry is None
            if entry is None:
                entry = self.entries[read] = _Entry(self.users(read))
        if first:
            try:
                data = entry.data = load()
            except BaseException:
                with self.lock:
                    self.entries.pop(read, None)  # whoever needs it next reads it again
                raise
            finally:
                entry.ready.set()
        else:
            entry.ready.wait()
            if entry.data is None:  # its reader failed: read it here
                return load()
            data = entry.data
        with self.lock:
            entry.users -= 1
            if entry.users <= 0:
                self.entries.pop(read, None)
        return data


class _Entry:
    def __init__(self, users: int):
        self.users = users
        self.data: np.ndarray | None = None
        self.ready = threading.Event()


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
        key: Any = keys
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
        inner = math.prod(shape[i + 1 :]) * itemsize
        if inner >= limit:
            chunks[i] = 1
            continue
        chunks[i] = max(1, min(shape[i], limit // max(inner, 1)))
        break
    return tuple(max(c, 1) for c in chunks)
