"""The export widget's three display layers as arrays: Raw Data, Live Preview, Exported Image.

- Raw Data is the source's lazy array, as opened.
- Live Preview is a dask array of the export's output shape and type whose chunks are the
  planes :mod:`lazyexport.preview` shows (the last two non-channel output axes, every channel),
  each computed by :func:`~lazyexport.preview.preview_plan` only when napari asks for it: a
  plane viewed is a plane computed, from the source chunks that plane needs, and nothing else.
- Exported Image is the output read back from disk (:func:`~lazyexport.sources.open_exported`);
  what cannot be read back (several regions, slice files at a URL) gives a note, not a layer.

Nothing here imports napari or Qt: the widget adds these arrays as layers.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .axes import CHANNEL
from .plan import ExportPlan
from .preview import preview_plan
from .run import ExportResult
from .sources import open_exported


class LivePlanes:
    """The export result of ``plan``, one preview plane at a time (for :func:`live_array`)."""

    def __init__(self, plan: ExportPlan):
        self.plan = plan
        self.axes = tuple(plan.axes)
        self.shape = tuple(int(n) for n in plan.shape)
        self.dtype = np.dtype(plan.dtype)
        self.ndim = len(self.shape)
        free = [a for a in self.axes if a != CHANNEL and a in plan.roi]
        self.plane = tuple(free[-2:])
        self.step = dict(zip(self.axes, plan.pipeline.scale()))

    def chunks(self) -> tuple[int, ...]:
        """One plane per chunk: whole along the plane axes and the channel, 1 elsewhere."""
        return tuple(
            n if a in self.plane or a == CHANNEL else 1 for a, n in zip(self.axes, self.shape)
        )

    def position(self, key: tuple[slice, ...]) -> dict[str, int]:
        """The source position (``at`` of :func:`lazyexport.preview.preview`) of a chunk."""
        at = {}
        for axis, part in zip(self.axes, key):
            if axis in self.plane or axis == CHANNEL or axis not in self.plan.roi:
                continue
            start = self.plan.roi[axis][0]
            at[axis] = int(start + (part.start or 0) * int(self.step.get(axis, 1)))
        return at

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (self.ndim - len(tuple(key)))
        wanted = tuple(range(n)[part] for n, part in zip(self.shape, key))
        if any(len(r) == 0 for r in wanted):
            return np.empty(tuple(len(r) for r in wanted), self.dtype)
        plane = preview_plan(self.plan, self.position(key), ("live",))["live"]
        full = plane.expand_dims([a for a in self.axes if a not in plane.dims])
        values = np.asarray(full.transpose(*self.axes).values)
        # the fixed axes have length 1 here, the plane's the whole cutout
        local = tuple(part if a in plane.dims else slice(None) for a, part in zip(self.axes, key))
        return values[local].astype(self.dtype, copy=False)


def live_array(plan: ExportPlan) -> da.Array:
    """The Live Preview: the export result of ``plan`` as a dask array of planes computed when
    read (see the module docstring)."""
    planes = LivePlanes(plan)
    meta = np.empty((0,) * planes.ndim, planes.dtype)
    return da.from_array(planes, chunks=planes.chunks(), meta=meta, asarray=False, fancy=False)


def live_scale_translate(plan: ExportPlan) -> tuple[list[float], list[float]]:
    """Where the Live Preview lies over the source: its pixel size (binned: the window) and
    offset (the cutout's start) per output axis, in source pixels."""
    step = dict(zip(plan.axes, plan.pipeline.scale()))
    scale = [float(step.get(a, 1)) for a in plan.axes]
    translate = [float(plan.roi[a][0]) if a in plan.roi else 0.0 for a in plan.axes]
    return scale, translate


def exported_array(result: Any) -> tuple[xr.DataArray | None, str]:
    """The Exported Image read back from disk, or None and a note saying why it is not shown."""
    if not isinstance(result, ExportResult):
        return None, "an export of several regions is not shown as a layer: open each output"
    try:
        return open_exported(result), ""
    except Exception as exc:  # a format or place that cannot be read back
        return None, f"the exported image cannot be shown here: {exc}"
