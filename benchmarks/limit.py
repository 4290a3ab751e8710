"""lazyexport at the limit of the hardware: against tensorstore and the CPU bound (issue 30).

Three jobs on a generated source of ``--sizes`` bytes (1 GiB and 4 GiB by default):

- ``copy``: Zarr v3 -> Zarr v3, uint16, chunks 16x256x256, zstd level 3 in and out;
- ``renorm``: the same source renormalized [min, max] -> [0, 255] as uint8 (the minimum and
  maximum found in a first pass, as lazyexport's ``renormalize=(None, (0, 255))`` does; the
  other engines run the same float32 arithmetic in numpy per chunk);
- ``sharded``: a 4-D (czyx) uint8 source (chunks 1x16x256x256, zstd-3) copied to Zarr v3 with
  1x16x128x128 inner chunks in 2x64x512x512 shards, zstd-3.

Engines: ``lazyexport`` (the ``export`` API at its defaults, the job's chunks and codec given),
``tensorstore`` (``ts.open`` of source and destination, ``dest.write(source)``; for renorm a
read/compute/write loop over chunk rows on as many threads as cores), ``dask-zarrs`` (dask +
zarr-python with ``codec_pipeline.path = "zarrs.ZarrsCodecPipeline"``) and ``dask`` (plain
dask + zarr-python). An engine that is not installed is skipped with a printed reason. For the
copy, ``--engines`` also takes the bare chunk paths, in one block loop (chunk rows on as many
threads as cores, no planning, no graph): ``chunkio`` (lazyexport's hand-written chunk files)
and ``zarrs-loop`` (zarr-python arrays with the zarrs pipeline).

The CPU bound of a job: every source chunk decoded and every output chunk encoded with the same
numcodecs codec, single-threaded, in its own process (the renorm job: the source decoded twice,
once for the range and once for the values, plus the arithmetic), its process CPU seconds
divided by the cores this process may use (``os.sched_getaffinity``). No engine that decodes
and encodes every chunk can finish sooner on this machine. It is measured in every round, in
turn with the engines (the machine's load changes the bound as much as the engines' times),
and the median round's is reported.

Runs alternate (each round starts with the next engine), each in its own process after an
``os.sync()``; the time is the job's (imports excluded), the peak RSS the child's own (VmHWM).
After each engine's first run a corner of its output is compared with the source (or the
transform of it, to within 1 for renorm's rounding): a mismatch stops the benchmark. Prints, per
job and size, each engine's median seconds (``--repeat``, at least 3 for the acceptance
figures), its ratio to tensorstore (> 1: faster than tensorstore) and its fraction of the bound
(bound / time: 1 is the hardware limit).

    python benchmarks/limit.py [--sizes 1GiB,4GiB] [--repeat 3] [--jobs copy,renorm,sharded]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from dask.utils import parse_bytes

OUT = Path(__file__).resolve().parent.parent / "bench-out"
JOBS = ("copy", "renorm", "sharded")
ENGINES = ("lazyexport", "tensorstore", "dask-zarrs", "dask")
EXTRA = ("chunkio", "zarrs-loop")  # the bare chunk paths (copy job only; --engines)
MODULES = {
    "chunkio": ("lazyexport",),
    "zarrs-loop": ("zarr", "zarrs"),
    "lazyexport": ("lazyexport",),
    "tensorstore": ("tensorstore",),
    "dask-zarrs": ("dask", "zarrs"),
    "dask": ("dask",),
}
WARM = {  # imported before the timing starts
    "chunkio": ("zarr", "lazyexport.chunkio"),
    "zarrs-loop": ("zarr", "zarrs"),
    "lazyexport": ("lazyexport.run", "lazyexport.sources.zarr", "lazyexport.formats.zarr"),
    "tensorstore": ("tensorstore",),
    "dask-zarrs": ("dask.array", "zarr", "zarrs"),
    "dask": ("dask.array", "zarr"),
}
LEVEL = 3
CHUNKS = (16, 256, 256)  # the uint16 source's and the copy's chunks
CHUNKS_4D = (1, 16, 256, 256)  # the 4-D uint8 source's chunks
INNER = (1, 16, 128, 128)  # the sharded output's inner chunks
SHARDS = (2, 64, 512, 512)
CORNER = (32, 512, 512)  # the checked corner of each output (z, y, x)


def shapes(nbytes: int) -> dict[str, tuple[int, ...]]:
    """The uint16 source's (z, y, x) and the uint8 4-D source's (c, z, y, x) of about
    ``nbytes`` each: 2048^2 planes (512^2 below 256 MiB), whole 16-slice chunks."""
    side = 2048 if nbytes >= 256 * 2**20 else 512
    z16 = max(16, round(nbytes / (2 * side * side) / 16) * 16)
    z8 = max(16, round(nbytes / (2 * side * side) / 16) * 16)
    return {"uint16": (z16, side, side), "uint8": (2, z8, side, side)}


def _pattern(shape, where, dtype):
    """Waves plus noise seeded by the block's place: compressible like an image."""
    z, y, x = (np.arange(a, a + n) for a, n in zip(where[-3:], shape[-3:]))
    wave = (
        np.sin(z / 37.0)[:, None, None]
        + np.cos(y / 23.0)[None, :, None]
        + np.sin(x / 29.0)[None, None, :]
    )
    seed = sum(int(a) * m for a, m in zip(where, (104729, 7919, 31, 1)))
    noise = np.random.default_rng(seed).integers(0, 200, shape)
    if np.dtype(dtype) == np.uint8:
        return (100 + 40 * wave + noise // 4).astype(dtype).reshape(shape)
    return (2000 + 600 * wave + noise).astype(dtype)


def make_source(kind: str, shape: tuple[int, ...], where: Path) -> Path:
    """The source array (made once, kept in ``where``)."""
    path = where / f"limit-{kind}-{'x'.join(map(str, shape))}.zarr"
    if (path / "zarr.json").exists():
        return path
    import dask.array as da
    import zarr
    from zarr.codecs import ZstdCodec

    chunks = CHUNKS if kind == "uint16" else CHUNKS_4D

    def block(b, block_info=None):
        where = [lo for lo, _ in block_info[None]["array-location"]]
        return _pattern(b.shape, where, kind)

    tmp = path.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    array = zarr.create_array(
        str(tmp), shape=shape, dtype=kind, chunks=chunks, compressors=ZstdCodec(level=LEVEL)
    )
    da.empty(shape, chunks=chunks, dtype=kind).map_blocks(block, dtype=kind).store(
        array, lock=False
    )
    tmp.rename(path)
    return path


def renorm_block(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[lo, hi] -> [0, 255] in float32, rounded half to even, clipped, as uint8."""
    y = x.astype(np.float32)
    y -= np.float32(lo)
    y *= np.float32(255.0 / (hi - lo))
    np.rint(y, out=y)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)


# --- the engines (each runs in a child process) ------------------------------------------------


def job_layout(job: str) -> dict:
    """The output's dtype, chunks and shards for ``job``."""
    if job == "sharded":
        return {"dtype": "uint8", "chunks": INNER, "shards": SHARDS}
    return {"dtype": "uint8" if job == "renorm" else "uint16", "chunks": CHUNKS, "shards": None}


def run_lazyexport(job: str, src: Path, out: Path) -> None:
    import lazyexport as le

    layout = job_layout(job)
    axes = "czyx" if job == "sharded" else "zyx"
    extra: dict = {"chunks": dict(zip(axes, layout["chunks"]))}
    if layout["shards"]:
        extra["shards"] = dict(zip(axes, layout["shards"]))
    if job == "renorm":
        extra.update(renormalize=(None, (0, 255)), dtype="uint8")
    settings = le.ExportSettings(
        format="zarr", output=str(out), compression="zstd", compression_level=LEVEL, **extra
    )
    le.export(le.open_source(str(src), axes=axes), settings)


def _ts_spec(path: Path) -> dict:
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}


def _ts_create(ts, out: Path, shape, job: str):
    layout = job_layout(job)
    zstd = {"name": "zstd", "configuration": {"level": LEVEL, "checksum": False}}
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}, zstd]
    chunks = layout["chunks"]
    if layout["shards"]:
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunks),
                    "codecs": codecs,
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                },
            }
        ]
        chunks = layout["shards"]
    metadata = {
        "shape": list(shape),
        "data_type": layout["dtype"],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "codecs": codecs,
        "fill_value": 0,
    }
    spec = {**_ts_spec(out), "metadata": metadata}
    return ts.open(spec, create=True, delete_existing=True).result()


