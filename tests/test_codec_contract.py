"""The codec contract suite of the hand-written Zarr chunk path (lazyexport.chunkio, issue 30).

chunkio is kept only where it passes the same contract as the maintained codec pipelines. For
every layout that matters — dtypes u1 … f8 and bool, little and big endian (v3 ``bytes``
endian, v2 ``>`` dtypes), no compressor, zstd (with and without its checksum), gzip, zlib (v2),
blosc with lz4 and zstd and every shuffle, Zarr v2 and v3, chunk key encodings, fill values 0,
nonzero, NaN and v2's null, with chunks entirely of the fill value (absent files), shards with
the index at the end and at the start, with and without the index's crc32c, partial edge chunks
and shards:

- what :class:`ChunkFiles` / :class:`ShardFiles` WRITE reads back identically through
  zarr-python's default pipeline, the zarrs pipeline and tensorstore, with the same set of
  chunk files zarr writes (fill-only chunks absent);
- what zarr-python writes, chunkio READS identically (whole array, and a region crossing
  chunks and shards);
- a layout chunkio refuses is refused for the expected reason (no silent refusal of a layout it
  should take), and lazyexport still reads it correctly through zarr (``open_source``) and
  exports it correctly (the fallback);
- lazyexport's own Zarr exports (every compression it writes, v2, v3 and sharded) read back
  identically through the three readers.

Cases are not the full cartesian product: dtype × endianness × format with the codec and fill
value rotating, codec × format × shard layout, fill value × dtype kind, key encodings (see
``_cases``). zarrs does not read v2 big-endian arrays at all (its own limitation, not checked)
and tensorstore does not open a v2 zstd compressor with a checksum (not a v2 case here).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numcodecs
import numpy as np
import pytest
import tensorstore as ts
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    ZstdCodec,
)

import lazyexport as le
from helpers.zarr_nodes import read_all
from lazyexport.chunkio import ChunkFiles, ShardFiles, layout_refusal

SHAPE, CHUNKS, SHARDS = (5, 9, 11), (2, 4, 4), (4, 8, 8)  # partial edge chunks and shards
DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "bool")
V3_CODECS = (
    "none",
    "zstd",
    "zstd-checksum",
    "gzip",
    "blosc-lz4-shuffle",
    "blosc-lz4-noshuffle",
    "blosc-zstd-bitshuffle",
    "blosc-zstd-shuffle",
    "blosc-lz4-bitshuffle",
)
# v2: no zstd checksum (tensorstore does not open a v2 zstd compressor with a "checksum" member)
V2_CODECS = tuple(c for c in V3_CODECS if c != "zstd-checksum") + ("zlib",)
INDEXES = ("end", "start", "end-nocrc", "start-nocrc")  # shard index location, crc32c or not


@dataclass(frozen=True)
class Case:
    dtype: str = "u2"
    big: bool = False  # big-endian on disk (v3: the bytes codec's endian; v2: a '>' dtype)
    fmt: int = 3
    codec: str = "zstd"
    index: str | None = None  # None: not sharded
    fill: Any = 0
    keys: tuple[str, str] | None = None  # chunk key encoding and separator (None: the default)

    def __str__(self) -> str:
        parts = [f"v{self.fmt}", self.dtype, "be" if self.big else "le", self.codec]
        parts += [f"shard-{self.index}"] if self.index else []
        parts += [f"keys-{self.keys[0]}{self.keys[1]}"] if self.keys else []
        return "-".join(parts + [f"fill{self.fill}"])

    @property
    def multibyte(self) -> bool:
        return np.dtype(self.dtype).itemsize > 1

    def taken(self) -> bool:
        """Whether chunkio is expected to take this layout (else zarr does)."""
        return not (self.big and self.multibyte) and self.index in (None, "end")


def _cases() -> list[Case]:
    cases = []
    # every dtype in both byte orders on both formats; codecs and fill values rotating
    rotation = itertools.cycle(zip(V2_CODECS, itertools.cycle((0, 7, "nan"))))
    for dtype, big, fmt in itertools.product(DTYPES, (False, True), (3, 2)):
        if big and np.dtype(dtype).itemsize == 1:
            continue
        codec, fill = next(rotation)
        codec = "zstd" if codec == "zlib" and fmt == 3 else codec
        fill = _fill(dtype, fill)
        cases.append(Case(dtype, big, fmt, codec, None, fill))
        if fmt == 3:  # the same inside a shard, index where chunkio takes it
            cases.append(Case(dtype, big, fmt, codec, "end", fill))
    # every codec on every layout (two dtypes alternating: 2- and 4-byte shuffles)
    for n, codec in enumerate(V2_CODECS):
        dtype = ("u2", "f4")[n % 2]
        cases.append(Case(dtype, False, 2, codec))
        if codec in V3_CODECS:
            cases.append(Case(dtype, False, 3, codec))
            cases += [Case(dtype, False, 3, codec, index, 5) for index in INDEXES]
    # fill values: 0, nonzero and NaN (floats), unsharded and sharded
    for dtype, fill, index in itertools.product(("f4", "f8", "i2"), (0, 3, "nan"), (None, "end")):
        cases += [Case(dtype, False, fmt, "zstd", index, _fill(dtype, fill)) for fmt in (2, 3)]
    # a v2 fill value of null (read as 0 by zarr and tensorstore)
    cases += [Case("f4", fmt=2, fill=None), Case("i2", fmt=2, codec="blosc-lz4-shuffle", fill=None)]
    # chunk key encodings other than the format's default
    keys = ((2, ("v2", "/")), (3, ("v2", ".")), (3, ("v2", "/")), (3, ("default", ".")))
    cases += [Case("u2", fmt=fmt, keys=k) for fmt, k in keys]
    cases.append(Case("u2", index="end", keys=("v2", ".")))
    return sorted({c for c in cases if c.fmt == 3 or c.index is None}, key=str)


def _fill(dtype: str, fill: Any) -> Any:
    if dtype == "bool":
        return bool(fill)
    if fill == "nan":
        return {"f": float("nan"), "i": -3}.get(np.dtype(dtype).kind, 9)
    return fill


CASES = _cases()


def values(case: Case) -> np.ndarray:
    """Values whose bytes are not palindromes (a byte swap changes them), with the first chunk
    and the last shard only the fill value (absent files, a missing inner chunk)."""
    n = int(np.prod(SHAPE))
    dtype = np.dtype(case.dtype)
    if dtype.kind == "b":
        data = (np.arange(n) % 3 == 0).reshape(SHAPE)
    else:
        wide = np.arange(n, dtype=np.int64) * 257 + 1 - (300 if dtype.kind == "i" else 0)
        data = (wide * 1.25 if dtype.kind == "f" else wide).reshape(SHAPE).astype(dtype)
        if dtype.kind == "f":
            data[3, 2, 1] = np.nan  # a NaN that is not the fill value
            data[3, 2, 2] = -0.0
    fill = 0 if case.fill is None else case.fill  # v2's null: zarr reads 0
    data[:2, :4, :4] = fill
    data[4:, 8:, 8:] = fill
    return data


def _compressor(codec: str, fmt: int) -> Any:
    """The compressor ``codec`` names, as a v3 codec or a v2 numcodecs codec."""
    if codec == "none":
        return None
    if codec.startswith("blosc"):
        _, cname, shuffle = codec.split("-")
        if fmt == 2:
            constant = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[shuffle]
            return numcodecs.Blosc(cname=cname, clevel=5, shuffle=constant)
        return BloscCodec(cname=cast(Any, cname), clevel=5, shuffle=cast(Any, shuffle))
    checksum = codec == "zstd-checksum"
    v2 = {
        "zstd": numcodecs.Zstd(level=1),
        "zstd-checksum": numcodecs.Zstd(level=1, checksum=True),
        "gzip": numcodecs.GZip(level=1),
        "zlib": numcodecs.Zlib(level=1),
    }
    if fmt == 2:
        return v2[codec]
    return {"gzip": GzipCodec(level=1)}.get(codec) or ZstdCodec(level=1, checksum=checksum)


def create(path: Path, case: Case) -> zarr.Array:
    """An empty array of ``case``'s layout, made by zarr-python."""
    common = dict(shape=SHAPE, dtype=case.dtype, fill_value=case.fill, zarr_format=case.fmt)
    if case.keys is not None:
        common["chunk_key_encoding"] = {"name": case.keys[0], "separator": case.keys[1]}
    compressor = _compressor(case.codec, case.fmt)
    if case.fmt == 2:
        dtype = np.dtype(case.dtype).newbyteorder(">") if case.big else case.dtype
        common["dtype"] = dtype
        return zarr.create_array(str(path), chunks=CHUNKS, compressors=compressor, **common)
    serializer = BytesCodec(endian="big" if case.big else "little")
    if case.index is None:
        return zarr.create_array(
            str(path), chunks=CHUNKS, serializer=serializer, compressors=compressor, **common
        )
    location, _, nocrc = case.index.partition("-")
    sharding = ShardingCodec(
        chunk_shape=CHUNKS,
        codecs=[serializer] + ([compressor] if compressor is not None else []),
        index_codecs=[BytesCodec()] + ([] if nocrc else [Crc32cCodec()]),
        index_location=location,
    )
    return zarr.create_array(
        str(path), chunks=SHARDS, serializer=sharding, compressors=None, **common
    )


