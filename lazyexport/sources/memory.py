"""In-memory sources: numpy, dask and xarray objects passed to the Python API."""

from __future__ import annotations

import uuid

import dask.array as da
import numpy as np
import xarray as xr

from ..axes import names, parse_axes
from ..errors import SourceError
from ..units import source_attrs
from .base import dask_chunks, labeled, resolve_axes


def open_memory(obj, axes=None) -> xr.DataArray:
    if isinstance(obj, xr.DataArray):
        dims = parse_axes(axes, ndim=obj.ndim) if axes is not None else _xarray_dims(obj)
        data, reader = obj.data, None
        if not isinstance(data, da.Array):  # block tasks read views of the array itself
            reader = np.asarray(data)
            data = _from_numpy(reader)
        out = labeled(data, dims, None, reader=reader)
        if obj.name is not None:
            out.attrs["nickname"] = str(obj.name)
        out.attrs.update(_coordinate_spacing(obj, dims))
        out.attrs.update(obj.attrs)  # a DataArray from open_source keeps its source's attributes
        out.encoding.update(obj.encoding)
        return out
    if isinstance(obj, da.Array):
        return labeled(obj, resolve_axes(axes, None, obj.shape), None)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise SourceError(f"cannot export an array of dtype {obj.dtype}: only numeric data")
        return labeled(_from_numpy(obj), resolve_axes(axes, None, obj.shape), None, reader=obj)
    raise SourceError(
        f"cannot open a {type(obj).__name__} as a source: pass a path, or a numpy, dask or xarray "
        "array"
    )


def _from_numpy(arr: np.ndarray) -> da.Array:
    # A random name spares dask hashing every byte of a large array.
    return da.from_array(
        arr, chunks=dask_chunks(arr.shape, arr.dtype, None), name=f"memory-{uuid.uuid4().hex}"
    )


def _xarray_dims(obj: xr.DataArray) -> tuple[str, ...]:
    dims = names(obj)
    if all(len(d) == 1 for d in dims):
        return parse_axes(dims)
    raise SourceError(
        f"the DataArray's dims {tuple(obj.dims)} are not single-letter axis tags; pass axes=, e.g. "
        "'zyx'"
    )


def _coordinate_spacing(obj: xr.DataArray, dims) -> dict:
    """Pixel sizes from evenly spaced numeric coordinates of the spatial dims (unit from the
    coordinate's ``units`` attribute)."""
    sizes, unit = {}, None
    for name, axis in zip(obj.dims, dims):
        if name not in obj.coords:  # (``obj[name]`` would be a made-up 0, 1, 2, ... index)
            continue
        coord = obj.coords[name]
        if coord.ndim != 1 or coord.size < 2 or coord.dtype.kind not in "iuf":
            continue
        steps = np.diff(coord.values.astype(np.float64))
        if np.allclose(steps, steps[0]):
            sizes[axis] = abs(float(steps[0]))
            unit = unit or coord.attrs.get("units")
    return source_attrs(sizes, unit)
