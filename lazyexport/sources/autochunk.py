"""The dask blocks a file source is read in, computed without importing dask.

A source's dask array is cut into whole multiples of the file's own chunks, about a target size
each: what dask's ``normalize_chunks("auto", shape, limit=..., dtype=...,
previous_chunks=native)`` gives (dask's documented "auto" chunking that grows or shrinks the
previous chunks, with its default ``array.chunk-size-tolerance`` of 1.25). :func:`auto_chunks`
computes the same chunks, so the export path (which builds the dask array from them) and
``lazyexport info`` (which shows them from metadata alone, without importing dask) agree; the
test ``tests/test_info_fast.py`` compares them with dask's over random shapes, chunk shapes and
item sizes.

Invariants: pure arithmetic, nothing is read; the chunks of an axis add up to its length; the
arithmetic is done in the order dask does it, so the floating-point roundings are the same.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

# dask's default ``array.chunk-size-tolerance``: how far a grown block may exceed its share
TOLERANCE = 1.25

Chunks = tuple[tuple[int, ...], ...]


def auto_chunks(
    shape: Sequence[int], itemsize: int, native: Sequence[int] | None, limit: int
) -> Chunks:
    """The chunks per axis of an array of ``shape`` and ``itemsize``-byte items whose file is
    chunked as ``native`` (None: not chunked), blocks of about ``limit`` bytes."""
    shape = tuple(int(s) for s in shape)
    limit = max(1, int(limit))
    if not native or not shape:
        return _unchunked(shape, itemsize, limit)
    return _grown(shape, itemsize, [_regular(s, int(c)) for s, c in zip(shape, native)], limit)


def _regular(length: int, chunk: int) -> tuple[int, ...]:
    """``length`` cut into chunks of ``chunk`` (the last one shorter)."""
    if length == 0:
        return (0,)
    full, rest = divmod(length, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


def _round_to(size: float, unit: int) -> float:
    """``size`` as a whole multiple of ``unit`` where it is larger, else whole (at least 1)."""
    return max(1, int(size)) if size <= unit else size // unit * unit


def _as_chunks(shape: tuple[int, ...], sizes: dict) -> Chunks:
    return tuple(
        sizes[a] if isinstance(sizes[a], tuple) else _regular(n, int(sizes[a]))
        for a, n in enumerate(shape)
    )


def _unchunked(shape: tuple[int, ...], itemsize: int, limit: int) -> Chunks:
    """Blocks about as long on every axis (a whole axis where it is shorter than that)."""
    whole: dict[int, tuple[int, ...]] = {}
    while True:
        free = [a for a in range(len(shape)) if a not in whole]
        if not free:
            return _as_chunks(shape, whole)
        largest = math.prod(max(c) for c in whole.values())
        size = (limit / itemsize / largest) ** (1 / len(free))
        short = [a for a in free if shape[a] < size]
        if not short:
            return _as_chunks(shape, {**whole, **{a: _round_to(size, shape[a]) for a in free}})
        whole.update({a: (shape[a],) for a in short})


def _multiplier(limit: int, itemsize: int, largest: int, sizes: dict) -> float:
    """How much larger the blocks should be than ``sizes`` (by volume)."""
    volume = math.prod(max(s) if isinstance(s, tuple) else s for s in sizes.values() if s)
    return limit / itemsize / largest / volume


def _ideal(previous: tuple[int, ...], length: int) -> int:
    """The chunk length most of ``previous`` have (the axis's length where none is common)."""
    mode, count = max(Counter(previous).items(), key=lambda item: item[1])
    return mode if mode > 1 and count >= len(previous) / 2 else length


def _gathered(previous: tuple[int, ...], proposed: float) -> tuple[int, ...]:
    """Consecutive chunks of ``previous`` joined while a block stays within ``proposed``."""
    out: list[int] = []
    block = 0
    for c in previous:
        if c + block <= proposed:
            block += c
            continue
        if block > 0:
            out.append(block)
        block = c
    if block > 0:
        out.append(block)
    return tuple(out)


def _grown(
    shape: tuple[int, ...], itemsize: int, previous: list[tuple[int, ...]], limit: int
) -> Chunks:
    """The file's chunks grown (or shrunk) by the same factor on every axis that can take it;
    an axis the growth would overrun is taken whole and the others share what is left."""
    free = set(range(len(shape)))
    sizes: dict = {a: float(statistics.median(previous[a])) for a in free}
    largest = 1
    multiplier = _multiplier(limit, itemsize, largest, sizes)
    shrink = multiplier < 1
    result: dict = sizes if shrink else {}  # (shrinking updates the sizes in place)
    ideal = [_ideal(p, n) for p, n in zip(previous, shape)]
    again = True
    while again:
        count, again = len(free), False
        for a in sorted(free):
            proposed = sizes[a] * multiplier ** (1 / count)
            if proposed > shape[a]:  # the whole axis
                free.remove(a)
                del sizes[a]
                largest *= shape[a]
                result[a] = (shape[a],)
                again = True
            elif shrink or max(previous[a]) > proposed * TOLERANCE ** (1 / count):
                result[a] = _round_to(proposed, ideal[a])
                if proposed < 1:
                    again = True
                    free.discard(a)
            else:
                result[a] = _gathered(previous[a], proposed)
        if again or shrink:
            last, multiplier = multiplier, _multiplier(limit, itemsize, largest, sizes)
            again = again or multiplier != last
    return _as_chunks(shape, {a: v or 0 for a, v in result.items()})