def run_tensorstore(job: str, src: Path, out: Path) -> None:
    import tensorstore as ts

    source = ts.open(_ts_spec(src), read=True).result()
    dest = _ts_create(ts, out, source.shape, job)
    if job != "renorm":
        dest.write(source).result()
        return
    z, y, _ = source.shape
    rows = [(a, b) for a in range(0, z, CHUNKS[0]) for b in range(0, y, CHUNKS[1])]

    def key(row):
        return (slice(row[0], row[0] + CHUNKS[0]), slice(row[1], row[1] + CHUNKS[1]))

    def extremes(row):
        block = source[key(row)].read().result()
        return block.min(), block.max()

    def convert(row, lo, hi):
        block = source[key(row)].read().result()
        dest[key(row)].write(renorm_block(block, lo, hi)).result()

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        found = list(pool.map(extremes, rows))
        lo, hi = float(min(f[0] for f in found)), float(max(f[1] for f in found))
        list(pool.map(lambda row: convert(row, lo, hi), rows))


def run_dask(job: str, src: Path, out: Path) -> None:
    import dask
    import dask.array as da
    import zarr
    from zarr.codecs import ZstdCodec

    x = da.from_zarr(str(src))
    layout = job_layout(job)
    if job == "renorm":
        lo, hi = (float(v) for v in dask.compute(x.min(), x.max()))
        x = x.map_blocks(renorm_block, lo, hi, dtype="uint8")
    if layout["shards"]:
        x = x.rechunk(layout["shards"])  # one dask block per shard: no two tasks write one
    array = zarr.create_array(
        str(out),
        shape=x.shape,
        dtype=layout["dtype"],
        chunks=layout["chunks"],
        shards=layout["shards"],
        compressors=ZstdCodec(level=LEVEL),
    )
    da.store(x, array, lock=False)


