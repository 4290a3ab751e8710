"""HDF5 datasets: ``file.h5/internal/path``; axes from ilastik's ``axistags`` attribute.
:func:`hdf5_meta` reads what the metadata say (h5py, no dask or xarray); :func:`open_hdf5` makes
the dask array from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..axes import parse_vigra_axistags
from ..errors import SourceError
from ..storage import reading
from ..units import source_attrs
from .base import FileArray, exportable_dtype, from_file_array, from_meta, resolve_axes
from .facts import SourceMeta
from .registry import SourceReader, register

if TYPE_CHECKING:
    import h5py
    import xarray as xr

SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".ilp")


class H5Array(FileArray):
    def _open(self):
        import h5py

        return h5py.File(self.file(), "r")[self.key]

    def _close(self, handle) -> None:
        handle.file.close()


def list_datasets(file: h5py.File) -> list[str]:
    import h5py

    names: list[str] = []
    file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def hdf5_meta(path: Path, internal: str, axes=None) -> tuple[SourceMeta, H5Array]:
    """What the dataset ``internal`` of the HDF5 file ``path`` holds, as its metadata say, and
    the file array reading it; no pixel is read. (h5py is imported here, when a file is read:
    ``info`` of another source does not import it.)"""
    import h5py

    try:
        file = h5py.File(reading.open_file(path), "r")
    except OSError as exc:
        raise SourceError(f"cannot open {path} as HDF5: {exc}") from None
    with file:
        if not internal:
            names = list_datasets(file)
            if len(names) != 1:
                listing = ", ".join(names[:10]) or "none"
                raise SourceError(
                    f"{path} holds {len(names)} datasets ({listing}); name one as {path}/<dataset>"
                )
            internal = names[0]
        obj = file.get(internal)
        if not isinstance(obj, h5py.Dataset):
            listing = ", ".join(list_datasets(file)[:10]) or "none"
            raise SourceError(f"{path} has no dataset {internal!r} (datasets: {listing})")
        tags = obj.attrs.get("axistags")
        element_size = obj.attrs.get("element_size_um")
        meta_axes = parse_vigra_axistags(tags) if tags is not None else None
        arr = H5Array(path, obj.shape, obj.dtype, key=internal)
        native = obj.chunks
        shape = obj.shape
    dims = resolve_axes(axes, meta_axes, shape)
    sizes = (
        dict(zip(dims, element_size))
        if element_size is not None and len(element_size) == len(dims)
        else {}
    )
    meta = SourceMeta(
        path=path,
        shape=tuple(shape),
        dtype=exportable_dtype(arr.dtype, path),
        axes=dims,
        native=native,
        identity_paths=(str(arr.data_path()),),
        attrs={"internal_path": internal, **source_attrs(sizes, "micrometer")},
    )
    return meta, arr


def open_hdf5(path: Path, internal: str, axes=None) -> xr.DataArray:
    meta, arr = hdf5_meta(path, internal, axes)
    return from_meta(meta, from_file_array(arr, meta.native), arr)


@register
class Hdf5Reader(SourceReader):
    """HDF5 datasets, at a URL through range requests."""

    name = "hdf5"
    description = "HDF5"
    suffixes = SUFFIXES
    supports_urls = True

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_hdf5(path, internal, axes=axes)

    def describe(self, path, internal, axes=None, scene=None) -> SourceMeta:
        return hdf5_meta(path, internal, axes=axes)[0]