def read_zarr(path: Path) -> np.ndarray:
    return read_all(zarr.open_array(str(path), mode="r"))


ZARRS = "zarrs.ZarrsCodecPipeline"


def read_zarrs(path: Path) -> np.ndarray:
    """Through zarrs (strict: an error, not zarr-python's pipeline, where zarrs cannot)."""
    with zarr.config.set({"codec_pipeline.path": ZARRS, "codec_pipeline.strict": True}):
        return read_all(zarr.open_array(str(path), mode="r"))


def read_tensorstore(path: Path) -> np.ndarray:
    driver = "zarr3" if (path / "zarr.json").exists() else "zarr"
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}
    return ts.open(spec, open=True, read=True).result().read().result()


READERS = {"zarr": read_zarr, "zarrs": read_zarrs, "tensorstore": read_tensorstore}


def same(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal values (NaN equal to NaN) of the same kind and size, in native byte order."""
    got = np.asarray(got)
    assert (got.dtype.kind, got.dtype.itemsize) == (expected.dtype.kind, expected.dtype.itemsize)
    native = got.astype(got.dtype.newbyteorder("="))
    np.testing.assert_array_equal(native, expected, err_msg=what)
    if expected.dtype.kind == "f":  # -0.0 kept as -0.0
        assert np.array_equal(np.signbit(native), np.signbit(expected)), what


def chunk_files(path: Path) -> list[Path]:
    meta = {"zarr.json", ".zarray", ".zattrs", ".zgroup"}
    return sorted(
        p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.name not in meta
    )


def write_blocks(files: ChunkFiles, data: np.ndarray) -> None:
    """``data`` written block by block: whole chunks (or shards) along z, then the edge."""
    step = files.chunks[0]
    for z in range(0, SHAPE[0], step):
        files.write(
            data[z : z + step], (slice(z, min(z + step, SHAPE[0])), slice(None), slice(None))
        )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_codec_contract(tmp_path, case):
    data = values(case)
    ref = create(tmp_path / "ref.zarr", case)
    ref[...] = data  # zarr-python's default pipeline writes the reference
    files = ChunkFiles.of(zarr.open_array(str(tmp_path / "ref.zarr"), mode="r"))
    assert (files is not None) == case.taken(), layout_refusal(ref)
    if files is None:
        return check_refused(tmp_path / "ref.zarr", case, data)
    # (2) what zarr-python writes, chunkio reads
    assert isinstance(files, ShardFiles) == (case.index is not None)
    same(files[...], data, "chunkio reading zarr's files")
    same(files[1:5, 3:9, 2:10], data[1:5, 3:9, 2:10], "chunkio reading a region")
    source = le.open_source(str(tmp_path / "ref.zarr"), axes="zyx")
    same(np.asarray(source.values), data, "open_source (through chunkio)")
    # (1) what chunkio writes, every library reads
    mine = ChunkFiles.of(create(tmp_path / "mine.zarr", case))
    assert mine is not None
    write_blocks(mine, data)
    assert chunk_files(tmp_path / "mine.zarr") == chunk_files(tmp_path / "ref.zarr")
    for name, read in READERS.items():
        same(read(tmp_path / "mine.zarr"), data, f"{name} reading chunkio's files")


def check_refused(path: Path, case: Case, data: np.ndarray) -> None:
    """A layout chunkio refuses: refused for its reason, and read by lazyexport through zarr."""
    reason = layout_refusal(zarr.open_array(str(path), mode="r"))
    expected = ("index",) if case.index not in (None, "end") else ("big", "'>", "endian")
    assert reason is not None and any(word in reason for word in expected), reason
    for name, read in READERS.items():  # the reference itself is valid for every library ...
        if name == "zarrs" and case.fmt == 2 and case.big:
            continue  # ... but zarrs: "Non-native byte order not supported" (v2 '>' dtypes)
        same(read(path), data, f"{name} reading zarr's files")
    same(np.asarray(le.open_source(str(path), axes="zyx").values), data, "open_source via zarr")


# the refusal reasons, each once through a whole export (source read through zarr's pipeline)
REFUSED_EXPORTS = [
    Case("i4", True, 2, "zstd"),
    Case("f8", True, 3, "blosc-lz4-shuffle", None, 2.5),
    Case("u2", False, 3, "gzip", "start", 5),
    Case("f4", False, 3, "zstd", "end-nocrc", float("nan")),
]


@pytest.mark.parametrize("case", REFUSED_EXPORTS, ids=str)
def test_refused_layout_exports_through_zarr(tmp_path, case):
    data = values(case)
    create(tmp_path / "src.zarr", case)[...] = data
    assert layout_refusal(zarr.open_array(str(tmp_path / "src.zarr"), mode="r")) is not None
    out = tmp_path / "out.zarr"
    source = le.open_source(str(tmp_path / "src.zarr"), axes="zyx")
    le.export(source, le.ExportSettings(format="zarr", output=str(out), compression="none"))
    for name, read in READERS.items():
        same(read(out), data, f"{name} reading the export")


# lazyexport's own Zarr outputs: every compression it writes, v2, v3 and sharded v3
EXPORTS = [
    (compression, fmt, sharded, dtype)
    for n, (compression, (fmt, sharded)) in enumerate(
        itertools.product(
            ("zstd", "blosc", "blosc-bitshuffle", "gzip", "none"),
            ((2, False), (3, False), (3, True)),
        )
    )
    for dtype in (("<u2", ">i4", "<f8", ">f4", "u1")[n % 5],)
]


@pytest.mark.parametrize(("compression", "fmt", "sharded", "dtype"), EXPORTS)
def test_export_writes_what_every_library_reads(tmp_path, compression, fmt, sharded, dtype):
    data = values(Case(np.dtype(dtype).newbyteorder("=").str))
    source = le.open_source(data.astype(dtype), axes="zyx")  # big-endian sources too
    out = tmp_path / "out.zarr"
    settings = le.ExportSettings(
        format="zarr",
        output=str(out),
        compression=compression,
        zarr_format=fmt,
        chunks=dict(zip("zyx", CHUNKS)),
        shards=dict(zip("zyx", SHARDS)) if sharded else "none",
    )
    le.export(source, settings)
    arr = zarr.open_array(str(out), mode="r")
    assert (arr.shards is not None) == sharded
    assert layout_refusal(arr) is None  # written by chunkio
    for name, read in READERS.items():
        same(read(out), data, f"{name} reading the export")
    same(np.asarray(le.open_source(str(out)).values), data, "lazyexport reading the export")
