"""Direct chunk I/O for Zarr arrays on a local file system.

zarr-python 3 reads and writes through an asynchronous codec pipeline whose per-call overhead
is several times the cost of the codec itself (on this project's benchmark, writing 480 MiB of
uint8 chunks took 2.7 s through ``array[...] = block`` and 0.6 s by encoding and writing each
chunk file directly). For the common layout — a local store, regular chunks, the plain
``bytes`` codec (v3) or C order without filters (v2), and at most one of the zstd, blosc, gzip
or zlib compressors — :class:`ChunkFiles` reads and writes chunk files itself, with the same
numcodecs codecs zarr uses, so the files are exactly those zarr would write. Sharded v3 arrays
with that inner layout and the default shard index go through :class:`ShardFiles` (same
chunks and index format, but inner chunks in C order, not zarr's Morton order). Anything
else (transposes, big-endian data, other index layouts, remote stores) keeps going through
zarr: :meth:`ChunkFiles.of` returns None for it, and :func:`layout_refusal` says why.

The layout is recognised from the array's metadata document (the specification's JSON, the
same in every zarr-python release), never from zarr-python's own classes, whose names and
fields change between minor releases. Metadata it cannot parse is a refusal with a reason, not
a silent None. Where lazyexport relies on this path to keep its memory promise — the Zarr
outputs it creates, whose shards the plan counts as assembled and written once — the writer
refuses to go on without it (see ``formats/zarr.py``) rather than fall back to zarr.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np

from .errors import SourceError

_BLOSC_SHUFFLE = {
    "noshuffle": numcodecs.Blosc.NOSHUFFLE,
    "shuffle": numcodecs.Blosc.SHUFFLE,
    "bitshuffle": numcodecs.Blosc.BITSHUFFLE,
}
_V2_COMPRESSORS = frozenset({"zstd", "blosc", "gzip", "zlib"})
_V3_DATA_TYPES = frozenset(
    {"bool", "float16", "float32", "float64"}
    | {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}
)


_PROBE = 4096  # bytes of a chunk looked at first for a value other than the fill


class Refused(ValueError):
    """The array's layout is not one the direct chunk I/O takes (the message says why)."""


def _config(codec: dict) -> dict:
    return dict(codec.get("configuration") or {})


def _blosc(config: dict) -> numcodecs.abc.Codec:
    """numcodecs' Blosc for a v3 ``blosc`` configuration, with its ``typesize`` where this
    numcodecs takes one (as zarr does; without it the typed chunks give the same size)."""
    kwargs = dict(
        cname=config["cname"],
        clevel=config["clevel"],
        shuffle=_BLOSC_SHUFFLE[config["shuffle"]],
        blocksize=config.get("blocksize", 0),
    )
    if config.get("typesize") is not None:
        try:
            return numcodecs.Blosc(**kwargs, typesize=config["typesize"])
        except TypeError:  # numcodecs < 0.16
            pass
    return numcodecs.Blosc(**kwargs)


def _v3_compressor(codec: dict) -> numcodecs.abc.Codec:
    """The numcodecs codec zarr itself uses for a v3 compressor codec (its metadata)."""
    name, config = codec["name"], _config(codec)
    if name == "zstd":
        return numcodecs.Zstd(level=config.get("level", 0), checksum=config.get("checksum", False))
    if name == "gzip":
        return numcodecs.GZip(level=config.get("level", 5))
    if name == "blosc":
        return _blosc(config)
    raise Refused(f"the {name!r} codec")


def _v3_plain_codecs(codecs: list[dict]) -> numcodecs.abc.Codec | None:
    """The compressor of a v3 codec list ``bytes`` (little-endian) + at most one compressor."""
    first, *rest = codecs
    if first["name"] != "bytes" or _config(first).get("endian") == "big":
        raise Refused(f"codecs {[c['name'] for c in codecs]} (not little-endian 'bytes' first)")
    if len(rest) > 1:
        raise Refused(f"codecs {[c['name'] for c in codecs]} (more than one compressor)")
    return _v3_compressor(rest[0]) if rest else None


class _ChunkKey:
    """The chunk key encoding of the array's metadata: ``c/1/2`` (v3 default), ``1.2`` (v2)."""

    def __init__(self, prefix: str, separator: str):
        if separator not in "./" or len(separator) != 1:
            raise Refused(f"the chunk key separator {separator!r}")
        self.prefix, self.separator = prefix, separator

    def __call__(self, index: tuple[int, ...]) -> str:
        return self.prefix + self.separator.join(str(int(i)) for i in index)


