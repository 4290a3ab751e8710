"""Cutouts from what the napari viewer shows: a Shapes rectangle, or the current plane.

Both give ``{axis: (start, stop)}`` in the source's pixel indices (stop exclusive), for the
export widget's Cutout Subregion. Positions go from the viewer's world coordinates to the data
coordinates of the layer the source is shown as (``reference``: its scale and translate undone);
without one, world coordinates are taken as source indices. The viewer's dimensions line up with
the source's axes from the last (napari aligns layers by their trailing dimensions). Only the
viewer's model is read (layers, dims): no canvas.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import RoiError


def _to_data(point: Any, reference: Any) -> np.ndarray:
    """A world point in the reference layer's data coordinates."""
    point = np.asarray(point, dtype=float)
    if reference is None:
        return point
    return np.asarray(reference.world_to_data(point), dtype=float)


def _trailing(axes: tuple[str, ...], ndim: int) -> tuple[str, ...]:
    """The source axes the last ``ndim`` viewer dimensions show."""
    return axes[-ndim:] if ndim <= len(axes) else axes


def shapes_rectangle(viewer: Any, axes: tuple[str, ...], reference: Any = None) -> dict:
    """The bounding box of the selected shape of the selected Shapes layer (else its last
    shape): on the axes it spans (the rectangle's plane), the pixels whose centre lies in it
    (``ceil(low)`` to ``ceil(high)``)."""
    layer = _shapes_layer(viewer)
    chosen = sorted(layer.selected_data) or [len(layer.data) - 1]
    vertices = np.asarray(layer.data[chosen[0]], dtype=float)
    points = np.array([_to_data(layer.data_to_world(v), reference) for v in vertices])
    lows, highs = points.min(axis=0), points.max(axis=0)
    bounds = {}
    for axis, lo, hi in zip(_trailing(axes, points.shape[1]), lows, highs):
        if hi > lo:  # the axes the rectangle spans
            bounds[axis] = (max(0, math.ceil(lo)), max(0, math.ceil(hi)))
    if not bounds:
        raise RoiError("the shape spans no axis: draw a rectangle over the image")
    return bounds


def _shapes_layer(viewer: Any) -> Any:
    """The selected Shapes layer, else the last one that has a shape."""
    layers = [layer for layer in viewer.layers if layer._type_string == "shapes" and layer.data]
    selected = [layer for layer in layers if layer in viewer.layers.selection]
    if not (selected or layers):
        raise RoiError("no Shapes layer with a shape: draw a rectangle in a Shapes layer first")
    return (selected or layers)[-1]


def current_plane(viewer: Any, axes: tuple[str, ...], reference: Any = None) -> dict:
    """The plane the viewer shows: each axis not displayed at its current position (one
    index), the displayed axes whole."""
    point = _to_data(viewer.dims.point, reference)
    shown = _trailing(axes, len(point))
    displayed = {len(point) - viewer.dims.ndim + d for d in viewer.dims.displayed}
    return {
        axis: (int(round(p)), int(round(p)) + 1)
        for i, (axis, p) in enumerate(zip(shown, point[-len(shown) :]))
        if i + len(point) - len(shown) not in displayed
    }
