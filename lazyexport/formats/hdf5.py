"""HDF5: one chunked dataset (``out.h5/exported_data``) with ilastik's ``axistags`` and
``drange``."""

from __future__ import annotations

import itertools
import threading
import zlib
from pathlib import Path
from typing import NamedTuple

import h5py
import hdf5plugin
import numcodecs
import numpy as np
from isal import isal_zlib

from ..axes import vigra_axistags
from ..declarations import HDF5
from ..errors import FormatError
from ..storage import paths, reading, remove, temp_path
from ..storage.capabilities import replaced_whole
from ..units import SPATIAL_AXES, to_micrometers
from .base import Target, Writer
from .registry import register
from .spec import OutputSpec

DEFAULT_DATASET = "exported_data"
# Default levels; zstd and blosc are HDF5 filter plugins: readers need them too (hdf5plugin
# in Python, Fiji's HDF5 plugins bundle them), while gzip is readable everywhere.
_LEVELS = {"gzip": 1, "zstd": 3, "blosc": 5}
ISAL_MAX_LEVEL = 3  # gzip levels ISA-L offers (0-3); higher ones use zlib


def _filter(compression: str, level: int) -> dict:
    """h5py ``create_dataset`` keywords for ``compression`` at ``level``."""
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": level}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=level))
    if compression == "blosc":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=level, shuffle=hdf5plugin.Blosc.SHUFFLE))
    return {}


def _encoder(compression: str, level: int):
    """The function that turns a C-contiguous chunk into what the filter stores, or None for
    filters only h5py's own pipeline can apply (lzf)."""
    if compression == "gzip":
        # the deflate filter stores a zlib stream; ISA-L writes one about 4x faster than zlib
        if level <= ISAL_MAX_LEVEL:
            return lambda chunk: isal_zlib.compress(chunk, level)
        return lambda chunk: zlib.compress(chunk, level)
    if compression == "zstd":
        codec = numcodecs.Zstd(level=level)
        return codec.encode
    if compression == "blosc":
        codec = numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)
        return codec.encode
    if compression == "none":
        return lambda chunk: chunk.tobytes()
    return None


# One open handle per temporary file per process; h5py serializes access anyway.
_HANDLES: dict[str, h5py.File] = {}
_HANDLES_LOCK = threading.Lock()
_WRITE_LOCK = threading.Lock()  # the one serialized step: bytes into the file


class EncodedBlock(NamedTuple):
    """A block ready for the file: its chunks' stored bytes by chunk offset (or, for lzf, the
    block)."""

    nbytes: int
    location: tuple[slice, ...]
    data: list[tuple[tuple[int, ...], bytes]] | np.ndarray


def _handle(path: Path) -> h5py.File:
    with _HANDLES_LOCK:
        f = _HANDLES.get(str(path))
        if f is None or not f.id.valid:
            f = _HANDLES[str(path)] = h5py.File(path, "r+")
        return f


def _close_handle(path: Path) -> None:
    with _HANDLES_LOCK:
        f = _HANDLES.pop(str(path), None)
    if f is not None and f.id.valid:
        f.close()


def _other_content(file: Path, dataset: str) -> bool | None:
    """None if ``file`` is not readable HDF5; else whether it holds anything besides ``dataset``
    (at a URL too: read through range requests)."""
    try:
        with h5py.File(reading.open_file(file), "r") as f:
            names: list[str] = []
            f.visit(names.append)
            inside = {dataset.strip("/")} | {p for p in _parents(dataset)}
            return any(n not in inside for n in names) or bool(f.attrs.keys())
    except OSError:
        return None


def _parents(dataset: str) -> list[str]:
    parts = dataset.strip("/").split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@register
