"""Percentiles of the data inside the cutout, for ``renormalize=(("p0.1", "p99.9"), ...)``.

Computed from histograms (``dask.array.histogram``: a pass over the cutout's chunks each, counts
summed in a tree, so memory is bounded by the chunks in flight and the counts, whatever the
volume), then read off as :func:`numpy.percentile` does by default (linear interpolation between
the two nearest order statistics, NaNs left out as :func:`numpy.nanpercentile` does):

- integer and bool data whose values span at most :data:`BINS` numbers (every type of up to 16
  bits; wider integers when a first pass finds their min/max that close): one bin per value, so
  the result is **exact**;
- other data (floats, wider integers): a first pass finds the finite min/max, the second counts
  :data:`BINS` equal bins between them (fewer where the type has fewer numbers in that range),
  and a third counts :data:`BINS` equal sub-bins of only the bins that hold the order
  statistics the percentiles need (a few bins, whatever the volume; :func:`_refine`), so far
  outliers, which make the bins wide, do not make the percentiles coarse. An order statistic is
  placed within its sub-bin assuming the values spread evenly there: **approximate**, off by at
  most one sub-bin width, (max - min) / 2**32 (where the type has fewer numbers than
  :data:`BINS` in the range, as float16 may: 1/65536 of a bin, itself a few of the type's
  numbers wide; and never finer than float64's numbers). ``p0`` and ``p100`` are the exact min
  and max. Infinite values are left out.

Memory is bounded in every pass: a block's values, and the counts (one row of :data:`BINS`
per bin refined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np

from .errors import SettingsError

BINS = 2**16

NO_VALUES = "cannot renormalize by percentiles: the data inside the ROI has no finite values"


@dataclass(frozen=True)
class Percentiles:
    """What :func:`percentiles` found: the values, the largest error they may have (0: exact)
    and the histogram they were read from (``counts`` of bins ``width`` wide from ``start``)."""

    values: list[float]
    error: float
    counts: np.ndarray
    start: float
    width: float

    def outside(self, low: float, high: float) -> tuple[int, int]:
        """How many values lie below ``low`` and above ``high``: exact on the exact path (one
        bin per value), else counting the bins wholly outside (a lower bound)."""
        edges = self.start + self.width * np.arange(len(self.counts) + 1)
        if not self.error:  # one value per bin, at its centre
            centres = edges[:-1] + self.width / 2
            return int(self.counts[centres < low].sum()), int(self.counts[centres > high].sum())
        return int(self.counts[edges[1:] <= low].sum()), int(self.counts[edges[:-1] >= high].sum())

    @property
    def total(self) -> int:
        """How many values were counted (NaNs and infinities left out)."""
        return int(self.counts.sum())


def percentiles(data: da.Array, qs: Sequence[float]) -> Percentiles:
    """The ``qs`` percentiles (0..100) of ``data`` (see the module's text for how exact)."""
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        data, dtype = data.astype(np.uint8), np.dtype(np.uint8)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return _exact(data, qs, int(info.min), int(info.max))
    finite = da.where(da.isfinite(data), data, np.nan) if dtype.kind == "f" else data
    low_, high_ = dask.compute(da.nanmin(finite), da.nanmax(finite))
    if dtype.kind in "iu":  # as Python ints: no overflow at the type's limits
        lo_int, hi_int = int(low_), int(high_)
        if hi_int - lo_int < BINS and max(abs(lo_int), abs(hi_int)) < 2**53:
            return _exact(data, qs, lo_int, hi_int)
    low, high = float(low_), float(high_)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SettingsError(NO_VALUES)
    if low == high:
        counts = np.array([int(da.isfinite(data).sum().compute())])
        return Percentiles([low for _ in qs], 0.0, counts, low - 0.5, 1.0)
    if not math.isfinite(high - low):
        raise SettingsError(
            "cannot renormalize by percentiles: the data's range is wider than float64 holds"
        )
    # no more bins than the numbers the type has between low and high: edges must increase
    kind = dtype if dtype.kind == "f" else np.dtype(np.float64)
    step = float(np.spacing(np.array(max(abs(low), abs(high)), dtype=kind)))
    bins = max(1, min(BINS, int((high - low) / step)))
    width = (high - low) / bins
    values64 = finite.astype(np.float64)
    counts = da.histogram(values64, bins=bins, range=(low, high))[0]
    (counts,) = dask.compute(counts)
    # dask's (and numpy's) bin edges: a value v is in bin b when edges[b] <= v < edges[b + 1]
    edges = np.linspace(low, high, num=bins + 1)
    inner = [q for q in qs if 0 < q < 100]  # p0 and p100: the min and max found
    needed = _needed_bins(counts, inner) if inner else []
    fine = _refine(values64, counts, edges, needed)
    values = [_from_counts(counts, q, low, width, exact=False, fine=fine) for q in qs]
    error = max((fine[b].width if b in fine else width for b in needed), default=0.0)
    # p0 and p100 are the min and max found; nothing read off a bin lies outside them
    values = [
        low if q == 0 else high if q == 100 else min(max(v, low), high) for q, v in zip(qs, values)
    ]
    return Percentiles(values, error, counts, low, width)


@dataclass(frozen=True)
class _Fine:
    """Sub-bin ``counts`` of one bin, ``width`` wide from ``start``."""

    counts: np.ndarray
    start: float
    width: float


def _needed_bins(counts: np.ndarray, qs: Sequence[float]) -> list[int]:
    """The bins holding the order statistics the percentiles ``qs`` interpolate between."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    if total == 0:
        raise SettingsError(NO_VALUES)
    ranks = set()
    for q in qs:
        rank = (total - 1) * q / 100.0
        ranks.update({math.floor(rank), min(math.floor(rank) + 1, total - 1)})
    return sorted({int(np.searchsorted(cumulative, k, side="right")) for k in ranks})


def _sub_bins(lo: float, hi: float) -> int:
    """Sub-bins of ``[lo, hi]`` (counted in float64): :data:`BINS`, or fewer where float64 has
    fewer numbers there."""
    step = float(np.spacing(max(abs(lo), abs(hi))))
    return max(1, min(BINS, int((hi - lo) / step)))


def _refine(
    data: da.Array, counts: np.ndarray, edges: np.ndarray, bins: list[int]
) -> dict[int, _Fine]:
    """One more pass over ``data`` (float64), counting sub-bins of only ``bins`` of ``counts``
    (those holding the order statistics the percentiles need; not those as fine as float64's
    numbers already): the sub-bin counts by bin."""
    last = len(counts) - 1
    needed = [b for b in bins if _sub_bins(float(edges[b]), float(edges[b + 1])) > 1]
    if not needed:
        return {}
    bounds = [(float(edges[b]), float(edges[b + 1]), b == last) for b in needed]
    sizes = [_sub_bins(lo, hi) for lo, hi, _ in bounds]

    def count(block: np.ndarray) -> np.ndarray:
        out = np.zeros((len(bounds), BINS), np.int64)
        for i, ((lo, hi, closed), n) in enumerate(zip(bounds, sizes)):
            inside = block[(block >= lo) & ((block <= hi) if closed else (block < hi))]
            out[i, :n] = np.histogram(inside, bins=n, range=(lo, hi))[0]
        return out[None]

    parts = [
        da.from_delayed(dask.delayed(count)(b), shape=(1, len(bounds), BINS), dtype=np.int64)
        for b in data.to_delayed().ravel()
    ]
    (sub,) = dask.compute(da.concatenate(parts).sum(axis=0))
    fine = {}
    for b, (lo, hi, _), n, row in zip(needed, bounds, sizes, sub):
        if int(row.sum()) == int(counts[b]):  # (else keep the bin: never a wrong count)
            fine[b] = _Fine(row[:n], lo, (hi - lo) / n)
    return fine


def _exact(data: da.Array, qs: Sequence[float], lo: int, hi: int) -> Percentiles:
    """One bin per integer value from ``lo`` to ``hi``: exact percentiles."""
    counts = da.histogram(data, bins=hi - lo + 1, range=(lo - 0.5, hi + 0.5))[0]
    (counts,) = dask.compute(counts)
    values = [_from_counts(counts, q, lo - 0.5, 1.0, exact=True) for q in qs]
    return Percentiles(values, 0.0, counts, lo - 0.5, 1.0)


def _from_counts(
    counts: np.ndarray,
    q: float,
    start: float,
    width: float,
    exact: bool,
    fine: dict[int, _Fine] | None = None,
) -> float:
    """numpy's linear-interpolation percentile from histogram ``counts`` of bins ``width`` wide
    from ``start`` (and the sub-bins ``fine`` of some of them)."""
    total = int(counts.sum())
    if total == 0:
        raise SettingsError(NO_VALUES)
    cumulative = np.cumsum(counts)
    rank = (total - 1) * q / 100.0
    below = math.floor(rank)
    value = _order_statistic(cumulative, counts, below, start, width, exact, fine or {})
    if rank == below:
        return value
    above = _order_statistic(cumulative, counts, below + 1, start, width, exact, fine or {})
    return value + (rank - below) * (above - value)


def _order_statistic(
    cumulative: np.ndarray,
    counts: np.ndarray,
    k: int,
    start: float,
    width: float,
    exact: bool,
    fine: dict[int, _Fine],
) -> float:
    """The value of the ``k``-th smallest (0-based) element."""
    b = int(np.searchsorted(cumulative, k, side="right"))
    if exact:  # one value per bin: its centre
        return start + (b + 0.5) * width
    before = int(cumulative[b - 1]) if b else 0
    if b in fine:  # the same within the bin's sub-bins
        sub = fine[b]
        return _order_statistic(
            np.cumsum(sub.counts), sub.counts, k - before, sub.start, sub.width, False, {}
        )
    return start + (b + (k - before + 0.5) / int(counts[b])) * width
