"""lazyexport against the same export written by hand with plain dask, in one run.

Workload (the performance issue's): a float32 Zarr source (zyxc, 2 GiB by default, chunks
16x256x256x2 or, with ``--src-chunks 64,256,256,2``, 64 slices deep; one source store per
chunking under bench-out/), a cutout that starts inside a chunk (``--cut z``: z=4:-4;
``--cut mid``: also y=100:-100 and x=100:-100, so it starts and stops inside a chunk along
z, y and x), renormalize [0, 1] -> [0, 255], uint8, transpose to czyx; written as Zarr,
gzip-1 HDF5 and a TIFF sequence (and, with ``--formats zarr-sharded``, Zarr v3 with 32 KiB
chunks in 8 MiB shards, or ``zarr-sharded-deep``, 256 KiB chunks 16 slices deep in 32 MiB shards,
against ``da.store`` of shard-aligned blocks into the same sharded array through zarr-python's
default codec pipeline).

The ``smooth`` workload (``--formats smooth``): a sigma-2 Gaussian along z, y and x of the same
cutout, float32, to Zarr: lazyexport's ``smooth`` step against
``dask_image.ndfilters.gaussian_filter`` of the whole source, then cut out (what gives the same
values: the cutout's neighbours are read, the source's edge reflected), and ``to_zarr``; the
two outputs are compared after the runs (at most 1e-5 relative).

``--formats bin``: the binning workload instead (issue 28): a 2x2x2 mean of the whole source
(z, y, x; channels kept) to Zarr, lazyexport's ``bin`` step against ``dask.array.coarsen(np.mean,
...)`` + ``to_zarr`` (both zstd level 3; the volume's lengths are even, so coarsen's windows are
the bin's).

Both sides write the same codec: Zarr zstd level 3 (lazyexport's default; ``da.to_zarr`` is
given ``compressors=ZstdCodec(level=3)``), HDF5 gzip level 1, TIFF uncompressed; each run
reads back what it wrote and the codecs are printed. The plain TIFF sequence is a per-slice
``tifffile.imwrite`` driven by ``map_blocks`` over one-slice blocks.

Runs alternate (plain, lazyexport, plain, ...; each round starts with the next tool, so none
always runs right after the same one) so machine noise hits all alike; each run starts after an
``os.sync()`` (the previous run's writes are flushed before, not during, the timing) and is its
own process, so its peak RSS is its own. Prints medians and the speed ratio (plain
seconds / lazyexport seconds: > 1 means lazyexport is faster).

    python benchmarks/bench.py [--gib 2] [--src-chunks 16,256,256,2] [--cut z|mid] [--repeats 3]
        [--scaling] [--formats zarr,hdf5,tiff-sequence,smooth]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
# cutouts (axis -> (start, stop)): "z" starts inside a chunk along z only (chunks are 16 or 64
# deep); "mid" starts and stops inside a chunk along z, y and x (100 and size - 100 are not
# multiples of 256, checked against the source's chunks in main)
CUTS = {"z": {"z": (4, -4)}, "mid": {"z": (4, -4), "y": (100, -100), "x": (100, -100)}}
SRC_CHUNKS = (16, 256, 256, 2)
ZARR_LEVEL = 3  # lazyexport's default zstd level for Zarr (zarr-python's own default is level 0)
# sharded Zarr v3 layouts (czyx): chunks and shards
SHARDED = {
    "zarr-sharded": ((2, 1, 128, 128), (2, 16, 512, 512)),  # 32 KiB chunks, 8 MiB shards
    "zarr-sharded-deep": ((1, 16, 128, 128), (2, 64, 512, 512)),  # 256 KiB chunks, 32 MiB shards
}


def source_path(gib: float, chunks: tuple[int, ...]) -> Path:
    return OUT / f"source-{gib:g}GiB-{'x'.join(map(str, chunks))}.zarr"


def make_source(gib: float, chunks: tuple[int, ...] = SRC_CHUNKS) -> Path:
    """Write the float32 source once per chunking (a smooth two-channel probability map)."""
    import zarr

    from lazyexport.demo import sample_volume

    path = source_path(gib, chunks)
    if (path / "zarr.json").exists():
        return path
    z = max(int(gib * 2**30 / (1024 * 2048 * 2 * 4)), 16)
    vol = sample_volume(shape=(z, 1024, 2048), chunks=chunks[:3])
    arr = zarr.create_array(
        str(path),
        shape=vol.shape,
        chunks=chunks,
        dtype="float32",
        dimension_names=list(vol.dims),
        overwrite=True,
    )
    import dask.array as da

    da.store(vol.data, arr, lock=False)
    return path


def cut_slices(cut: dict, axes: str = "zyxc") -> tuple[slice, ...]:
    return tuple(slice(*cut.get(a, (None, None))) for a in axes)


SMOOTH_SIGMA = {"z": 2.0, "y": 2.0, "x": 2.0}  # the smooth workload's, in pixels


def run_plain_smooth(src: Path, out: Path, cut: dict) -> None:
    """dask-image's Gaussian of the whole source (zyxc; c not smoothed), then the cutout."""
    import dask.array as da
    from dask_image.ndfilters import gaussian_filter
    from zarr.codecs import ZstdCodec

    x = da.from_zarr(str(src))
    sigma = [SMOOTH_SIGMA.get(a, 0.0) for a in "zyxc"]
    y = gaussian_filter(x, sigma=sigma, truncate=4.0)[cut_slices(cut)]
    y = y.rechunk(x.chunksize)  # to_zarr needs regular chunks (the cutout broke them)
    da.to_zarr(y, str(out), mode="w", compressors=[ZstdCodec(level=ZARR_LEVEL)])