def run_dask_zarrs(job: str, src: Path, out: Path) -> None:
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    run_dask(job, src, out)


def _block_loop(job: str, src: Path, out: Path, open_pair) -> None:
    """The copy as chunk rows (16x256xX) read and written on as many threads as cores, through
    the reader and writer ``open_pair(src, out, shape)`` returns: the chunk paths compared bare,
    without lazyexport's planning or dask's graph."""
    import zarr

    shape = zarr.open_array(str(src), mode="r").shape
    reader, write = open_pair(src, out, shape)
    rows = [(a, b) for a in range(0, shape[0], CHUNKS[0]) for b in range(0, shape[1], CHUNKS[1])]

    def copy(row):
        key = (slice(row[0], row[0] + CHUNKS[0]), slice(row[1], row[1] + CHUNKS[1]), slice(None))
        write(reader[key], key)

    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(copy, rows))


def _create(out: Path, shape, job: str):
    import zarr
    from zarr.codecs import ZstdCodec

    layout = job_layout(job)
    return zarr.create_array(
        str(out),
        shape=shape,
        dtype=layout["dtype"],
        chunks=layout["chunks"],
        compressors=ZstdCodec(level=LEVEL),
    )


def run_chunkio(job: str, src: Path, out: Path) -> None:
    """lazyexport's hand-written chunk files (lazyexport.chunkio) in the bare block loop."""
    import zarr

    from lazyexport.chunkio import ChunkFiles

    def pair(src, out, shape):
        reader = ChunkFiles.of(zarr.open_array(str(src), mode="r"))
        writer = ChunkFiles.of(_create(out, shape, job))
        assert reader is not None and writer is not None
        return reader, lambda block, key: writer.write(block, key)

    _block_loop(job, src, out, pair)


def run_zarrs_loop(job: str, src: Path, out: Path) -> None:
    """zarr-python with the zarrs codec pipeline in the bare block loop."""
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})

    def pair(src, out, shape):
        reader, writer = zarr.open_array(str(src), mode="r"), _create(out, shape, job)
        return reader, lambda block, key: writer.__setitem__(key, block)

    _block_loop(job, src, out, pair)


RUNS = {
    "chunkio": run_chunkio,
    "zarrs-loop": run_zarrs_loop,
    "lazyexport": run_lazyexport,
    "tensorstore": run_tensorstore,
    "dask-zarrs": run_dask_zarrs,
    "dask": run_dask,
}