def _v3_key(doc: dict) -> _ChunkKey:
    encoding = doc.get("chunk_key_encoding") or {"name": "default"}
    separator = _config(encoding).get("separator", "/" if encoding["name"] == "default" else ".")
    if encoding["name"] == "default":
        return _ChunkKey("c" + separator, separator)
    if encoding["name"] == "v2":
        return _ChunkKey("", separator)
    raise Refused(f"the chunk key encoding {encoding['name']!r}")


def _dtype(name: Any, endian: str | None = None) -> np.dtype:
    """The numpy type of chunks of the data type ``name`` (numbers and bool, little-endian)."""
    dtype = np.dtype(name)
    if dtype.kind not in "biuf" or dtype.byteorder == ">" or endian == "big":
        raise Refused(f"the data type {name!r}")
    return dtype if dtype.byteorder == "|" else dtype.newbyteorder("<")


def _v3_layout(doc: dict) -> dict:
    """ChunkFiles' arguments for a v3 array's metadata document (or ShardFiles', with
    ``inner``); raises Refused for a layout it does not take."""
    grid = doc["chunk_grid"]
    if grid["name"] != "regular" or doc.get("storage_transformers"):
        raise Refused(f"the chunk grid {grid['name']!r}")
    if doc["data_type"] not in _V3_DATA_TYPES:
        raise Refused(f"the data type {doc['data_type']!r}")
    layout = dict(chunks=tuple(_config(grid)["chunk_shape"]), key_of=_v3_key(doc))
    codecs = list(doc["codecs"])
    if codecs[0]["name"] != "sharding_indexed":
        layout["compressor"] = _v3_plain_codecs(codecs)
        layout["dtype"] = _dtype(doc["data_type"], _config(codecs[0]).get("endian"))
        return layout
    if len(codecs) > 1:
        raise Refused("codecs after the sharding codec")
    sharding = _config(codecs[0])
    index = [(c["name"], _config(c).get("endian", "little")) for c in sharding["index_codecs"]]
    if index != [("bytes", "little"), ("crc32c", "little")]:
        raise Refused(f"the shard index codecs {[c['name'] for c in sharding['index_codecs']]}")
    if sharding.get("index_location", "end") != "end":
        raise Refused(f"the shard index at the {sharding['index_location']}")
    inner = list(sharding["codecs"])
    layout["compressor"] = _v3_plain_codecs(inner)
    layout["dtype"] = _dtype(doc["data_type"], _config(inner[0]).get("endian"))
    layout["inner"] = tuple(sharding["chunk_shape"])
    return layout


def _v2_layout(doc: dict) -> dict:
    """ChunkFiles' arguments for a v2 array's metadata document; raises Refused for others."""
    if doc.get("filters") or doc.get("order", "C") != "C":
        raise Refused("filters or Fortran order")
    if not isinstance(doc["dtype"], str):
        raise Refused(f"the data type {doc['dtype']!r}")
    compressor = doc.get("compressor")
    if compressor is not None:
        if compressor.get("id") not in _V2_COMPRESSORS:
            raise Refused(f"the {compressor.get('id')!r} compressor")
        compressor = numcodecs.get_codec(dict(compressor))
    return dict(
        chunks=tuple(doc["chunks"]),
        dtype=_dtype(doc["dtype"]),
        compressor=compressor,
        key_of=_ChunkKey("", doc.get("dimension_separator") or "."),
    )


def layout_refusal(arr: Any) -> str | None:
    """Why :meth:`ChunkFiles.of` does not take the zarr array ``arr`` (None: it does)."""
    try:
        ChunkFiles._of(arr)
    except Refused as exc:
        return str(exc)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        return f"its metadata ({type(exc).__name__}: {exc})"
    return None