BIN = {"z": 2, "y": 2, "x": 2}  # the binning workload's factors (--formats bin)


def run_plain_bin(src: Path, out: Path) -> None:
    """The 2x2x2 mean by hand: dask's coarsen, then to_zarr."""
    import dask.array as da
    import numpy as np
    from zarr.codecs import ZstdCodec

    x = da.from_zarr(str(src))
    y = da.coarsen(np.mean, x, {i: BIN[a] for i, a in enumerate("zyx")}, trim_excess=True)
    da.to_zarr(y.astype(x.dtype), str(out), mode="w", compressors=[ZstdCodec(level=ZARR_LEVEL)])


def run_plain(fmt: str, src: Path, out: Path, cut: dict) -> None:
    """What a user writes by hand with dask, tifffile and h5py."""
    if fmt == "smooth":
        return run_plain_smooth(src, out, cut)
    import dask.array as da
    import numpy as np
    import tifffile
    from zarr.codecs import ZstdCodec

    if fmt == "bin":
        return run_plain_bin(src, out)
    x = da.from_zarr(str(src))
    src_chunks = x.chunksize  # before the cutout: the source store's chunks, zyxc
    x = x[cut_slices(cut)]
    y = da.clip(da.round(x * np.float32(255.0)), 0, 255).astype("uint8").transpose(3, 0, 1, 2)
    if fmt == "zarr":
        # to_zarr needs regular chunks (the cutout broke them): the source's, in czyx
        y = y.rechunk((src_chunks[3], *src_chunks[:3]))
        da.to_zarr(y, str(out), mode="w", compressors=[ZstdCodec(level=ZARR_LEVEL)])
    elif fmt in SHARDED:
        import zarr

        chunks, shards = SHARDED[fmt]
        y = y.rechunk(shards)  # one dask chunk per shard, so no two tasks write one
        arr = zarr.create_array(  # zarr-python's default codec pipeline, as a user gets it
            str(out),
            shape=y.shape,
            dtype=y.dtype,
            chunks=chunks,
            shards=shards,
            compressors=[ZstdCodec(level=ZARR_LEVEL)],
        )
        da.store(y, arr, lock=False)
    elif fmt == "hdf5":
        da.to_hdf5(
            str(out),
            "/exported_data",
            y,
            chunks=(2, 8, 128, 256),
            compression="gzip",
            compression_opts=1,
        )
    else:
        out.mkdir(parents=True, exist_ok=True)

        def write_slice(block, block_info=None):
            i = block_info[0]["array-location"][1][0]  # one slice per block
            tifffile.imwrite(out / f"z{i:04d}.tif", block[:, 0], photometric="minisblack")
            return np.zeros((1, 1, 1, 1), dtype=np.uint8)

        y = y.rechunk({0: -1, 1: 1, 2: -1, 3: -1})
        y.map_blocks(write_slice, chunks=(1, 1, 1, 1), dtype=np.uint8).compute()


