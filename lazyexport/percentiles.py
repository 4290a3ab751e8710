"""Percentiles of the data inside the cutout, for ``renormalize=(("p0.1", "p99.9"), ...)``.

Computed from a histogram (``dask.array.histogram``: one pass over the cutout's chunks, counts
summed in a tree, so memory is bounded by the chunks in flight and the counts, whatever the
volume), then read off as :func:`numpy.percentile` does by default (linear interpolation between
the two nearest order statistics, NaNs left out as :func:`numpy.nanpercentile` does):

- integer and bool data of up to 16 bits: one bin per possible value, so the result is
  **exact**;
- other data (floats, wider integers): a first pass finds the finite min/max, the second counts
  :data:`BINS` equal bins between them, and an order statistic is placed within its bin assuming
  the values spread evenly there: **approximate**, off by at most one bin width
  ((max - min) / 65536). Infinite values are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np

from .errors import SettingsError

BINS = 2**16


def percentiles(data: da.Array, qs: Sequence[float]) -> tuple[list[float], float]:
    """The ``qs`` percentiles (0..100) of ``data``; and the largest error they may have (0:
    exact)."""
    dtype = np.dtype(data.dtype)
    if dtype.kind in "biu" and dtype.itemsize <= 2:
        if dtype.kind == "b":
            lo, hi = 0, 1
        else:
            info = np.iinfo(dtype)
            lo, hi = int(info.min), int(info.max)
        counts = da.histogram(data, bins=hi - lo + 1, range=(lo - 0.5, hi + 0.5))[0]
        (counts,) = dask.compute(counts)
        return [_from_counts(counts, q, lo - 0.5, 1.0, exact=True) for q in qs], 0.0
    finite = da.where(da.isfinite(data), data, np.nan) if dtype.kind == "f" else data
    low, high = (float(v) for v in dask.compute(da.nanmin(finite), da.nanmax(finite)))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SettingsError(
            "cannot renormalize by percentiles: the data inside the ROI has no finite values"
        )
    if low == high:
        return [low for _ in qs], 0.0
    width = (high - low) / BINS
    counts = da.histogram(data, bins=BINS, range=(low, high))[0]
    (counts,) = dask.compute(counts)
    return [_from_counts(counts, q, low, width, exact=False) for q in qs], width


def _from_counts(counts: np.ndarray, q: float, start: float, width: float, exact: bool) -> float:
    """numpy's linear-interpolation percentile from histogram ``counts`` of bins ``width`` wide
    from ``start``."""
    total = int(counts.sum())
    if total == 0:
        raise SettingsError(
            "cannot renormalize by percentiles: the data inside the ROI has no finite values"
        )
    cumulative = np.cumsum(counts)
    rank = (total - 1) * q / 100.0
    below = math.floor(rank)
    value = _order_statistic(cumulative, counts, below, start, width, exact)
    if rank == below:
        return value
    above = _order_statistic(cumulative, counts, below + 1, start, width, exact)
    return value + (rank - below) * (above - value)


def _order_statistic(
    cumulative: np.ndarray, counts: np.ndarray, k: int, start: float, width: float, exact: bool
) -> float:
    """The value of the ``k``-th smallest (0-based) element."""
    b = int(np.searchsorted(cumulative, k, side="right"))
    if exact:  # one value per bin: its centre
        return start + (b + 0.5) * width
    before = int(cumulative[b - 1]) if b else 0
    return start + (b + (k - before + 0.5) / int(counts[b])) * width