class ChunkFiles:
    """Reads regions of, and writes whole-chunk blocks into, one local Zarr array's chunk files.

    Picklable (a directory, the layout and a numcodecs codec), so blocks can be read and written
    on distributed workers. Regions are tuples of slices with steps of 1.
    """

    # read_into decodes a whole chunk that is one contiguous run of ``out`` straight into it
    # (the planner's cost model counts on it: lazyexport.cost.Source.in_place)
    decodes_in_place = True

    def __init__(
        self,
        root: Path,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: np.dtype,
        fill_value: Any,
        compressor: numcodecs.abc.Codec | None,
        key_of,
    ):
        self.root = Path(root)
        self.shape, self.chunks, self.dtype = shape, chunks, np.dtype(dtype)
        self.ndim = len(shape)
        self.fill_value = np.asarray(fill_value if fill_value is not None else 0, dtype=self.dtype)
        self.compressor = compressor
        self.key_of = key_of
        # a zero fill value: a chunk is all fill value when no element is true (one pass, no
        # temporary; -0.0 counts as 0.0 and NaN as not, as with ``!=``)
        self._zero_fill = self.dtype.kind in "biufc" and not self.fill_value.any()

    @classmethod
    def of(cls, arr: Any) -> ChunkFiles | None:
        """Direct chunk I/O for the zarr array ``arr``, or None if its layout needs zarr itself
        (:func:`layout_refusal` says why). The layout is read from the array's metadata document
        (``arr.metadata.to_dict()``, the Zarr specification's JSON), not from zarr-python's
        classes, so it does not depend on which zarr release wrote or opened the array."""
        try:
            return cls._of(arr)
        except Refused:
            return None

    @classmethod
    def _of(cls, arr: Any) -> ChunkFiles:
        """As :meth:`of`; raises Refused for a layout it does not take."""
        import zarr.storage

        store = arr.store
        if type(store) is not zarr.storage.LocalStore:
            raise Refused(f"a {type(store).__name__} (not a local directory)")
        doc = arr.metadata.to_dict()
        try:
            if doc.get("zarr_format") == 3:
                layout = _v3_layout(doc)
            elif doc.get("zarr_format") == 2:
                layout = _v2_layout(doc)
            else:
                raise Refused(f"zarr_format {doc.get('zarr_format')!r}")
        except Refused:
            raise
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            # e.g. numcodecs refusing a codec's parameters: zarr itself may still read it
            reason = f"metadata it does not understand ({type(exc).__name__}: {exc})"
            raise Refused(reason) from None
        if not doc["shape"]:
            raise Refused("a 0-dimensional array")
        if np.dtype(arr.dtype).byteorder == ">":  # zarr hands out big-endian values: so would we
            raise Refused(f"the big-endian data type {arr.dtype}")
        root = Path(store.root) / arr.path if arr.path else Path(store.root)
        inner = layout.pop("inner", None)
        args = (
            root,
            tuple(doc["shape"]),
            layout["chunks"],
            layout["dtype"],
            arr.fill_value,
            layout["compressor"],
            layout["key_of"],
        )
        return ShardFiles(*args, inner=inner) if inner is not None else cls(*args)

    # -- chunks
    def _path(self, index: tuple[int, ...]) -> Path:
        return self.root / self.key_of(index)

    def _load(self, index: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``index`` as a full chunk-shaped array (into ``out`` if given, C-contiguous)."""
        try:
            with open(self._path(index), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if out is None:
                return np.full(self.chunks, self.fill_value, dtype=self.dtype)
            out[...] = self.fill_value
            return out
        if out is None:
            out = np.empty(self.chunks, dtype=self.dtype)
        try:
            return self._decode(raw, out)
        except (RuntimeError, ValueError, TypeError) as exc:  # numcodecs' codecs say so in these
            raise SourceError(
                f"chunk file {self._path(index)} cannot be decoded ({exc}); the source is "
                f"corrupt or was written incompletely"
            ) from None

    def _decode(self, raw: bytes, out: np.ndarray) -> np.ndarray:
        """One encoded chunk into ``out`` (chunk-shaped, C-contiguous)."""
        if self.compressor is None:
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
        else:
            self.compressor.decode(raw, out=out)
        return out

    def _only_fill(self, values: np.ndarray) -> bool:
        """Whether ``values`` are all the fill value."""
        if self._zero_fill:
            return not values.any()
        if self.fill_value.dtype.kind == "f" and np.isnan(self.fill_value):
            return bool(np.isnan(values).all())
        return not np.any(values != self.fill_value)

    def _encode(self, chunk: np.ndarray) -> bytes | None:
        """One chunk's bytes, or None when it holds only the fill value (zarr does not store
        those)."""
        flat = chunk.reshape(-1)
        # a chunk of data shows a value other than the fill among its first elements: the whole
        # chunk is looked at only when they are all fill (on a 2 MiB uint16 chunk, 3 us for the
        # first 4 KiB against 210 us for all of it)
        if self._only_fill(flat[: _PROBE // self.dtype.itemsize]) and self._only_fill(flat):
            return None
        return chunk.tobytes() if self.compressor is None else self.compressor.encode(chunk)

    def _store(self, index: tuple[int, ...], chunk: np.ndarray) -> None:
        self._put(index, self._encode(chunk))

    def _put(self, index: tuple[int, ...], data: bytes | list[bytes] | None) -> None:
        """Write a chunk file (or remove it, for None)."""
        path = self._path(index)
        if data is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.writelines([data] if isinstance(data, bytes) else data)

    def _normalize(self, key) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        """``key`` (slices with step 1, integers, one Ellipsis) as a region of slices, and the
        axes that integers index (dropped from the result)."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        region, dropped = [], []
        for axis, (k, size) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                k = int(k) + size if k < 0 else int(k)
                if not 0 <= k < size:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} with size {size}")
                k = slice(k, k + 1)
                dropped.append(axis)
            if not isinstance(k, slice):
                raise TypeError(f"ChunkFiles takes slices and integers, not {k!r}")
            start, stop, step = k.indices(size)
            if step != 1:
                raise TypeError("ChunkFiles takes slices with step 1 only")
            region.append(slice(start, max(stop, start)))
        return tuple(region), tuple(dropped)

    # -- reading (the source side: ``reader[region]``, like a zarr array)
    def __getitem__(self, key) -> np.ndarray:
        region, dropped = self._normalize(key)
        out = np.empty(tuple(s.stop - s.start for s in region), dtype=self.dtype)
        if out.size == 0:
            return out.squeeze(axis=dropped)
        self._read_into(out, region)
        return out.squeeze(axis=dropped)

    def read_into(self, out: np.ndarray, key) -> np.ndarray:
        """``self[key]`` decoded into ``out`` (an array of the region's shape and this dtype,
        any strides; integers in ``key`` not allowed), which is returned: no result array made."""
        region, dropped = self._normalize(key)
        shape = tuple(s.stop - s.start for s in region)
        if dropped or out.shape != shape or out.dtype != self.dtype:
            raise ValueError(f"read_into needs a {shape} {self.dtype} array, not {out.shape}")
        if out.size:
            self._read_into(out, region)
        return out

    def _read_into(self, out: np.ndarray, region: tuple[slice, ...]) -> None:
        for index, inner, outer in self._pieces(region, self.chunks):
            whole = all(i.start == 0 and i.stop == c for i, c in zip(inner, self.chunks))
            if whole and out[outer].flags.c_contiguous:
                self._load(index, out[outer])  # decode straight into the result
            else:
                out[outer] = self._load(index)[inner]

    def _pieces(self, region: tuple[slice, ...], chunks: tuple[int, ...]):
        """(chunk index, the part of that chunk, where it goes in the region) for every chunk
        of shape ``chunks`` that ``region`` touches."""
        ranges = [range(s.start // c, math.ceil(s.stop / c)) for s, c in zip(region, chunks)]
        for index in itertools.product(*ranges):
            origin = [i * c for i, c in zip(index, chunks)]
            inner = tuple(
                slice(max(s.start, o) - o, min(s.stop, o + c) - o)
                for s, o, c in zip(region, origin, chunks)
            )
            outer = tuple(
                slice(o + i.start - s.start, o + i.stop - s.start)
                for s, o, i in zip(region, origin, inner)
            )
            yield index, inner, outer

    # -- writing (the target side: blocks made of whole chunks, edge chunks cut by the shape)
    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> None:
        region, _ = self._normalize(location)
        for s, c, size in zip(region, self.chunks, self.shape):
            if s.start % c or (s.stop % c and s.stop != size):
                raise ValueError(f"block {location} is not made of whole chunks {self.chunks}")
        for index, _, part in self._pieces(region, self.chunks):
            piece = block[part]
            if piece.shape == self.chunks:  # in the dtype and byte order the metadata declares
                chunk = np.ascontiguousarray(piece, dtype=self.dtype)
            else:  # an edge chunk: stored full size, padded
                chunk = np.full(self.chunks, self.fill_value, dtype=self.dtype)
                chunk[tuple(slice(0, n) for n in piece.shape)] = piece
            self._store(index, chunk)

    def __repr__(self) -> str:
        return (
            f"ChunkFiles({str(self.root)!r}, shape={self.shape}, chunks={self.chunks}, "
            f"dtype={self.dtype})"
        )


class ShardFiles(ChunkFiles):
    """:class:`ChunkFiles` for a sharded Zarr v3 array: each file holds one shard (``chunks`` here
    is the shard shape), made of its inner chunks encoded one by one (those of only the fill
    value left out), then the shard index — ``(offset, nbytes)`` as little-endian uint64 per inner
    chunk in C order, ``2**64 - 1`` twice for a missing one — and the index's CRC32C, as the
    sharding codec's default layout (index at the end) prescribes. Inner chunks are stored in C
    order (zarr uses Morton order; readers go by the index, so both are valid)."""

    decodes_in_place = False  # inner chunks are decoded into a scratch

    def __init__(self, *args: Any, inner: tuple[int, ...]):
        super().__init__(*args)
        self.inner = inner
        self.per_shard = tuple(s // c for s, c in zip(self.chunks, inner))
        self._index_bytes = 16 * math.prod(self.per_shard)

    def _read_into(self, out: np.ndarray, region: tuple[slice, ...]) -> None:
        """Shard by shard (one file open at a time), only the inner chunks ``region`` touches
        are read (positioned reads) and decoded."""
        chunk = np.empty(self.inner, dtype=self.dtype)
        for shard, part, where in self._pieces(region, self.chunks):
            found = self._open_shard(shard)
            if found is None:
                out[where] = self.fill_value
                continue
            fd, spans = found
            target = out[where]
            try:
                for local, inner, outer in self._pieces(part, self.inner):
                    offset, nbytes = (int(v) for v in spans[local])
                    if offset == _MISSING:
                        target[outer] = self.fill_value
                    else:
                        target[outer] = self._decode(os.pread(fd, nbytes, offset), chunk)[inner]
            finally:
                os.close(fd)

    def _open_shard(self, shard: tuple[int, ...]) -> tuple[int, np.ndarray] | None:
        """An open shard file and its index (None: no file, all fill value)."""
        path = self._path(shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        size = os.fstat(fd).st_size
        raw = os.pread(fd, self._index_bytes + 4, max(size - self._index_bytes - 4, 0))
        if len(raw) != self._index_bytes + 4 or raw[-4:] != _crc32c(raw[:-4]):
            os.close(fd)
            raise ValueError(f"shard {path} is damaged: its index checksum does not match")
        return fd, np.frombuffer(raw[:-4], dtype="<u8").reshape(self.per_shard + (2,))

    def _store(self, index: tuple[int, ...], shard: np.ndarray) -> None:
        """Each inner chunk written to the shard file as soon as it is encoded (a task holds one
        encoded inner chunk, never the encoded shard), then the index; no file where every inner
        chunk holds only the fill value."""
        spans = np.full(self.per_shard + (2,), _MISSING, dtype="<u8")
        path, file, offset = self._path(index), None, 0
        try:
            for local, _, where in self._pieces(
                tuple(slice(0, n) for n in self.chunks), self.inner
            ):
                data = self._encode(np.ascontiguousarray(shard[where]))
                if data is None:
                    continue
                if file is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    file = open(path, "wb")  # noqa: SIM115 (closed below, also on an error)
                file.write(data)
                spans[local] = (offset, len(data))
                offset += len(data)
            if file is None:
                return self._put(index, None)
            table = spans.tobytes()
            file.write(table + _crc32c(table))
        except BaseException:
            if file is not None:  # no shard file without its index
                file.close()
                path.unlink(missing_ok=True)
            raise
        finally:
            if file is not None and not file.closed:
                file.close()


_MISSING = 2**64 - 1


def _crc32c(data: bytes) -> bytes:
    return google_crc32c.value(data).to_bytes(4, "little")


def reader_for(arr: Any) -> Any:
    """What to read ``arr`` (a zarr array) through: its chunk files where possible, else itself."""
    return ChunkFiles.of(arr) or arr


__all__ = ["ChunkFiles", "Refused", "ShardFiles", "layout_refusal", "reader_for"]
