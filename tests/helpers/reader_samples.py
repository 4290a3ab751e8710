"""Sample makers for the reader contract suite (tests/test_reader_contracts.py), keyed by reader
name: every reader in :func:`lazyexport.sources.readers` needs one here, or the suite fails.

A maker writes a ``zyx`` array into a directory in the reader's format, chunked (tiled, sliced)
in read units smaller than the array, and says how to open it: the text given to
``open_source``, the file or directory to upload for a URL, and the part after it. ``dtypes``
are the dtypes the format stores; a big-endian one wherever the format can hold it (N5 stores
every dtype big-endian).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import tifffile
import zarr

import lazyexport as le
from lazyexport.axes import vigra_axistags
from lazyexport.settings import ExportSettings

SHAPE = (6, 40, 48)  # z, y, x
UNITS = (4, 16, 16)  # the read units (chunks, tiles) the makers write, where the format has them


@dataclass(frozen=True)
class Sample:
    text: str  # what open_source is given
    upload: Path  # the file or directory that holds it (uploaded for a URL)
    inner: str = ""  # the part of ``text`` after ``upload`` ("/volume/raw")


# the read units (z, y, x indices) a cutout needs, and the unit shape by axis
Units = set[tuple[int, ...]]
GARBAGE = b"\xffnot a chunk\xff" * 8


@dataclass(frozen=True)
class Maker:
    write: Callable[[Path, np.ndarray], Sample]
    dtypes: tuple[str, ...]
    needs: str = ""  # a module the maker needs that may not be installed
    # overwrite every stored read unit but ``keep`` with bytes that cannot be decoded: a reader
    # that decodes one of them fails (None: the format's units cannot be told apart in the file)
    poison: Callable[[Sample, Units, dict[str, int]], None] | None = None


def _grid(shape: tuple[int, ...], units: dict[str, int]) -> list[tuple[int, ...]]:
    counts = [-(-n // units[d]) for d, n in zip("zyx", shape)]
    return list(np.ndindex(*counts))


def _poison_files(files: dict[tuple[int, ...], Path], keep: Units) -> None:
    for index, file in files.items():
        if index not in keep:
            file.write_bytes(GARBAGE)


def _poison_ranges(file: Path, ranges: dict[tuple[int, ...], tuple[int, int]], keep: Units) -> None:
    with open(file, "r+b") as f:
        for index, (offset, size) in ranges.items():
            if index not in keep:
                f.seek(offset)
                f.write((GARBAGE * (size // len(GARBAGE) + 1))[:size])


def _hdf5(d: Path, data: np.ndarray) -> Sample:
    path = d / "in.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("volume/raw", data=data, chunks=UNITS, compression="gzip")
        dset.attrs["axistags"] = vigra_axistags("zyx")
    return Sample(f"{path}/volume/raw", path, "/volume/raw")


def _zarr(d: Path, data: np.ndarray) -> Sample:
    path = d / "in.zarr"
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=UNITS,
        zarr_format=3,
        dimension_names=["z", "y", "x"],
    )
    arr[...] = data
    return Sample(str(path), path)


def _n5(d: Path, data: np.ndarray) -> Sample:
    path = d / "in.n5"
    le.export(
        data, ExportSettings(format="n5", output=f"{path}/g/raw", chunks=dict(zip("zyx", UNITS)))
    )
    return Sample(f"{path}/g/raw", path, "/g/raw")


def _npy(d: Path, data: np.ndarray) -> Sample:
    path = d / "in.npy"
    np.save(path, data)
    return Sample(str(path), path)


def _tiff(d: Path, data: np.ndarray) -> Sample:
    path = d / "in.tif"
    tifffile.imwrite(path, data, tile=UNITS[1:], byteorder=_order(data), compression="zlib")
    return Sample(str(path), path)


def _order(data: np.ndarray) -> Literal[">", "<"]:
    """The TIFF byte order that stores ``data`` as it is in memory."""
    return ">" if data.dtype.byteorder == ">" else "<"


def _slices(d: Path, data: np.ndarray) -> Sample:
    folder = d / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s_{z:03d}.tif", plane, byteorder=_order(data))
    return Sample(str(folder / "s_*.tif"), folder, "/s_*.tif")


def _poison_hdf5(sample: Sample, keep: Units, units: dict[str, int]) -> None:
    with h5py.File(sample.upload, "r") as f:
        dset = f[sample.inner.strip("/")]
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    ranges = {
        tuple(o // units[d] for o, d in zip(info.chunk_offset, "zyx")): (
            info.byte_offset,
            info.size,
        )
        for info in infos
    }
    _poison_ranges(sample.upload, ranges, keep)


def _poison_zarr(sample: Sample, keep: Units, units: dict[str, int]) -> None:
    shape = zarr.open_array(str(sample.upload), mode="r").shape
    files = {i: sample.upload.joinpath("c", *map(str, i)) for i in _grid(shape, units)}
    _poison_files(files, keep)


def _poison_n5(sample: Sample, keep: Units, units: dict[str, int]) -> None:
    dataset = sample.upload / sample.inner.strip("/")
    shape = tuple(reversed(json.loads((dataset / "attributes.json").read_text())["dimensions"]))
    files = {i: dataset.joinpath(*map(str, reversed(i))) for i in _grid(shape, units)}
    _poison_files(files, keep)


def _poison_tiff(sample: Sample, keep: Units, units: dict[str, int]) -> None:
    with tifffile.TiffFile(sample.upload) as tif:
        pages = [(p.shape, p.dataoffsets, p.databytecounts) for p in tif.pages]
    ranges: dict[tuple[int, ...], tuple[int, int]] = {}
    for z, (shape, offsets, sizes) in enumerate(pages):
        across = -(-shape[1] // units["x"])
        for t, (offset, size) in enumerate(zip(offsets, sizes)):
            ranges[(z // units["z"], t // across, t % across)] = (offset, size)
    _poison_ranges(sample.upload, ranges, keep)


def _poison_slices(sample: Sample, keep: Units, units: dict[str, int]) -> None:
    files = sorted(sample.upload.glob(sample.inner.strip("/")))
    needed = {i[0] for i in keep}
    _poison_files({(z, 0, 0): f for z, f in enumerate(files) if z not in needed}, set())


def _czi(d: Path, data: np.ndarray) -> Sample:
    from pylibCZIrw import czi as pyczi

    path = d / "in.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for z, plane in enumerate(data):
            czi.write(plane[..., None], plane={"T": 0, "C": 0, "Z": z})
    return Sample(str(path), path)


SAMPLES: dict[str, Maker] = {
    "hdf5": Maker(_hdf5, ("uint8", "uint16", "int32", "float32", ">f4"), poison=_poison_hdf5),
    "zarr": Maker(_zarr, ("uint8", "uint16", "int32", "float64", ">u2"), poison=_poison_zarr),
    "n5": Maker(_n5, ("uint8", "uint16", "int32", "float32"), poison=_poison_n5),
    "npy": Maker(_npy, ("uint8", "uint16", "int64", "float32", ">i4")),
    "tiff": Maker(_tiff, ("uint8", "uint16", "int32", "float32", ">u2"), poison=_poison_tiff),
    "slice-sequence": Maker(_slices, ("uint8", "uint16", "float32", ">u2"), poison=_poison_slices),
    "bioio": Maker(_czi, ("uint8", "uint16"), needs="pylibCZIrw"),
}


def maker(name: str) -> Maker:
    """The sample maker of the reader ``name``; a reader without one fails the suite."""
    if name not in SAMPLES:
        raise AssertionError(
            f"the reader {name!r} has no sample maker: add one to tests/helpers/reader_samples.py"
        )
    return SAMPLES[name]


def installed(module: str) -> bool:
    return not module or importlib.util.find_spec(module) is not None


def sample_data(dtype: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Distinct values over much of the dtype's range (float: fractions too), in ``dtype``'s byte
    order."""
    wanted = np.dtype(dtype)
    values = np.arange(np.prod(shape), dtype=np.uint64) * 2654435761 % 65521
    out: np.ndarray
    if wanted.kind == "f":
        out = values.astype(np.float64) / 7.0
    elif wanted.kind == "u":
        out = values % (np.iinfo(wanted).max + 1)
    else:
        out = values.astype(np.int64) - 32760
    return out.reshape(shape).astype(wanted)