def run_lazyexport(fmt: str, src: Path, out: Path, cut: dict) -> None:
    import lazyexport as le

    output = str(out / "z{slice_index}.tif") if fmt == "tiff-sequence" else str(out)
    if fmt == "smooth":
        settings = le.ExportSettings(roi=cut, smooth=SMOOTH_SIGMA, format="zarr", output=output)
        le.export(str(src), settings, overwrite=True)
        return
    if fmt == "bin":
        binned = le.ExportSettings(bin=BIN, bin_method="mean", format="zarr", output=output)
        le.export(str(src), binned, overwrite=True)
        return
    sharded = {}
    if fmt in SHARDED:
        chunks, shards = SHARDED[fmt]
        fmt, sharded = (
            "zarr",
            dict(chunks=dict(zip("czyx", chunks)), shards=dict(zip("czyx", shards))),
        )
    settings = le.ExportSettings(
        roi=cut,
        renormalize=((0.0, 1.0), (0, 255)),
        dtype="uint8",
        axis_order="czyx",
        format=fmt,
        output=output,
        **sharded,
    )
    le.export(str(src), settings, overwrite=True)


def run_transform_only(src: Path, cut: dict) -> None:
    import dask.array as da
    import numpy as np

    x = da.from_zarr(str(src))[cut_slices(cut)]
    y = da.clip(da.round(x * np.float32(255.0)), 0, 255).astype("uint8").transpose(3, 0, 1, 2)
    y.sum().compute()


def run_scaling(fmt: str, factor: int, out: Path) -> None:
    import lazyexport as le
    from lazyexport.demo import sample_volume

    vol = sample_volume(shape=(64 * factor, 2048, 2048), chunks=(16, 256, 256))  # 1 GiB per factor
    output = str(out / "z{slice_index}.tif") if fmt == "tiff-sequence" else str(out)
    settings = le.ExportSettings(
        renormalize=((0.0, 1.0), (0, 255)),
        dtype="uint8",
        axis_order="czyx",
        format=fmt,
        output=output,
    )
    le.export(vol, settings, overwrite=True, memory_limit="512MiB")


