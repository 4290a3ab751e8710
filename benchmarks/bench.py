"""lazyexport against the same export written by hand with plain dask, in one run.

Workload (the performance issue's): a float32 Zarr source (zyxc, 2 GiB by default), cutout
starting mid-chunk, renormalize [0, 1] -> [0, 255], uint8, transpose to czyx; written as Zarr,
gzip-1 HDF5 and a TIFF sequence (and, with ``--formats zarr-sharded``, Zarr v3 with 32 KiB
chunks in 8 MiB shards, against ``da.store`` into the same sharded array). Runs alternate
(plain, lazyexport, plain, ...) so machine noise hits both alike; each run is its own process, so its peak RSS is its own. Prints medians and
the speed ratio (plain seconds / lazyexport seconds: > 1 means lazyexport is faster).

    python benchmarks/bench.py [--gib 2] [--repeats 3] [--scaling]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
CUT = {"z": (4, -4)}          # starts mid-chunk (source chunks are 16 deep)
SRC_CHUNKS = (16, 256, 256, 2)
SMALL_CHUNKS, SHARDS = (2, 1, 128, 128), (2, 16, 512, 512)   # zarr-sharded: 32 KiB chunks, 8 MiB shards


def source_path(gib: float) -> Path:
    return OUT / f"source-{gib:g}GiB.zarr"


def make_source(gib: float) -> Path:
    """Write the float32 source once (a smooth two-channel probability map)."""
    import zarr

    from lazyexport.demo import sample_volume

    path = source_path(gib)
    if (path / "zarr.json").exists():
        return path
    z = max(int(gib * 2**30 / (1024 * 2048 * 2 * 4)), 16)
    vol = sample_volume(shape=(z, 1024, 2048), chunks=SRC_CHUNKS[:3])
    arr = zarr.create_array(str(path), shape=vol.shape, chunks=SRC_CHUNKS, dtype="float32",
                            dimension_names=list(vol.dims), overwrite=True)
    import dask.array as da

    da.store(vol.data, arr, lock=False)
    return path


def run_plain(fmt: str, src: Path, out: Path) -> None:
    """What a user writes by hand with dask, tifffile and h5py."""
    import dask
    import dask.array as da
    import numpy as np
    import tifffile

    x = da.from_zarr(str(src))
    lo, hi = CUT["z"]
    x = x[lo:hi]
    y = da.clip(da.round(x * np.float32(255.0)), 0, 255).astype("uint8").transpose(3, 0, 1, 2)
    if fmt == "zarr":
        y = y.rechunk((2, 16, 256, 256))   # to_zarr needs regular chunks; the cutout broke them
        da.to_zarr(y, str(out), overwrite=True)
    elif fmt == "zarr-sharded":
        import zarr

        y = y.rechunk(SHARDS)               # one dask chunk per shard, so no two tasks write one
        arr = zarr.create_array(str(out), shape=y.shape, dtype=y.dtype, chunks=SMALL_CHUNKS, shards=SHARDS)
        da.store(y, arr, lock=False)
    elif fmt == "hdf5":
        da.to_hdf5(str(out), "/exported_data", y, chunks=(2, 8, 128, 256), compression="gzip",
                   compression_opts=1)
    else:
        out.mkdir(parents=True, exist_ok=True)
        writes = [dask.delayed(tifffile.imwrite)(out / f"z{i:04d}.tif", y[:, i], photometric="minisblack")
                  for i in range(y.shape[1])]
        dask.compute(*writes)


def run_lazyexport(fmt: str, src: Path, out: Path) -> None:
    import lazyexport as le

    output = str(out / "z{slice_index}.tif") if fmt == "tiff-sequence" else str(out)
    sharded = {}
    if fmt == "zarr-sharded":
        fmt, sharded = "zarr", dict(chunks=dict(zip("czyx", SMALL_CHUNKS)), shards=dict(zip("czyx", SHARDS)))
    settings = le.ExportSettings(roi={"z": CUT["z"]}, renormalize=((0.0, 1.0), (0, 255)), dtype="uint8",
                                 axis_order="czyx", format=fmt, output=output, **sharded)
    le.export(str(src), settings, overwrite=True)


def run_transform_only(src: Path) -> None:
    import dask.array as da
    import numpy as np

    x = da.from_zarr(str(src))[CUT["z"][0]:CUT["z"][1]]
    y = da.clip(da.round(x * np.float32(255.0)), 0, 255).astype("uint8").transpose(3, 0, 1, 2)
    y.sum().compute()


def run_scaling(fmt: str, factor: int, out: Path) -> None:
    import lazyexport as le
    from lazyexport.demo import sample_volume

    vol = sample_volume(shape=(64 * factor, 2048, 2048), chunks=(16, 256, 256))   # 1 GiB per factor
    output = str(out / "z{slice_index}.tif") if fmt == "tiff-sequence" else str(out)
    settings = le.ExportSettings(renormalize=((0.0, 1.0), (0, 255)), dtype="uint8", axis_order="czyx",
                                 format=fmt, output=output)
    le.export(vol, settings, overwrite=True, memory_limit="512MiB")


def peak_rss() -> int:
    """This process's own peak resident memory (VmHWM), in bytes. Not ru_maxrss: Linux carries
    that across exec, so it would include the parent's resident memory at the fork."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(args: list[str]) -> dict:
    """Run one measurement in a fresh process; return its seconds and peak RSS."""
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"benchmark run {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(spec: str) -> None:
    kind, fmt, *rest = json.loads(spec)
    out = OUT / f"out-{kind}-{fmt}"
    shutil.rmtree(out, ignore_errors=True)
    if out.with_suffix(".h5").exists():
        out.with_suffix(".h5").unlink()
    start = time.perf_counter()
    if kind == "plain":
        run_plain(fmt, Path(rest[0]), out.with_suffix(".h5") if fmt == "hdf5" else out)
    elif kind == "lazyexport":
        run_lazyexport(fmt, Path(rest[0]), out.with_suffix(".h5") if fmt == "hdf5" else out)
    elif kind == "transform":
        run_transform_only(Path(rest[0]))
    elif kind == "scaling":
        run_scaling(fmt, int(rest[0]), out.with_suffix(".h5") if fmt == "hdf5" else out)
    seconds = time.perf_counter() - start
    rss = peak_rss()
    shutil.rmtree(out, ignore_errors=True)
    if out.with_suffix(".h5").exists():
        out.with_suffix(".h5").unlink()
    print(json.dumps({"seconds": seconds, "peak_rss": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="source size in GiB (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per tool (default 3)")
    parser.add_argument("--formats", default="zarr,hdf5,tiff-sequence",
                        help="comma-separated: zarr, hdf5, tiff-sequence, zarr-sharded")
    parser.add_argument("--scaling", action="store_true", help="also peak RSS at 1x, 4x, 8x GiB, memory_limit=512MiB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)

    OUT.mkdir(exist_ok=True)
    src = make_source(args.gib)
    src_bytes = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    import zarr

    arr = zarr.open_array(str(src), mode="r")
    lo, hi = CUT["z"]
    cut_bytes = arr.nbytes * (arr.shape[0] - lo + hi) / arr.shape[0]
    print(f"source {src.name}: {arr.shape} float32, {arr.nbytes / 2**30:.2f} GiB "
          f"({src_bytes / 2**30:.2f} GiB on disk); cutout {cut_bytes / 2**30:.2f} GiB")
    t = statistics.median(child(["transform", "-", str(src)])["seconds"] for _ in range(args.repeats))
    print(f"read + transform only (plain dask, no writing): {t:.2f} s, {cut_bytes / t / 1e9:.2f} GB/s\n")

    header = (f"{'format':14} {'tool':11} {'median s':>9} {'GB/s':>6} {'peak RSS':>9} {'speed ratio':>12}"
              f"  runs (s, in order)")
    print(header)
    print("-" * len(header))
    for fmt in args.formats.split(","):
        runs: dict[str, list[dict]] = {"plain": [], "lazyexport": []}
        for _ in range(args.repeats):
            for tool in runs:
                runs[tool].append(child([tool, fmt, str(src)]))
        med = {tool: statistics.median(r["seconds"] for r in rs) for tool, rs in runs.items()}
        for tool, rs in runs.items():
            rss = max(r["peak_rss"] for r in rs) / 2**20
            ratio = f"{med['plain'] / med['lazyexport']:.2f}x" if tool == "lazyexport" else ""
            each = " ".join(f"{r['seconds']:.2f}" for r in rs)
            print(f"{fmt:14} {tool:11} {med[tool]:9.2f} {cut_bytes / med[tool] / 1e9:6.2f} "
                  f"{rss:7.0f}Mi {ratio:>12}  {each}")
    if args.scaling:
        print("\npeak RSS of lazyexport, lazily generated source, memory_limit=512MiB")
        for fmt in (f for f in args.formats.split(",") if f != "zarr-sharded"):
            row = []
            for factor in (1, 4, 8):
                r = child(["scaling", fmt, str(factor)])
                row.append(f"{factor}x ({factor} GiB): {r['peak_rss'] / 2**20:.0f} MiB in {r['seconds']:.1f} s")
            print(f"{fmt:14} " + "; ".join(row))


if __name__ == "__main__":
    main()
