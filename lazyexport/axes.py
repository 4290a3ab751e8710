"""Axis tags: parsing strings like ``"tzyxc"``, validation, guessing by rank, vigra JSON.

Axes are single lower-case letters. ``t z y x c`` have their usual meaning (time, space,
channel); any other letter is accepted as a user-named axis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import AxisError

SPATIAL = "zyx"
CHANNEL = "c"
TIME = "t"

# vigra's AxisInfo type flags, as ilastik writes them in the ``axistags`` attribute.
_TYPE_FLAGS = {"c": 1, "x": 2, "y": 2, "z": 2, "t": 8}
_UNKNOWN_TYPE = 32


def names(arr: Any) -> tuple[str, ...]:
    """The axis tags of a labeled array (an ``xarray.DataArray``'s ``dims``), as strings."""
    return tuple(str(d) for d in arr.dims)


def parse_axes(axes: str | Iterable[str], ndim: int | None = None) -> tuple[str, ...]:
    """Normalise axis tags to a tuple of lower-case letters, checking them.

    ``ndim``, when given, is the rank the tags must match.
    """
    if isinstance(axes, str):
        letters = [a for a in axes.strip()]
    else:
        letters = [str(a) for a in axes]
    out = []
    for letter in letters:
        if len(letter) != 1 or not letter.isalpha() or not letter.isascii():
            raise AxisError(f"axis tags must be single letters like 'tzyxc', got {axes!r}")
        out.append(letter.lower())
    if len(set(out)) != len(out):
        dup = sorted({a for a in out if out.count(a) > 1})
        raise AxisError(f"axis tags {''.join(out)!r} repeat {', '.join(dup)}")
    if ndim is not None and len(out) != ndim:
        raise AxisError(
            f"axis tags {''.join(out)!r} name {len(out)} axes but the data has {ndim} dimensions"
        )
    return tuple(out)


def guess_axes(shape: Sequence[int]) -> tuple[str, ...]:
    """Guess axis tags from the rank (and a small last dimension meaning channels).

    1-D ``x``; 2-D ``yx``; 3-D ``zyx``, or ``yxc`` when the last axis has at most 4 entries;
    4-D ``zyxc``, or ``tzyx`` when the last axis has more than 4; 5-D ``tzyxc``.
    """
    ndim = len(shape)
    small_last = ndim > 0 and shape[-1] <= 4
    guesses = {
        0: "",
        1: "x",
        2: "yx",
        3: "yxc" if small_last else "zyx",
        4: "zyxc" if small_last else "tzyx",
        5: "tzyxc",
    }
    if ndim not in guesses:
        raise AxisError(f"cannot guess axis tags for {ndim}-D data; pass axes, e.g. 'tzyxc'")
    return tuple(guesses[ndim])


def vigra_axistags(axes: Sequence[str], resolutions: Mapping[str, float] | None = None) -> str:
    """ilastik's ``axistags`` attribute (vigra JSON) for the given axis order."""
    resolutions = resolutions or {}
    return json.dumps(
        {
            "axes": [
                {
                    "key": a,
                    "typeFlags": _TYPE_FLAGS.get(a, _UNKNOWN_TYPE),
                    "resolution": resolutions.get(a, 0),
                    "description": "",
                }
                for a in axes
            ]
        }
    )


def parse_vigra_axistags(text: str | bytes) -> tuple[str, ...]:
    """Axis keys from an ilastik/vigra ``axistags`` JSON attribute."""
    if isinstance(text, bytes):
        text = text.decode()
    try:
        keys = [entry["key"] for entry in json.loads(text)["axes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise AxisError(f"unreadable axistags attribute: {exc}") from None
    return parse_axes(keys)
