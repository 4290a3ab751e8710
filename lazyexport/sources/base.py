"""What every source opener shares: a picklable lazily opened file array, the source's identity
and canonical dtype, and the wrapping of a dask array as a labeled :class:`xarray.DataArray`
(from a :class:`~lazyexport.sources.facts.SourceMeta`: :func:`from_meta`).

Importing this module imports neither dask nor xarray (``lazyexport info`` describes a file from
its metadata without them); the functions that make arrays import them when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..axes import guess_axes, parse_axes
from ..errors import ExportError, SourceError
from ..storage import reading
from ..storage.paths import identity_text
from .autochunk import auto_chunks
from .facts import SourceFacts, SourceMeta, attach_facts

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

# Bytes per dask chunk that openers aim for when growing a file's native chunks.
CHUNK_TARGET_BYTES = 64 * 2**20

# File arrays of this process that hold an open handle, for release_files().
_OPEN: weakref.WeakSet[FileArray] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def canonical_dtype(dtype: Any) -> np.dtype:
    """numpy's own dtype object for ``dtype``: readers may give equal but other ones (tifffile's
    ``ulonglong`` for uint64) that zarr's dtype registry rejects."""
    dtype = np.dtype(dtype)
    return dtype if dtype.fields else np.dtype(dtype.str)


def file_identity(*paths: str | os.PathLike) -> str | None:
    """A hash that changes when the data of the files ``paths`` changes: the size, modification
    time and inode of each file, or of every file below a directory (a Zarr array, an N5
    dataset), read from the file system only (at a URL: the size and entity tag of the object,
    or of every object below the prefix). None when a path cannot be listed: then nobody
    can tell whether the data changed."""
    try:
        listing = [reading.contents(p) for p in paths]
    except OSError:
        return None
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:32]


def stamp(path: Any) -> tuple | None:
    """Size, modification time and inode of ``path`` itself (one stat; None if it cannot be
    read): part of a source's dask name. What decides whether a ``--resume`` export may reuse
    blocks is the full :func:`file_identity`, taken only then. For an object (a URL): its size
    and entity tag."""
    return reading.stamp(path)


