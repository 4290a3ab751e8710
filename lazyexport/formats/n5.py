"""N5 containers, for Fiji's N5 tools and BigDataViewer: ``out.n5`` (dataset at the root) or
``out.n5/path/to/dataset``.

N5 lists dimensions in the reverse (Fortran) order of ours: ``dimensions``, ``blockSize`` and
the ``axes`` attribute name the fastest-varying axis (x) first, and a block's C-ordered bytes in
our axis order are exactly its N5 bytes. Each chunk is one file ``<dataset>/<i_x>/<i_y>/...``:
a big-endian header (mode 0, number of dimensions, the block's own size per dimension - edge
blocks are stored cut short) followed by the big-endian data, gzip-compressed by default.
Blocks cover whole chunks, so chunk files are written (and compressed) in parallel with no lock.

The block codec lives here and is shared with :mod:`lazyexport.sources.n5`, which reads N5 back:
it decodes gzip (and its zlib framing, ``useZlib``), bzip2, xz, and the blosc and zstd
compressions of the n5-blosc and n5-zstandard extensions, through numcodecs. lz4 (lz4-java's own
block framing, which no maintained Python library reads) is refused when the dataset is opened.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np

from ..errors import FormatError
from ..storage import remove
from ..units import SPATIAL_AXES, unit_symbol
from . import container
from .base import Target
from .registry import register

N5_VERSION = "4.0.0"
DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
ATTRIBUTES = "attributes.json"


def encode_block(block: np.ndarray, compression: str, level: int) -> bytes:
    header = struct.pack(">HH", 0, block.ndim) + struct.pack(f">{block.ndim}I", *reversed(block.shape))
    data = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder(">")).tobytes()
    if compression == "gzip":
        data = gzip.compress(data, compresslevel=level, mtime=0)
    return header + data


# N5 compression type -> the numcodecs codec that decodes its bytes (each a standard stream:
# the parameters in the attributes, like a level or blosc's cname, matter only for writing)
_DECODERS: dict[str, Callable[[dict], numcodecs.abc.Codec]] = {
    "gzip": lambda c: numcodecs.Zlib() if c.get("useZlib") else numcodecs.GZip(),
    "bzip2": lambda c: numcodecs.BZ2(),
    "xz": lambda c: numcodecs.LZMA(),
    "blosc": lambda c: numcodecs.Blosc(),
    "zstd": lambda c: numcodecs.Zstd(),
}


def block_decoder(compression: dict) -> Callable[[bytes], bytes] | None:
    """The decompression of a dataset's ``compression`` attribute (None for raw); raises
    FormatError for one that cannot be read."""
    kind = str(compression.get("type", "raw"))
    if kind == "raw":
        return None
    if kind not in _DECODERS:
        raise FormatError(f"N5 compression {kind!r} cannot be read; readable: raw, {', '.join(_DECODERS)}")
    return _DECODERS[kind](compression).decode


def decode_block(raw: bytes, dtype: np.dtype, decoder: Callable[[bytes], bytes] | None) -> np.ndarray:
    """A chunk file's bytes -> the block in our (C) axis order and native byte order."""
    mode, ndim = struct.unpack(">HH", raw[:4])
    if mode != 0:
        raise ValueError(f"N5 block mode {mode} (varlength/object) is not supported")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])[::-1]
    data = raw[4 + 4 * ndim:]
    if decoder is not None:
        data = decoder(data)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder(">")).reshape(shape).astype(dtype)


def chunk_file(dataset: Path, grid: tuple[int, ...]) -> Path:
    return dataset.joinpath(*(str(i) for i in reversed(grid)))


def read_attributes(node: Path) -> dict:
    try:
        return json.loads((node / ATTRIBUTES).read_text())
    except FileNotFoundError:
        return {}


def _write_attributes(node: Path, attrs: dict) -> None:
    node.mkdir(parents=True, exist_ok=True)
    merged = {**read_attributes(node), **attrs}
    (node / ATTRIBUTES).write_text(json.dumps(merged, indent=1))


