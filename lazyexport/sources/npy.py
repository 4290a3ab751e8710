"""NumPy ``.npy`` files, memory-mapped: a block read touches only its own bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import SourceError
from .base import FileArray, from_file_array, labeled, resolve_axes
from .registry import SourceReader, register

SUFFIXES = (".npy",)


class NpyArray(FileArray):
    def _open(self):
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def open_npy(path: Path, internal: str, axes=None) -> xr.DataArray:
    if internal:
        raise SourceError(f"{path} is a .npy file; it has no internal path {internal!r}")
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open {path} as .npy: {exc}") from None
    arr = NpyArray(path, mm.shape, mm.dtype)
    del mm
    dims = resolve_axes(axes, None, arr.shape)
    return labeled(from_file_array(arr), dims, path, reader=arr, identity_paths=[arr.data_path()])


@register
class NpyReader(SourceReader):
    """NumPy ``.npy`` files, memory-mapped: local files only."""

    name = "npy"
    description = "NumPy .npy"
    suffixes = SUFFIXES

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_npy(path, internal, axes=axes)