# --- the CPU bound ------------------------------------------------------------------------------


def _chunk_files(src: Path, shape, chunks):
    """The source's chunk files in grid order (zarr v3 default keys, ``c/i/j/k``)."""
    grid = [range((n + c - 1) // c) for n, c in zip(shape, chunks)]
    import itertools

    for index in itertools.product(*grid):
        yield src.joinpath("c", *map(str, index))


def _inner(block: np.ndarray, inner: tuple[int, ...]):
    """``block`` cut into ``inner`` chunks (contiguous copies, as an encoder needs them)."""
    import itertools

    starts = [range(0, n, c) for n, c in zip(block.shape, inner)]
    for corner in itertools.product(*starts):
        key = tuple(slice(a, a + c) for a, c in zip(corner, inner))
        yield np.ascontiguousarray(block[key])


def measure_bound(job: str, src: Path) -> dict:
    """Single-threaded CPU seconds to decode every source chunk and encode every output chunk
    (file reads excluded), and the bound: that over the cores."""
    import numcodecs
    import zarr

    codec = numcodecs.Zstd(level=LEVEL)
    arr = zarr.open_array(str(src), mode="r")
    dtype, chunks = arr.dtype, arr.chunks
    cpu = {"decode": 0.0, "compute": 0.0, "encode": 0.0}
    passes = 2 if job == "renorm" else 1
    lo, hi = np.inf, -np.inf
    for p in range(passes):
        for path in _chunk_files(src, arr.shape, chunks):
            raw = path.read_bytes()
            t0 = time.process_time()
            block = np.frombuffer(codec.decode(raw), dtype=dtype).reshape(chunks)
            t1 = time.process_time()
            cpu["decode"] += t1 - t0
            if p + 1 < passes:  # the range pass
                lo, hi = min(lo, block.min()), max(hi, block.max())
                cpu["compute"] += time.process_time() - t1
                continue
            if job == "renorm":
                block = renorm_block(block, float(lo), float(hi))
            t2 = time.process_time()
            pieces = _inner(block, INNER) if job == "sharded" else [block]
            for piece in pieces:
                codec.encode(piece)
            t3 = time.process_time()
            cpu["compute"] += t2 - t1
            cpu["encode"] += t3 - t2
    cores = len(os.sched_getaffinity(0))
    return {**cpu, "cores": cores, "bound": sum(cpu.values()) / cores}


# --- children and checks -----------------------------------------------------------------------


def peak_rss() -> int:
    """This process's own peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child_main(spec: str) -> None:
    engine, job, src, out = json.loads(spec)  # paths in the parent's --out
    if engine == "bound":
        print(json.dumps(measure_bound(job, Path(src))))
        return
    for module in WARM[engine]:
        __import__(module)  # imports are not timed
    os.sync()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    RUNS[engine](job, Path(src), Path(out))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss": peak_rss()}))


def run_child(engine: str, job: str, src: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    spec = json.dumps([engine, job, str(src), str(out)])
    done = subprocess.run(
        [sys.executable, __file__, "--child", spec], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{engine} ({job}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_corner(job: str, src: Path) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The checked corner of ``job``'s output, computed from the source in numpy."""
    import zarr

    arr = zarr.open_array(str(src), mode="r")
    key = tuple(slice(0, n) for n in CORNER)
    if job == "sharded":
        key = (slice(None), *key)
    want = np.asarray(arr[key])
    if job == "renorm":
        lo, hi = np.inf, -np.inf
        for z in range(0, arr.shape[0], CHUNKS[0]):  # the range, a slab at a time
            slab = np.asarray(arr[z : z + CHUNKS[0]])
            lo, hi = min(lo, slab.min()), max(hi, slab.max())
        want = renorm_block(want, float(lo), float(hi))
    return want, key


def check_output(job: str, out: Path, want: np.ndarray, key, shape) -> str:
    """The largest difference between the output's corner and ``want``; its layout."""
    import zarr

    arr = zarr.open_array(str(out), mode="r")
    layout = job_layout(job)
    got = np.asarray(arr[key])
    diff = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
    problems = []
    if tuple(arr.shape) != tuple(shape) or str(arr.dtype) != layout["dtype"]:
        problems.append(f"shape/dtype {arr.shape} {arr.dtype}")
    if tuple(arr.chunks) != layout["chunks"]:
        problems.append(f"chunks {arr.chunks}")
    if diff > (1 if job == "renorm" else 0):
        problems.append(f"values differ by {diff}")
    return "; ".join(problems) or f"ok (max diff {diff})"


def available(engines: list[str]) -> list[str]:
    """The engines installed; a missing one is said, not silently left out."""
    found = []
    for engine in engines:
        try:
            for module in MODULES[engine]:
                __import__(module)
            found.append(engine)
        except ImportError as exc:
            print(f"skipped {engine}: not installed ({exc})")
    return found


def run_job(job: str, nbytes: int, engines: list[str], repeat: int, where: Path) -> None:
    kind = "uint16" if job in ("copy", "renorm") else "uint8"
    shape = shapes(nbytes)[kind]
    src = make_source(kind, shape, where)
    print(
        f"\n== {job}: {kind} {shape} ({np.prod(shape) * np.dtype(kind).itemsize / 2**30:.2f} GiB)"
    )
    want, key = expected_corner(job, src)
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    bounds: list[dict] = []
    checks: dict[str, str] = {}
    for r in range(repeat):
        turn = ["bound", *engines]  # the bound measured in every round too, under the same load
        for engine in turn[r % len(turn) :] + turn[: r % len(turn)]:
            if engine == "bound":
                bounds.append(run_child("bound", job, src, where / "limit-none"))
                print(f"  round {r + 1} bound: {bounds[-1]['bound']:.2f} s", flush=True)
                continue
            out = where / f"limit-{job}-{engine}.zarr"
            runs[engine].append(run_child(engine, job, src, out))
            print(f"  round {r + 1} {engine}: {runs[engine][-1]['seconds']:.2f} s", flush=True)
            if engine not in checks:
                checks[engine] = check_output(job, out, want, key, shape)
            shutil.rmtree(out, ignore_errors=True)
    middle = sorted(bounds, key=lambda b: b["bound"])[len(bounds) // 2]  # the median round's
    report(job, engines, runs, checks, middle)


def report(job: str, engines: list[str], runs: dict, checks: dict, bound: dict) -> None:
    seconds = {e: statistics.median(r["seconds"] for r in runs[e]) for e in engines}
    cpu = {e: statistics.median(r["cpu"] for r in runs[e]) for e in engines}
    rss = {e: statistics.median(r["peak_rss"] for r in runs[e]) for e in engines}
    head = f"{'engine':<13}{'median s':>9}{'CPU s':>8}{'peak RSS':>10}{'x ts':>7}{'x dask':>7}"
    print(f"{head}{'of bound':>9}  output")
    for e in engines:
        ratios = "".join(
            f"{seconds[o] / seconds[e]:>7.2f}" if o in seconds else f"{'-':>7}"
            for o in ("tensorstore", "dask")
        )
        print(
            f"{e:<13}{seconds[e]:>9.2f}{cpu[e]:>8.2f}{rss[e] / 2**20:>8.0f}Mi{ratios}"
            f"{bound['bound'] / seconds[e]:>9.2f}  {checks[e]}"
        )
    print(
        f"bound: {bound['bound']:.3f} s = (decode {bound['decode']:.3f} + compute "
        f"{bound['compute']:.3f} + encode {bound['encode']:.3f} CPU-s) / {bound['cores']} cores"
    )
    print(
        "x ts, x dask: tensorstore's, plain dask's median over the engine's (> 1: faster); "
        "of bound: bound / median"
    )
    wrong = [e for e in engines if not checks[e].startswith("ok")]
    if wrong:
        raise SystemExit(f"{job}: outputs differ from the source: {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1GiB,4GiB", help="source sizes (default 1GiB,4GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine (default 3)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated: " + ",".join(JOBS))
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"engines to run (default {','.join(ENGINES)}; also {','.join(EXTRA)}: copy only)",
    )
    parser.add_argument("--out", default=str(OUT), help="where sources and outputs go")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    engines = available(args.engines.split(","))
    where = Path(args.out)
    where.mkdir(parents=True, exist_ok=True)
    print(f"cores: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()}")
    for size in args.sizes.split(","):
        for job in args.jobs.split(","):
            run_job(job, parse_bytes(size), engines, args.repeat, where)


if __name__ == "__main__":
    main()