@register
class N5Writer(container.ContainerWriter):
    name = "n5"
    extensions = (".n5",)
    compressions = ("gzip", "raw")
    chunk_bytes = 2**20
    description = "an N5 dataset (Fiji N5 / BigDataViewer), gzip or raw blocks"
    options = ("pixel_size", "unit")
    layout = container.N5

    def chunks(self, plan) -> tuple[int, ...]:
        if plan.dtype.name not in DTYPES:
            raise FormatError(f"N5 cannot hold {plan.dtype} data; convert to one of {', '.join(DTYPES)}")
        return super().chunks(plan)

    def open(self, plan, token: str) -> Target:
        plan.output.parent.mkdir(parents=True, exist_ok=True)
        spot = container.place(plan.output, plan.internal, token)
        temp, internal = spot.temp, spot.internal
        compression = self.compression(plan)
        level = plan.settings.compression_level if plan.settings.compression_level is not None else 1
        attrs = {
            "dimensions": list(reversed(plan.shape)),
            "blockSize": list(reversed(plan.chunks)),
            "dataType": plan.dtype.name,
            "compression": {"type": "gzip", "level": level, "useZlib": False} if compression == "gzip"
            else {"type": "raw"},
            "axes": list(reversed(plan.axes)),
        }
        pixel_size, unit = plan.pixel_size, plan.unit
        if pixel_size:   # both conventions: n5-viewer's pixelResolution, and resolution + units
            sizes = [pixel_size.get(a, 1.0) for a in reversed(plan.axes)]
            # pixelResolution has one unit for all axes: only when it and every spatial size are known
            if unit and all(a in pixel_size for a in plan.axes if a in SPATIAL_AXES):
                attrs["pixelResolution"] = {"unit": unit_symbol(unit), "dimensions": sizes}
            attrs["resolution"] = sizes
            if unit:    # "" for the axes whose size is not known
                attrs["units"] = [unit_symbol(unit) if a in pixel_size else "" for a in reversed(plan.axes)]
        if plan.value_range is not None:
            attrs["drange"] = list(plan.value_range)
        store = spot.store
        try:
            if store is None:
                _write_attributes(temp, {"n5": N5_VERSION})
            _write_attributes(temp / internal if internal else temp, attrs)
        except BaseException:
            remove(temp)
            raise
        return N5Target({spot.final: temp}, token, internal, plan.chunks, compression, level, store)


class N5Target(Target):
    """``store``: the existing container the temporary dataset is moved into on commit (None:
    the temporary is the whole container)."""

    def __init__(self, temps: dict[Path, Path], token: str, internal: str, chunks: tuple[int, ...],
                 compression: str, level: int, store: Path | None = None):
        super().__init__(temps, token)
        (temp,) = temps.values()
        self.store, self.node = store, internal
        self.dataset = temp / internal if internal else temp
        self.chunk_shape = tuple(chunks)
        self.compression, self.level = compression, level

    def prepare_commit(self) -> None:
        container.settle(self, self.node)
        if self.store is not None:     # the root says "n5"; groups on the way are directories
            if "n5" not in read_attributes(self.store):
                _write_attributes(self.store, {"n5": N5_VERSION})
            next(iter(self.temps)).parent.mkdir(parents=True, exist_ok=True)

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        starts = [s.start for s in location]
        ranges = [range(0, n, c) for n, c in zip(block.shape, self.chunk_shape)]
        for corner in np.ndindex(*(len(r) for r in ranges)):
            inner = tuple(slice(r[i], r[i] + c) for r, i, c in zip(ranges, corner, self.chunk_shape))
            grid = tuple((s + sl.start) // c for s, sl, c in zip(starts, inner, self.chunk_shape))
            path = chunk_file(self.dataset, grid)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_block(block[inner], self.compression, self.level))
        return block.nbytes
