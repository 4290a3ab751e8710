"""The N5 block codec, shared by the N5 writer (:mod:`lazyexport.formats.n5`) and the N5 source
(:mod:`lazyexport.sources.n5`).

N5 lists dimensions in the reverse (Fortran) order of ours: a block's C-ordered bytes in our
axis order are exactly its N5 bytes. Each chunk is one file ``<dataset>/<i_x>/<i_y>/...``: a
big-endian header (mode 0, number of dimensions, the block's own size per dimension - edge
blocks are stored cut short) followed by the big-endian data, compressed or raw.

Encoding writes gzip or raw. Decoding reads gzip (and its zlib framing, ``useZlib``), bzip2,
xz, and the blosc and zstd compressions of the n5-blosc and n5-zstandard extensions, through
numcodecs. lz4 (lz4-java's own block framing, which no maintained Python library reads) cannot
be decoded: :func:`block_decoder` refuses it.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np

from .errors import FormatError

DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)
ATTRIBUTES = "attributes.json"


def encode_block(block: np.ndarray, compression: str, level: int) -> bytes:
    header = struct.pack(">HH", 0, block.ndim) + struct.pack(
        f">{block.ndim}I", *reversed(block.shape)
    )
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
        raise FormatError(
            f"N5 compression {kind!r} cannot be read; readable: raw, {', '.join(_DECODERS)}"
        )
    return _DECODERS[kind](compression).decode


def decode_block(
    raw: bytes, dtype: np.dtype, decoder: Callable[[bytes], bytes] | None
) -> np.ndarray:
    """A chunk file's bytes -> the block in our (C) axis order and native byte order."""
    mode, ndim = struct.unpack(">HH", raw[:4])
    if mode != 0:
        raise ValueError(f"N5 block mode {mode} (varlength/object) is not supported")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])[::-1]
    data = raw[4 + 4 * ndim :]
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
