"""Cutout subregion: normalise a user's ROI, validate it against a shape, turn it into slices and
text.

A ROI maps axis letters to ``(start, stop)``; ``stop`` is exclusive, ``None`` means the start or
the end of the axis, negative values count from the end as in Python slicing. Unlike Python
slicing nothing is clipped silently: a bound outside ``[-size, size]`` or an empty range is an
error naming the axis and its valid range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .axes import parse_axes
from .errors import RoiError

Bounds = tuple[int | None, int | None]


def normalize_roi_spec(roi: Mapping[str, Sequence[int | None]] | None) -> dict[str, Bounds]:
    """Check the form of a ROI (not yet its fit to a shape): lower-case axes, pairs of ints/None."""
    if roi is None:
        return {}
    if not isinstance(roi, Mapping):
        raise RoiError(f"roi must map axis letters to (start, stop), got {roi!r}")
    out: dict[str, Bounds] = {}
    for key, bounds in roi.items():
        if not isinstance(key, str) or len(key) != 1:
            raise RoiError(f"roi axis must be a single letter, got {key!r}")
        (axis,) = parse_axes(key)
        if axis in out:
            raise RoiError(f"roi names axis {axis!r} twice")
        if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
            raise RoiError(f"roi for axis {axis!r} must be (start, stop), got {bounds!r}")
        pair: list[int | None] = []
        for value in bounds:
            if value is None:
                pair.append(None)
            elif isinstance(value, bool) or not _is_integral(value):
                raise RoiError(
                    f"roi bounds for axis {axis!r} must be whole numbers or None, got {value!r}"
                )
            else:
                pair.append(int(value))
        out[axis] = (pair[0], pair[1])
    return out


def _is_integral(value: object) -> bool:
    try:
        return int(value) == value  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def parse_roi_text(text: str) -> dict[str, Bounds]:
    """Parse the command line form ``z=0:100,x=:512,y=-10:`` into a ROI spec."""
    roi: dict[str, Bounds] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, sep, rng = part.partition("=")
        start, colon, stop = rng.partition(":")
        if not sep or not colon:
            raise RoiError(f"cannot read ROI part {part!r}: write axis=start:stop, e.g. z=0:100")
        try:
            bounds = tuple(int(v) if v.strip() else None for v in (start, stop))
        except ValueError:
            raise RoiError(f"cannot read ROI part {part!r}: bounds must be whole numbers") from None
        if axis.strip().lower() in roi:
            raise RoiError(f"ROI names axis {axis.strip()!r} twice")
        roi[axis.strip().lower()] = bounds  # type: ignore[assignment]
    return normalize_roi_spec(roi)


def resolve_roi(
    roi: Mapping[str, Bounds] | None, axes: Sequence[str], shape: Sequence[int]
) -> dict[str, tuple[int, int]]:
    """Absolute ``[start, stop)`` for every axis of the data, in the data's axis order."""
    spec = normalize_roi_spec(roi)
    unknown = [a for a in spec if a not in axes]
    if unknown:
        raise RoiError(
            f"roi names axis {unknown[0]!r}, which the source does not have (its axes are "
            f"{''.join(axes)!r})"
        )
    out: dict[str, tuple[int, int]] = {}
    for axis, size in zip(axes, shape):
        start, stop = spec.get(axis, (None, None))
        lo = _absolute(axis, start, size, 0, "start")
        hi = _absolute(axis, stop, size, size, "stop")
        if lo >= hi:
            raise RoiError(
                f"roi for axis {axis!r} is empty: [{start}, {stop}) selects nothing of the valid "
                f"range [0, {size})"
            )
        out[axis] = (lo, hi)
    return out


def _absolute(axis: str, value: int | None, size: int, default: int, what: str) -> int:
    if value is None:
        return default
    absolute = value + size if value < 0 else value
    if not 0 <= absolute <= size:
        raise RoiError(
            f"roi {what} {value} for axis {axis!r} is outside the valid range [0, {size}) "
            f"(or [-{size}, 0) counting from the end)"
        )
    return absolute


def roi_slices(roi: Mapping[str, tuple[int, int]], axes: Sequence[str]) -> tuple[slice, ...]:
    return tuple(slice(*roi[a]) for a in axes)


def format_roi_spec(roi: Mapping[str, Bounds]) -> str:
    """A ROI in the command line form :func:`parse_roi_text` reads (``z=0:10,y=:5``)."""
    return ",".join(
        f"{a}={'' if lo is None else lo}:{'' if hi is None else hi}" for a, (lo, hi) in roi.items()
    )


def roi_text(roi: Mapping[str, tuple[int, int]], order: Sequence[str]) -> str:
    """The ROI as file-name friendly text, e.g. ``z0-100_y0-512_x0-512``, in ``order``."""
    return "_".join(f"{a}{roi[a][0]}-{roi[a][1]}" for a in order if a in roi)