def peak_rss() -> int:
    """This process's own peak resident memory (VmHWM), in bytes. Not ru_maxrss: Linux carries
    that across exec, so it would include the parent's resident memory at the fork."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(args: list[str], checkout: str | None = None) -> dict:
    """Run one measurement in a fresh process; return its seconds and peak RSS. ``checkout``:
    import lazyexport from that directory (another git checkout) instead."""
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    env = dict(os.environ, PYTHONPATH=checkout) if checkout else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"benchmark run {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _zarr_codecs(codecs: list[dict]) -> str:
    parts = []
    for codec in codecs:
        name, conf = codec["name"], codec.get("configuration", {})
        if name == "bytes":
            continue
        if name == "zstd":
            parts.append(
                f"zstd level {conf.get('level')}" + (" +checksum" if conf.get("checksum") else "")
            )
        else:
            parts.append(f"{name} {json.dumps(conf, sort_keys=True)}" if conf else name)
    return ", ".join(parts) or "uncompressed"


def describe_output(fmt: str, out: Path) -> str:
    """The codec (and chunks) of what a run wrote, read back from the files."""
    if fmt in ("zarr", "smooth", "bin") or fmt in SHARDED:
        meta = json.loads((out / "zarr.json").read_text())
        grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
        (shard,) = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"] or [None]
        if shard is not None:
            inner = shard["configuration"]
            return (
                f"{_zarr_codecs(inner['codecs'])}, chunks {_shape(inner['chunk_shape'])} "
                f"in shards {_shape(grid)}"
            )
        return f"{_zarr_codecs(meta['codecs'])}, chunks {_shape(grid)}"
    if fmt == "hdf5":
        import h5py

        with h5py.File(out, "r") as f:
            found: list = []
            f.visititems(
                lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None
            )
            ds = found[0]
            level = f" level {ds.compression_opts}" if ds.compression_opts is not None else ""
            return f"{ds.compression or 'uncompressed'}{level}, chunks {_shape(ds.chunks)}"
    import tifffile

    files = sorted(out.glob("*.tif"))
    with tifffile.TiffFile(files[0]) as tif:
        page = tif.pages[0]
        return (
            f"{len(files)} files, compression {page.compression.name}, "
            f"{_shape(tif.series[0].shape)} per file"
        )


def output_path(kind: str, fmt: str) -> Path:
    """Where a run writes: NAME.h5, NAME.zarr (lazyexport adds the extension when it is missing)
    or, for a TIFF sequence, the directory NAME."""
    zarrs = ("zarr", "smooth", "bin", *SHARDED)
    suffix = ".h5" if fmt == "hdf5" else ".zarr" if fmt in zarrs else ""
    return OUT / f"out-{kind}-{fmt}{suffix}"


def remove_output(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def compare_smooth(tools: list[str]) -> str:
    """The smooth outputs of the last runs against the plain one's (then removed)."""
    import dask.array as da

    paths = [output_path(tool, "smooth") for tool in tools]
    plain, *others = (da.from_zarr(str(p)) for p in paths)
    found = []
    for tool, arr in zip(tools[1:], others):
        scale = float(da.fabs(plain).max().compute())
        error = float(da.fabs(arr.rechunk(plain.chunks) - plain).max().compute()) / scale
        found.append(f"{tool} {'equal' if error <= 1e-5 else 'NOT EQUAL'} ({error:.2g} relative)")
    for path in paths:
        remove_output(path)
    return "; ".join(found)


