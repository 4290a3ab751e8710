"""Expected label images, computed as a reader would check them (never with lazyexport's code).

Invariant: :func:`expected_argmax` walks the channels one by one with plain comparisons, so it
shares nothing with the vectorized argmax it checks.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

# the comparisons a threshold names
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def expected_argmax(probs: np.ndarray, axis: int) -> np.ndarray:
    """1 + the index of the largest value along ``axis`` that is not NaN (the first of ties),
    0 where all are NaN; channel by channel."""
    best = np.full(np.delete(probs.shape, axis), -np.inf)
    index = np.full(best.shape, -1)
    for k in range(probs.shape[axis]):
        value = np.take(probs, k, axis=axis)
        better = ~np.isnan(value) & ((index < 0) | (value > best))
        best[better], index[better] = value[better], k
    return index + 1