class HDF5Writer(Writer):
    declaration = HDF5
    chunk_bytes = 2**20

    def write_buffers(
        self,
        block_bytes: int,
        unit_bytes: int,
        staged: bool = False,
        spec: OutputSpec | None = None,
    ) -> int:
        # every chunk of the block encoded before the one writer stores them, and a chunk copy
        return block_bytes + 2 * unit_bytes

    def dataset(self, spec: OutputSpec) -> str:
        return spec.dataset or DEFAULT_DATASET

    def existing(self, spec: OutputSpec) -> list[Path]:
        """The file if it holds the dataset (or is not HDF5: then the whole file is in the way);
        a file at a URL alike, read through range requests."""
        file = spec.output
        if not paths.present(file):
            return []
        if _other_content(file, self.dataset(spec)) is None:
            return [file]
        with h5py.File(reading.open_file(file), "r") as f:
            return [file] if self.dataset(spec) in f else []

    def adds_to_existing(self, spec: OutputSpec) -> bool:
        return True  # the dataset goes into the file, beside what else it holds

    def delete(self, spec: OutputSpec, dry_run: bool = False) -> list[str]:
        """Remove the file, or only our dataset when the file holds other data too (at a URL,
        where an object is replaced only as a whole, such a file is left alone)."""
        self.refuse_foreign(spec)
        if not self.existing(spec):
            return []
        file, name = spec.output, self.dataset(spec)
        other = _other_content(file, name)
        if other is None:
            raise FormatError(
                f"{file} is not an HDF5 file, so lazyexport did not write it; left alone"
            )
        if not other:
            if not dry_run:
                paths.remove_file(file)
            return [str(file)]
        if replaced_whole(file):
            raise FormatError(
                f"{file} holds other datasets besides {name}, and a file at a URL is only "
                "replaced whole, so it is left alone; export the others elsewhere first, or "
                "delete the whole file yourself"
            )
        if not dry_run:
            with h5py.File(file, "r+") as f:
                del f[name]
                for parent in reversed(_parents(name)):  # groups the export created, if now empty
                    if parent in f and not len(f[parent]) and not f[parent].attrs.keys():
                        del f[parent]
        return [f"{file}/{name} (only this dataset: the file holds other data)"]

    def open(self, spec: OutputSpec, token: str) -> Target:
        final = spec.output
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(final, token)
        name = self.dataset(spec)
        compression = spec.compression
        level = spec.compression_level
        level = _LEVELS.get(compression, 0) if level is None else level
        try:
            with h5py.File(temp, "w") as f:
                dset = f.create_dataset(
                    name,
                    shape=spec.shape,
                    dtype=spec.dtype,
                    chunks=spec.chunks,
                    fillvalue=0,
                    **_filter(compression, level),
                )
                sizes, unit = spec.pixel_size, spec.unit
                um = {a: to_micrometers(v, unit) for a, v in sizes.items()} if unit else {}
                dset.attrs["axistags"] = vigra_axistags(spec.axes, um or sizes)  # vigra's: any unit
                # Fiji's HDF5 plugin and many others read voxel sizes in micrometers from here: only
                # when every spatial size is known (1 for the other axes, as they expect)
                if um and all(a in um for a in spec.axes if a in SPATIAL_AXES):
                    dset.attrs["element_size_um"] = np.array([um.get(a, 1.0) for a in spec.axes])
                if spec.value_range is not None:
                    dset.attrs["drange"] = np.array(spec.value_range, dtype=spec.dtype)
        except BaseException:
            remove(temp)
            raise
        merge = final.exists() and bool(_other_content(final, name))
        return HDF5Target({final: temp}, token, name, merge, compression, level, spec.chunks)


class HDF5Target(Target):
    """Compresses each chunk of a block on the calling thread or worker (the codecs release
    the GIL, so threads compress in parallel), then writes the encoded bytes with h5py's direct
    chunk write: only that byte write is serialized. lzf, which has no Python encoder, goes
    through h5py's own (serial) filter pipeline.

    HDF5 files cannot be written by two processes at once, so the target is ``single_writer``:
    under process-based schedulers (a dask cluster) the workers only :meth:`encode`, and the
    process running the export writes the compressed chunks into the file (:meth:`store`)."""

    def __init__(
        self,
        temps: dict[Path, Path],
        token: str,
        dataset: str,
        merge: bool,
        compression: str,
        level: int,
        chunks: tuple[int, ...],
    ):
        super().__init__(temps, token)
        ((self.final, self.temp),) = temps.items()
        self.dataset = dataset
        self.merge = merge  # the final file holds other data: copy our dataset into it
        self.compression = compression
        self.level = level
        self.chunks = tuple(chunks)

    def encode_chunk(self, chunk: np.ndarray) -> bytes:
        if chunk.shape != self.chunks:  # an edge chunk: HDF5 stores it padded to full size
            full = np.zeros(self.chunks, dtype=chunk.dtype)
            full[tuple(slice(0, n) for n in chunk.shape)] = chunk
            chunk = full
        return _encoder(self.compression, self.level)(np.ascontiguousarray(chunk))

    def encode(self, block: np.ndarray, location: tuple[slice, ...]) -> EncodedBlock:
        """The block's chunks, each encoded as stored in the file, at their chunk offsets
        (lzf: the block itself, for h5py's filter in :meth:`store`)."""
        if _encoder(self.compression, self.level) is None:
            return EncodedBlock(block.nbytes, location, block)
        chunks = []
        starts = [range(0, n, c) for n, c in zip(block.shape, self.chunks)]
        for offset in itertools.product(*starts):
            inner = tuple(slice(o, o + c) for o, c in zip(offset, self.chunks))
            absolute = tuple(loc.start + o for loc, o in zip(location, offset))
            chunks.append((absolute, self.encode_chunk(block[inner])))
        return EncodedBlock(block.nbytes, location, chunks)

    def store(self, encoded: EncodedBlock) -> int:
        dset = _handle(self.temp)[self.dataset]
        with _WRITE_LOCK:
            if isinstance(encoded.data, np.ndarray):
                dset[encoded.location] = encoded.data
            else:
                for offset, data in encoded.data:
                    dset.id.write_direct_chunk(offset, data)
        return encoded.nbytes

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        return self.store(self.encode(block, location))

    def close(self) -> None:
        _close_handle(self.temp)

    finish = close

    def commit(self) -> list[Path]:
        # another export may have created the file meanwhile: then add to it, never replace it
        self.merge = self.merge or (
            self.final.exists() and bool(_other_content(self.final, self.dataset))
        )
        if not self.merge:
            return super().commit()
        self.finish()
        # Copy into the existing file under a temporary name, then swap: the old dataset
        # disappears only once the new one is complete.
        staging = f"{self.dataset}.lazyexport-new"
        with h5py.File(self.temp, "r") as src, h5py.File(self.final, "r+") as dst:
            if staging in dst:
                del dst[staging]
            parent = self.dataset.rpartition("/")[0]
            if parent:
                dst.require_group(parent)
            src.copy(src[self.dataset], dst, name=staging)
            if self.dataset in dst:
                del dst[self.dataset]
            dst.move(staging, self.dataset)
        for path in (self.temp, *self.scratch):
            remove(path)
        return [self.final]
