"""Preview layers: one 2-D plane of the raw source, of the live export result, and of the output
read back from disk; and a PNG that shows the three side by side.

Where the plane lies
--------------------
``at`` gives positions in **source** coordinates (absolute: ``{"z": 10}`` is source slice 10,
whatever the ROI). The displayed plane spans the **last two non-channel axes of the output order**
(after transposition) that the source has and ``at`` does not fix, over the ROI; so
``at={"z": 10}`` on ``zyx`` data shows a ``yx`` plane and ``at={"y": 100}`` an ``zx`` plane. Every
other non-channel axis sits at the position ``at`` gives, or by default in the **middle of the
ROI** (``start + (stop - start) // 2``). A channel axis is kept whole, as the plane's last axis.
Positions must lie inside the ROI for the live and disk layers (inside the source for ``raw``).

Every layer is a labeled :class:`xarray.DataArray` with dims ``(row_axis, column_axis[, "c"])``,
coordinates in source indices for the plane axes and scalar coordinates for the fixed axes, so
the three layers line up pixel for pixel (binned: the live and disk layers have a pixel per
window, at the source index of the window's first pixel, and a fixed axis's position is the
window holding it):

- ``raw``: the source, cut to the ROI in the plane, before any transformation;
- ``live``: the export result, computed on the fly from only the chunks this plane needs (the
  transformations are applied to a one-plane ROI, not to the whole volume; with a step that
  reads beyond its output pixel, e.g. binning, the whole pipeline's lazy result, of which only
  the chunks of this plane are computed);
- ``disk``: the same plane read back from the written output; sequences read only the slice file
  that holds the plane. Raises :class:`~lazyexport.errors.NotExportedError` if nothing is there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .axes import CHANNEL, names, parse_axes
from .errors import AxisError, NotExportedError, RoiError, SettingsError, SourceError
from .plan import ExportPlan, build_plan, transform
from .settings import ExportSettings
from .sources import open_exported
from .storage.capabilities import opened_by_name
from .transforms import cutout

LAYERS = ("raw", "live", "disk")
TITLES = {"raw": "raw", "live": "live preview", "disk": "exported (from disk)"}

# The PNG: three panels of PANEL_PX pixels wide, as high as the plane's aspect ratio gives
# (clipped to 1:4 .. 4:1), under a band of TITLE_PX pixels for the titles.
PANEL_PX = 400
TITLE_PX = 80
PAD_PX = 4
PERCENTILES = (1.0, 99.0)
# Composite colours (RGB weights) for two and three channels.
COLOURS = {
    1: [(1.0, 1.0, 1.0)],
    2: [(1.0, 0.0, 1.0), (0.0, 1.0, 0.0)],
    3: [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)],
}
COLOUR_NAMES = {1: ["gray"], 2: ["magenta", "green"], 3: ["red", "green", "blue"]}


def preview(
    source: Any,
    settings: ExportSettings | None = None,
    at: Mapping[str, int] | None = None,
    layers: Iterable[str] = LAYERS,
    *,
    nickname: str | None = None,
    memory_limit: Any = None,
) -> dict[str, xr.DataArray]:
    """One 2-D plane of each of ``layers``, lined up pixel for pixel (see the module docstring).

    Parameters
    ----------
    source : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        As for :func:`lazyexport.export`.
    settings : ExportSettings, optional
        As for :func:`lazyexport.export`.
    at : mapping of str to int, optional
        Source indices by axis letter, e.g. ``{"z": 10}``; axes not given sit in the middle of
        the ROI.
    layers : iterable of str, default ("raw", "live", "disk")
        ``"raw"``: the source; ``"live"``: the export result computed for this plane only;
        ``"disk"``: the plane read back from the written output.
    nickname : str, optional
        As for :func:`lazyexport.export` (it names the output the disk layer reads).
    memory_limit : int or str, optional
        As for :func:`lazyexport.export`.

    Returns
    -------
    dict of str to xarray.DataArray
        The planes by layer name, with dims ``(row_axis, column_axis[, "c"])`` and source
        coordinates.

    Raises
    ------
    ExportError
        For an unknown axis or a position outside the ROI.
    NotExportedError
        For the disk layer when nothing was exported yet.
    """
    plan = build_plan(source, settings, nickname=nickname, memory_limit=memory_limit)
    return preview_plan(plan, at, layers)


def preview_plan(
    plan: ExportPlan, at: Mapping[str, int] | None = None, layers: Iterable[str] = LAYERS
) -> dict[str, xr.DataArray]:
    """:func:`preview` for a plan built already."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise SettingsError(
            f"unknown preview layer {unknown[0]!r}; choose from {', '.join(LAYERS)}"
        )
    position = Position(plan, at, in_roi=any(name != "raw" for name in layers))
    read = {"raw": position.raw, "live": position.live, "disk": position.disk}
    return {name: read[name]() for name in layers}


