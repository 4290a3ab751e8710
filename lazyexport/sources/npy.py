"""NumPy ``.npy`` files, memory-mapped: a block read touches only its own bytes. :func:`npy_meta`
reads the header (no dask or xarray); :func:`open_npy` makes the dask array from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SourceError
from .base import FileArray, exportable_dtype, from_file_array, from_meta, resolve_axes
from .facts import SourceMeta
from .registry import SourceReader, register

if TYPE_CHECKING:
    import xarray as xr

SUFFIXES = (".npy",)


class NpyArray(FileArray):
    def _open(self):
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def npy_meta(path: Path, internal: str, axes=None) -> tuple[SourceMeta, NpyArray]:
    """What the ``.npy`` file ``path`` holds, as its header says, and the file array reading it."""
    if internal:
        raise SourceError(f"{path} is a .npy file; it has no internal path {internal!r}")
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open {path} as .npy: {exc}") from None
    arr = NpyArray(path, mm.shape, mm.dtype)
    del mm
    dims = resolve_axes(axes, None, arr.shape)
    meta = SourceMeta(
        path=path,
        shape=arr.shape,
        dtype=exportable_dtype(arr.dtype, path),
        axes=dims,
        identity_paths=(arr.data_path(),),
    )
    return meta, arr


def open_npy(path: Path, internal: str, axes=None) -> xr.DataArray:
    meta, arr = npy_meta(path, internal, axes)
    return from_meta(meta, from_file_array(arr), arr)


@register
class NpyReader(SourceReader):
    """NumPy ``.npy`` files, memory-mapped: local files only."""

    name = "npy"
    description = "NumPy .npy"
    suffixes = SUFFIXES

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_npy(path, internal, axes=axes)

    def describe(self, path, internal, axes=None, scene=None) -> SourceMeta:
        return npy_meta(path, internal, axes=axes)[0]
