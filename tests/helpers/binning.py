"""Binning by numpy alone, independent of lazyexport's reducer (``helpers.binning``): the
reference the binning tests compare exports with (docs/usage.md, "Steps")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def windows(n: int, f: int) -> np.ndarray:
    return np.arange(0, n, f)


def reference(cut: np.ndarray, factors: tuple[int, ...], method: str) -> np.ndarray:
    """The binned ``cut`` by numpy alone: reduceat along each axis (windows cut short at the
    end), a loop for the mode."""
    if method == "nearest":
        return cut[tuple(slice(None, None, f) for f in factors)]
    if method == "mode":
        out = np.empty(tuple(math.ceil(n / f) for n, f in zip(cut.shape, factors)), cut.dtype)
        for index in np.ndindex(*out.shape):
            window = cut[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))]
            values, counts = np.unique(window, return_counts=True)
            out[index] = values[np.argmax(counts)]  # ties: the smallest (unique sorts)
        return out
    reduce = {"mean": np.add, "max": np.maximum, "min": np.minimum}[method]
    data: Any = cut.astype(np.float64) if method == "mean" else cut
    for axis, f in enumerate(factors):
        data = reduce.reduceat(data, windows(cut.shape[axis], f), axis=axis)
    if method != "mean":
        return data
    counted: Any = np.ones(data.shape)
    for axis, f in enumerate(factors):
        n = cut.shape[axis]
        lengths = np.minimum(windows(n, f) + f, n) - windows(n, f)
        counted = counted * lengths.reshape([-1 if i == axis else 1 for i in range(cut.ndim)])
    mean = data / counted
    if cut.dtype.kind == "f":
        return mean.astype(cut.dtype)
    info = np.iinfo(cut.dtype)
    return np.clip(np.round(mean), info.min, info.max).astype(cut.dtype)