class Position:
    """Where a preview plane lies: the plane axes and the source index of every other axis."""

    def __init__(self, plan: ExportPlan, at: Mapping[str, int] | None, in_roi: bool = True):
        self.plan = plan
        src = plan.source
        fixed: dict[str, int] = {}
        for key, value in (at or {}).items():
            (axis,) = parse_axes(str(key))
            if axis not in src.dims:
                raise AxisError(
                    f"preview position names axis {axis!r}, which the source does not have "
                    f"(its axes are {''.join(names(src))!r})"
                )
            if axis == CHANNEL:
                raise AxisError(
                    "preview position cannot fix the channel axis 'c': planes keep every channel "
                    "(the picture can show one with --channel)"
                )
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise RoiError(
                    f"preview position for axis {axis!r} must be a whole number, got {value!r}"
                )
            lo, hi = plan.roi[axis] if in_roi else (0, src.sizes[axis])
            if not lo <= value < hi:
                where = "the ROI" if in_roi else "the source"
                raise RoiError(
                    f"preview position {axis}={value} is outside {where}: "
                    f"axis {axis!r} has the valid range [{lo}, {hi})"
                )
            fixed[axis] = int(value)
        free = [a for a in plan.axes if a != CHANNEL and a in plan.roi and a not in fixed]
        if len(free) < 2:
            raise AxisError(
                f"a preview plane needs two axes the position leaves free; the output axes are "
                f"{''.join(plan.axes)!r} and the position fixes {', '.join(fixed) or 'none'}"
            )
        self.plane: tuple[str, str] = (free[-2], free[-1])
        for axis in names(src):
            if axis not in self.plane and axis != CHANNEL and axis not in fixed:
                lo, hi = plan.roi[axis]
                fixed[axis] = lo + (hi - lo) // 2
        self.fixed = fixed  # source axis -> source index
        self.roi = {a: (fixed[a], fixed[a] + 1) if a in fixed else r for a, r in plan.roi.items()}

    def dims(self, arr: xr.DataArray) -> tuple[str, ...]:
        return self.plane + ((CHANNEL,) if CHANNEL in arr.dims else ())

    def _label(self, arr: xr.DataArray, layer: str) -> xr.DataArray:
        """``arr`` (every non-plane, non-channel axis of length 1) as a labeled plane."""
        arr = arr.isel({a: 0 for a in arr.dims if a not in self.dims(arr)}, drop=True)
        arr = arr.transpose(*self.dims(arr))
        plane = xr.DataArray(
            np.asarray(arr.values),
            dims=arr.dims,
            name=layer,
            attrs={"layer": layer, "source": self.plan.source.attrs.get("source")},
        )
        # the output's pixels a window apart where binned (not the raw source's)
        step = dict(zip(self.plan.axes, self.plan.pipeline.scale())) if layer != "raw" else {}
        coords: dict[str, Any] = {
            a: self.plan.roi[a][0] + np.arange(plane.sizes[a]) * int(step.get(a, 1))
            for a in self.plane
        }
        coords.update(self.fixed)
        return plane.assign_coords(coords)

    def output_index(self, axis: str) -> int:
        """The output index of a fixed (or added, length-1) output axis (binned: the window)."""
        if axis in self.fixed:
            step = dict(zip(self.plan.axes, self.plan.pipeline.scale())).get(axis, 1)
            return int((self.fixed[axis] - self.plan.roi[axis][0]) // step)
        return 0

    def raw(self) -> xr.DataArray:
        return self._label(cutout(self.plan.source, self.roi), "raw")

    def live(self) -> xr.DataArray:
        plan = self.plan
        if not plan.pipeline.piecewise():  # the plane's source region (halo, windows) only
            pipe = plan.pipeline
            index = {a: self.output_index(a) for a in pipe.axes if a in self.fixed}
            region = tuple(
                slice(index[a], index[a] + 1) if a in index else slice(0, n)
                for a, n in zip(pipe.axes, pipe.shape)
            )
            reads = pipe.source_region(region)
            box = {a: (s.start, s.stop) for a, s in zip(names(plan.source), reads)}
            block = np.asarray(cutout(plan.source, box).values)
            return self._label(xr.DataArray(pipe.apply(block, region), dims=pipe.axes), "live")
        return self._label(
            transform(plan.source, self.roi, plan.settings, plan.renormalize), "live"
        )

    def disk(self) -> xr.DataArray:
        plan = self.plan
        expected = dict(zip(plan.axes, plan.shape))
        index = {a: self.output_index(a) for a in plan.axes if a not in self.plane and a != CHANNEL}
        if plan.writer.capabilities.sequence:
            axis = plan.slice_axis
            assert axis is not None  # every sequence plan has one
            if axis in self.plane:
                files = list(plan.paths)
            else:  # read only the slice file that holds the plane
                files = [plan.paths[index[axis]]]
                expected[axis], index[axis] = 1, 0
            if not opened_by_name(files[0]):
                raise NotExportedError(
                    f"slice files at a URL ({files[0]}) are not read back; the panel shows nothing"
                )
            missing = [f for f in files if not f.exists()]
            if missing:
                raise NotExportedError(f"nothing exported yet at {missing[0]}; run export first")
            arr = open_exported(files)
        else:
            where = _exported_location(plan)
            if not plan.writer.existing(plan.spec):
                raise NotExportedError(f"nothing exported yet at {where}; run export first")
            arr = open_exported(where)
        found = dict(zip(names(arr), arr.shape))
        if list(found.items()) != list(expected.items()) or arr.dtype != plan.dtype:
            raise SourceError(
                f"the export at {_exported_location(plan)} ({_shape_text(found)} {arr.dtype}) does "
                "not match "
                f"these settings ({_shape_text(expected)} {plan.dtype}); export again with "
                "--overwrite"
            )
        return self._label(arr.isel(index), "disk")


def _exported_location(plan: ExportPlan) -> str:
    """The output as :func:`open_exported` reads it: ``out.h5/dataset``, ``out.zarr``, a slice
    file."""
    internal = plan.writer.dataset(plan.spec)  # HDF5 names its default dataset itself
    return f"{plan.output}/{internal}" if internal else str(plan.output)


def _shape_text(sizes: Mapping[str, int]) -> str:
    return "".join(sizes) + " (" + ", ".join(str(s) for s in sizes.values()) + ")"


# --------------------------------------------------------------------------------------------
# The picture


def display_range(
    values: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
) -> tuple[float, float]:
    """The percentile range of the finite values (min/max where the percentiles coincide)."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if finite.size == 0:
        return (0.0, 1.0)
    finite = finite.astype(np.float64, copy=False)
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if lo == hi:
        lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        hi = lo + 1.0
    return (lo, hi)


def _channels(plane: xr.DataArray, channel: int | None) -> tuple[list[np.ndarray], str]:
    """The 2-D channel images to show and a note on which they are."""
    if CHANNEL not in plane.dims:
        if channel not in (None, 0):
            raise SettingsError(f"--channel {channel}: the data has no channel axis")
        return [plane.values.astype(np.float64)], ""
    n = plane.sizes[CHANNEL]
    if channel is not None:
        if not 0 <= channel < n:
            raise SettingsError(
                f"--channel {channel} is out of range: the data has {n} channels (0..{n - 1})"
            )
        return [plane.isel(c=channel).values.astype(np.float64)], f"channel {channel} of {n}"
    if n > 3:
        return [
            plane.isel(c=0).values.astype(np.float64)
        ], f"channel 0 of {n} (--channel to choose)"
    return [plane.isel(c=i).values.astype(np.float64) for i in range(n)], ""


def _composite(images: list[np.ndarray], ranges: list[tuple[float, float]]) -> np.ndarray:
    """An RGB image: each channel scaled to its range and tinted (gray, magenta/green or RGB)."""
    rgb = np.zeros(images[0].shape + (3,))
    for image, (lo, hi), colour in zip(images, ranges, COLOURS[len(images)]):
        scaled = np.clip((np.nan_to_num(image, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
        rgb += scaled[..., None] * np.asarray(colour)
    return np.clip(rgb, 0.0, 1.0)


def _range_text(ranges: list[tuple[float, float]], how: str) -> str:
    names = COLOUR_NAMES[len(ranges)] if len(ranges) > 1 else [""]
    parts = [
        f"{name + ' ' if name else ''}{lo:.4g}..{hi:.4g}" for name, (lo, hi) in zip(names, ranges)
    ]
    return f"{how}: " + ", ".join(parts)


def picture_size(plane_shape: Sequence[int]) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for planes of ``plane_shape`` (rows, columns)."""
    rows, cols = plane_shape[:2]
    aspect = min(max(rows / cols, 0.25), 4.0)
    return 3 * PANEL_PX, round(PANEL_PX * aspect) + TITLE_PX


def render_png(
    planes: Mapping[str, xr.DataArray | str],
    path: str | Path,
    *,
    same_range: bool = False,
    channel: int | None = None,
) -> Path:
    """Draw the raw, live and disk planes side by side into the PNG ``path``.

    A layer given as text (e.g. ``"not exported yet"``) is drawn as an empty panel with that text.
    Each panel has its own display range (the 1st..99th percentile, per channel) unless
    ``same_range``, which uses one range per channel over all panels; the title says which. Up to
    three channels are shown as a composite (two: magenta/green, three: RGB), or one with
    ``channel``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = [p for p in planes.values() if isinstance(p, xr.DataArray)]
    if not shown:
        raise SettingsError("nothing to draw: every preview layer is missing")
    images = {
        name: _channels(p, channel) for name, p in planes.items() if isinstance(p, xr.DataArray)
    }
    pct = f"p{PERCENTILES[0]:g}-p{PERCENTILES[1]:g}"
    if same_range:
        count = len(next(iter(images.values()))[0])
        shared = [
            display_range(np.concatenate([imgs[i].ravel() for imgs, _ in images.values()]))
            for i in range(count)
        ]
    width, height = picture_size(shown[0].shape)
    panel_h = height - TITLE_PX
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    for i, (name, plane) in enumerate(planes.items()):
        ax = fig.add_axes(
            (
                (i * PANEL_PX + PAD_PX) / width,
                PAD_PX / height,
                (PANEL_PX - 2 * PAD_PX) / width,
                (panel_h - 2 * PAD_PX) / height,
            )
        )
        ax.set_xticks([])
        ax.set_yticks([])
        title = TITLES.get(name, name)
        if isinstance(plane, str):
            ax.set_facecolor("#d8d8d8")
            ax.text(0.5, 0.5, plane, ha="center", va="center", fontsize=12, transform=ax.transAxes)
            ax.set_title(title, fontsize=10, fontweight="bold")
            continue
        chans, note = images[name]
        ranges = shared if same_range else [display_range(c) for c in chans]
        ax.imshow(_composite(chans, ranges), aspect="auto", interpolation="antialiased")
        rows, cols = plane.dims[:2]
        fixed = ", ".join(f"{a}={int(v)}" for a, v in plane.coords.items() if a not in plane.dims)
        details = [
            f"{plane.dtype}, {rows}{cols} plane" + (f" at {fixed}" if fixed else ""),
            _range_text(ranges, ("shared " if same_range else "") + pct),
        ]
        if note:
            details.append(note)
        ax.set_title(title, fontsize=10, fontweight="bold", pad=4 + 10 * len(details))
        ax.text(
            0.5,
            1.0 + 3 / (panel_h - 2 * PAD_PX),
            "\n".join(details),
            ha="center",
            va="bottom",
            fontsize=7.5,
            linespacing=1.3,
            transform=ax.transAxes,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
