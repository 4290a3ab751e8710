"""Small real source files written from known data.

Every source holds the same kind of data: a ``zyx`` volume of :data:`SHAPE`, random with a
fixed seed (float32 in [0, 1), integers over the dtype's whole range), so tests can compare
what lazyexport reads or writes against the numpy array the file was made from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import tifffile
import zarr

from lazyexport.axes import vigra_axistags

SHAPE = (20, 30, 40)  # z, y, x
FILE_CHUNKS = (8, 16, 16)  # native chunks of the HDF5 / Zarr sources (not aligned to anything)
DTYPES = ("float32", "uint8", "uint16")


def make_data(dtype: npt.DTypeLike, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    """Random data with a fixed seed: float32 in [0, 1), integers over the whole dtype range."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(kind)
    info = np.iinfo(kind)
    return rng.integers(info.min, info.max, size=shape, dtype=kind, endpoint=True)


def arange(shape: tuple[int, ...], dtype: npt.DTypeLike = "uint16") -> np.ndarray:
    """0, 1, 2, ... in ``shape``: every element tells where it came from."""
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A source written to disk: what to pass to ``open_source``, and what it holds."""

    kind: str
    spec: str  # e.g. "/tmp/.../raw.h5/volume/raw"
    file: Path  # the file or store on disk
    data: np.ndarray  # exactly what was written, in ``axes`` order
    axes: str  # the axes a reader should report


def write_hdf5(
    path: Path, data: np.ndarray, axes: str = "zyx", dataset: str = "volume/raw", chunks=FILE_CHUNKS
) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape)) if chunks else None
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(dataset, data=data, chunks=chunks)
        dset.attrs["axistags"] = vigra_axistags(axes)
    return SourceFile("hdf5", f"{path}/{dataset}", path, data, axes)


def write_zarr3(path: Path, data: np.ndarray, axes: str = "zyx", chunks=FILE_CHUNKS) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        zarr_format=3,
        dimension_names=list(axes),
    )
    arr[...] = data
    return SourceFile("zarr3", str(path), path, data, axes)


def write_zarr2(path: Path, data: np.ndarray, axes: str = "zyx", chunks=FILE_CHUNKS) -> SourceFile:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        zarr_format=2,
        attributes={"_ARRAY_DIMENSIONS": list(axes)},
    )
    arr[...] = data
    return SourceFile("zarr2", str(path), path, data, axes)


def write_imagej_tiff(path: Path, data: np.ndarray) -> SourceFile:
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    return SourceFile("tiff", str(path), path, data, "zyx")


def write_npy(path: Path, data: np.ndarray) -> SourceFile:
    np.save(path, data)
    return SourceFile("npy", str(path), path, data, "zyx")  # 3-D, last axis > 4: guessed zyx


WRITERS = {
    "hdf5": lambda d, data: write_hdf5(d / "raw.h5", data),
    "zarr3": lambda d, data: write_zarr3(d / "raw3.zarr", data),
    "zarr2": lambda d, data: write_zarr2(d / "raw2.zarr", data),
    "tiff": lambda d, data: write_imagej_tiff(d / "raw.tif", data),
    "npy": lambda d, data: write_npy(d / "raw.npy", data),
}
FILE_KINDS = tuple(WRITERS)