class FileArray:
    """An array stored in a file, opened on first access in each process.

    dask reads blocks through ``__getitem__``; the object pickles without its open handle, so
    blocks can be read on distributed workers. Subclasses implement :meth:`_open`, returning
    anything indexable with a tuple of slices (an h5py dataset, a memory map, a zarr array).
    The dask name holds the :func:`stamp` of :meth:`data_path`; a ``--resume`` export compares
    the full :func:`file_identity` of it (every chunk file of a directory).
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype: Any, key: str = ""):
        # absolute: workers of a cluster may run in other directories
        self.path: Any = reading.absolute(path)
        # a URL's storage options travel with the array to the workers that read it
        self.storage_options = reading.options_for(path)
        self.key = key
        self.shape = tuple(int(s) for s in shape)
        self.dtype = canonical_dtype(dtype)
        self.ndim = len(self.shape)
        self._handle: Any = None
        self._lock = threading.Lock()

    def data_path(self) -> str:
        """The file, or the directory, whose files hold the array's data."""
        return self.path

    def file(self) -> Any:
        """What to hand a reader that takes a file name or a file object: the path, or for a URL
        a :class:`~lazyexport.remote.RemoteFile` (range requests)."""
        return reading.open_file(self.path, self.storage_options)

    def _open(self) -> Any:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        """Release ``handle`` (what :meth:`_open` returned); by default it is just dropped."""

    def _array(self) -> Any:
        if self._handle is None:
            with self._lock:
                if self._handle is None:
                    self._handle = self._open()
                    with _OPEN_LOCK:
                        _OPEN.add(self)
        return self._handle

    def close(self) -> None:
        """Release the open handle, if any; the next read opens the file again."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._close(handle)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._array()[key])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __dask_tokenize__(self):
        return (
            type(self).__name__,
            self.path,
            self.key,
            self.shape,
            str(self.dtype),
            stamp(self.data_path()),
        )

    def __repr__(self) -> str:
        inner = f"{self.path}/{self.key}" if self.key else self.path
        return f"{type(self).__name__}({inner!r}, shape={self.shape}, dtype={self.dtype})"


def release_files(paths: Iterable[str | os.PathLike]) -> None:
    """Close the handles this process holds open on ``paths`` for reading sources, before those
    files are written: HDF5 cannot open a file for writing while it is open read-only in the
    same process (an export into the source's own HDF5 file). Sources open them again if read."""
    wanted = {key for key in map(reading.handle_key, paths) if key is not None}
    with _OPEN_LOCK:
        arrays = [a for a in _OPEN if reading.handle_key(a.path) in wanted]
    for arr in arrays:
        arr.close()


def dask_chunks(shape: Sequence[int], dtype: Any, native: Sequence[int] | None) -> tuple:
    """dask chunks for a file array: whole multiples of its native chunks, about 64 MiB each
    (dask's "auto" chunks, computed without dask: :mod:`lazyexport.sources.autochunk`)."""
    return auto_chunks(shape, np.dtype(dtype).itemsize, native, CHUNK_TARGET_BYTES)


def from_file_array(arr: FileArray, native_chunks: Sequence[int] | None = None) -> da.Array:
    return reader_array(arr, dask_chunks(arr.shape, arr.dtype, native_chunks))


def resolve_axes(
    explicit: str | Sequence[str] | None,
    from_metadata: Sequence[str] | None,
    shape: Sequence[int],
) -> tuple[str, ...]:
    """Axis tags by priority: what the user passed, then the file's metadata, then a guess by
    rank."""
    if explicit is not None:
        return parse_axes(explicit, ndim=len(shape))
    if from_metadata is not None:
        return parse_axes(from_metadata, ndim=len(shape))
    return guess_axes(shape)


def default_nickname(file: str | os.PathLike) -> str:
    """A source's default nickname: its file name without extension (``a.ome.tif`` -> ``a``)."""
    name = reading.name_of(file)
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix else name


def labeled(
    data: da.Array,
    axes: Sequence[str],
    path: str | os.PathLike | None,
    reader: Any = None,
    native: Sequence[int] | None = None,
    *,
    identity_paths: Sequence[str] | None = None,
    file_chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    **attrs,
) -> xr.DataArray:
    """Wrap a dask array as a DataArray with lazyexport's source attributes.

    ``reader`` is the sliceable object ``data`` reads from (a :class:`FileArray`, a zarr array);
    block tasks read the source through it, piece by piece (see :mod:`lazyexport.blocks`).
    ``native`` is the file's own chunk shape, which the planner aligns output chunks with.
    ``file_chunks`` (default ``native``) and ``shards`` are the file's chunk and shard shapes as
    ``describe`` shows them. ``identity_paths`` are the files (or directories of chunk files) whose
    :func:`file_identity` says whether a file source changed (see :mod:`lazyexport.resume`). They
    are attached as one :class:`~lazyexport.sources.facts.SourceFacts` (none for an array without
    any). The dtype becomes numpy's own (:func:`canonical_dtype`).

    ``attrs`` always holds ``source`` (the path or a description), ``nickname`` (the file name
    without extension) and ``dataset_dir`` (the directory holding the source; the current
    directory for in-memory data).
    """
    import dask.array as da
    import xarray as xr

    dtype = exportable_dtype(data.dtype, path)
    if data.dtype.type is not dtype.type:
        data = da.map_blocks(_view, data, dtype.str, dtype=dtype)
    out = xr.DataArray(data, dims=tuple(axes), attrs={**path_attrs(path), **attrs})
    file_chunks = file_chunks if file_chunks is not None else native
    facts = SourceFacts(
        reader=reader,
        name=data.name if reader is not None else None,
        native=None if native is None else tuple(int(n) for n in native),
        # by axis: they stay right when the array is transposed
        chunks=None if file_chunks is None else _by_axis(out.dims, file_chunks),
        shards=None if shards is None else _by_axis(out.dims, shards),
        identity_paths=None
        if identity_paths is None
        else tuple(identity_text(cast(Path, p)) for p in identity_paths),
    )
    if any(v is not None for v in (reader, native, file_chunks, shards, identity_paths)):
        attach_facts(out, facts)
    return out


def exportable_dtype(dtype: Any, path: Any = None) -> np.dtype:
    """The :func:`canonical_dtype` of a source's values; refused where lazyexport cannot export
    them (complex, structured, wider than 64 bits)."""
    dtype = canonical_dtype(dtype)
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise SourceError(
            f"{path or 'the array'} holds {dtype} values, which lazyexport cannot export (only "
            "bool, "
            f"integer and floating-point images up to 64 bits); convert it first, e.g. to its "
            f"absolute value or real part"
        )
    return dtype


def path_attrs(path: str | os.PathLike | None) -> dict[str, str]:
    """The attributes every source has: ``source`` (the path or a description), ``nickname``
    and ``dataset_dir`` (see :func:`labeled`)."""
    if path is None:
        return {"source": "<in-memory array>", "nickname": "array", "dataset_dir": os.getcwd()}
    return {
        "source": reading.source_text(path),
        "nickname": default_nickname(path),
        "dataset_dir": reading.folder_of(path),
    }


def from_meta(meta: SourceMeta, data: da.Array, reader: Any = None) -> xr.DataArray:
    """The labeled DataArray of the source ``meta`` describes, its values read by ``data``
    (from ``reader``, see :func:`labeled`)."""
    return labeled(
        data,
        meta.axes,
        meta.path,
        reader=reader,
        native=meta.native,
        identity_paths=meta.identity_paths,
        file_chunks=meta.file_chunks,
        shards=meta.shards,
        **meta.attrs,
    )


def _by_axis(dims: Sequence[Any], lengths: Sequence[int]) -> dict[str, int]:
    return {str(a): int(n) for a, n in zip(dims, lengths)}


def _view(block: np.ndarray, dtype: str) -> np.ndarray:
    return block.view(dtype)


class Window:
    """The region ``box`` (a slice per axis) of a file reader, read as an array of its own (a
    region it cannot read is one line naming the source ``name`` and the region on ``dims``:
    :func:`read_region`)."""

    def __init__(
        self,
        reader: Any,
        box: tuple[slice, ...],
        dtype: Any,
        name: str,
        dims: Sequence[str],
    ):
        self.reader, self.box, self.dtype = reader, box, np.dtype(dtype)
        self.shape = tuple(b.stop - b.start for b in box)
        self.ndim = len(box)
        self.name, self.dims = name, tuple(dims)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        region = tuple(
            slice(b.start + (k.start or 0), b.start + (n if k.stop is None else k.stop))
            for k, b, n in zip(key, self.box, self.shape)
        )
        return read_region(self.reader, region, self.name, self.dims)


def read_region(
    reader: Any,
    key: tuple[slice, ...],
    name: str,
    dims: Sequence[str],
    into: np.ndarray | None = None,
) -> np.ndarray:
    """The region ``key`` of a file reader (zarr, h5py, tifffile, ours; ``into``: decoded into
    that array by the reader's ``read_into``). What the file's library raises where it cannot
    read it becomes one line (SourceError) naming the source ``name`` and the region on the axes
    ``dims``."""
    try:
        if into is not None:
            reader.read_into(into, key)
            return into
        return np.asarray(reader[key])
    except ExportError:
        raise
    # (tifffile.TiffFileError is a ValueError)
    except (OSError, RuntimeError, ValueError) as exc:
        where = ", ".join(f"{d}={k.start}:{k.stop}" for d, k in zip(dims, key))
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = (
            ""
            if isinstance(exc, OSError)
            else "; the source is corrupt or was written incompletely"
        )
        raise SourceError(
            f"cannot read {name} at {where}: {type(exc).__name__}: {said}{why}"
        ) from None


def reader_array(reader: Any, chunks: Any, name: str | None = None) -> da.Array:
    """A dask array reading ``reader`` block by block (no lock: readers are thread-safe)."""
    import dask.array as da

    return da.from_array(
        reader,
        chunks=chunks,
        asarray=False,
        fancy=False,
        lock=False,
        name=name,
        meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
    )