def child_main(spec: str) -> None:
    kind, fmt, *rest = json.loads(spec)
    target = output_path(kind, fmt)
    remove_output(target)  # so neither side's timing includes deleting the last run's output
    cut = CUTS[rest[1]] if kind in ("plain", "lazyexport", "before", "transform") else {}
    cut = {} if fmt == "bin" else cut  # the binning workload bins the whole source
    os.sync()  # the last run's writes reach the disk before this one is timed, not during it
    start = time.perf_counter()
    if kind == "plain":
        run_plain(fmt, Path(rest[0]), target, cut)
    elif kind in ("lazyexport", "before"):  # before: the same, imported from --before
        run_lazyexport(fmt, Path(rest[0]), target, cut)
    elif kind == "transform":
        run_transform_only(Path(rest[0]), cut)
    elif kind == "scaling":
        run_scaling(fmt, int(rest[0]), target)
    seconds = time.perf_counter() - start
    rss = peak_rss()
    codec = describe_output(fmt, target) if kind in ("plain", "lazyexport", "before") else ""
    if fmt != "smooth":  # (the smooth outputs stay until they are compared)
        remove_output(target)
    print(json.dumps({"seconds": seconds, "peak_rss": rss, "codec": codec}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="source size in GiB (default 2)")
    parser.add_argument(
        "--src-chunks",
        default=",".join(map(str, SRC_CHUNKS)),
        help="the source's zyxc chunks (default 16,256,256,2; e.g. 64,256,256,2); "
        "one source store per chunking under bench-out/",
    )
    parser.add_argument(
        "--cut",
        choices=sorted(CUTS),
        default="z",
        help="z: z=4:-4 (default); mid: z=4:-4, y=100:-100, x=100:-100",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per tool (default 3)"
    )
    parser.add_argument(
        "--formats",
        default="zarr,hdf5,tiff-sequence",
        help="comma-separated: zarr, hdf5, tiff-sequence, zarr-sharded, zarr-sharded-deep, "
        "smooth (a sigma-2 Gaussian to Zarr against dask-image's), bin (the binning workload: a "
        "2x2x2 mean of the whole source)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also peak RSS at 1x, 4x, 8x GiB, memory_limit=512MiB",
    )
    parser.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run lazyexport imported from this directory (another git checkout, e.g. a "
        "worktree of the previous commit), alternating with the others: before/after in one run",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)

    src_chunks = tuple(int(v) for v in args.src_chunks.split(","))
    if len(src_chunks) != 4:
        parser.error("--src-chunks takes four numbers (z, y, x, c), e.g. 64,256,256,2")
    cut = CUTS[args.cut]
    OUT.mkdir(exist_ok=True)
    src = make_source(args.gib, src_chunks)
    src_bytes = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    import zarr

    arr = zarr.open_array(str(src), mode="r")
    ranges = [range(arr.shape[i])[s] for i, s in enumerate(cut_slices(cut))]
    cut_bytes = arr.dtype.itemsize * float(math.prod(len(r) for r in ranges))
    inside = [
        f"{a}={r.start}:{r.stop} (starts {'inside' if r.start % c else 'on'} a chunk, "
        f"stops {'inside' if r.stop % c and r.stop != n else 'on'} one)"
        for a, r, c, n in zip("zyxc", ranges, arr.chunks, arr.shape)
        if a in cut
    ]
    print(
        f"source {src.name}: {arr.shape} float32, chunks {arr.chunks}, "
        f"{arr.nbytes / 2**30:.2f} GiB "
        f"({src_bytes / 2**30:.2f} GiB on disk)"
    )
    print(f"cutout {args.cut!r}: {', '.join(inside)}; {cut_bytes / 2**30:.2f} GiB")
    t = statistics.median(
        child(["transform", "-", str(src), args.cut])["seconds"] for _ in range(args.repeats)
    )
    print(
        f"read + transform only (plain dask, no writing): {t:.2f} s, "
        f"{cut_bytes / t / 1e9:.2f} GB/s\n"
    )

    header = (
        f"{'format':14} {'tool':11} {'median s':>9} {'GB/s':>6} {'peak RSS':>9} {'speed ratio':>12}"
        f"  runs (s, in order)"
    )
    print(header)
    print("-" * len(header))
    codecs = []
    for fmt in args.formats.split(","):
        runs: dict[str, list[dict]] = {"plain": [], "lazyexport": []}
        if args.before:
            runs["before"] = []
        tools = list(runs)
        for repeat in range(args.repeats):
            # each round starts with another tool, so none always follows the same one
            for tool in tools[repeat % len(tools) :] + tools[: repeat % len(tools)]:
                checkout = args.before if tool == "before" else None
                runs[tool].append(child([tool, fmt, str(src), args.cut], checkout))
        med = {tool: statistics.median(r["seconds"] for r in rs) for tool, rs in runs.items()}
        read = arr.nbytes if fmt == "bin" else cut_bytes  # (bin: the whole source)
        for tool, rs in runs.items():
            rss = max(r["peak_rss"] for r in rs) / 2**20
            ratio = f"{med['plain'] / med[tool]:.2f}x" if tool != "plain" else ""
            each = " ".join(f"{r['seconds']:.2f}" for r in rs)
            print(
                f"{fmt:14} {tool:11} {med[tool]:9.2f} {read / med[tool] / 1e9:6.2f} "
                f"{rss:7.0f}Mi {ratio:>12}  {each}"
            )
            codecs.append(f"  {fmt:14} {tool:11} " + " | ".join(sorted({r["codec"] for r in rs})))
        if fmt == "smooth":
            print(f"{'':14} equal output: {compare_smooth(list(runs))}")
    print("\nwritten (read back from each run's output):")
    print("\n".join(codecs))
    if args.scaling:
        print("\npeak RSS of lazyexport, lazily generated source, memory_limit=512MiB")
        for fmt in (f for f in args.formats.split(",") if f not in (*SHARDED, "smooth", "bin")):
            row = []
            for factor in (1, 4, 8):
                r = child(["scaling", fmt, str(factor)])
                row.append(
                    f"{factor}x ({factor} GiB): {r['peak_rss'] / 2**20:.0f} MiB "
                    f"in {r['seconds']:.1f} s"
                )
            print(f"{fmt:14} " + "; ".join(row))


if __name__ == "__main__":
    main()
