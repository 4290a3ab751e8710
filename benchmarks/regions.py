"""Many regions of one source in one run: lazyexport's regions against what a user would write
with dask by hand, a loop of ``da.to_zarr`` (one region at a time) and one ``da.store`` of all
the regions (one graph: dask shares the source's read tasks between them).

Workload: a float32 Zarr source on local disk (zyx, 1 GiB by default, zstd, chunks
16x256x256); 20 overlapping boxes of 48x384x384 at fixed pseudo-random places (not on chunk
boundaries); each renormalized [0, 1] -> [0, 255], uint8, written as a Zarr v3 array of its own
(zstd level 3, 16x256x256 chunks). Each tool runs in a child process of its own, runs alternate
between the tools, every output is read back and compared, and the ratios of the medians are
printed (tool seconds / lazyexport seconds: > 1 means lazyexport is faster), with each tool's
peak resident memory.

    python benchmarks/regions.py [--mib 1024] [--repeats 3]
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
CHUNKS = (16, 256, 256)
BOX = (48, 384, 384)
COUNT = 20
TOOLS = ("lazyexport", "dask-loop", "dask-store")


def make_source(mib: int) -> Path:
    """objstore.py's source (the same chunks), zstd-compressed, at least 64 planes deep."""
    from zarr.codecs import ZstdCodec

    from objstore import CHUNKS as SOURCE_CHUNKS
    from objstore import make_source as wave_source

    assert SOURCE_CHUNKS == CHUNKS
    return wave_source(mib, "regions", 64, compressors=ZstdCodec(level=1))


def boxes(shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, int], ...]]:
    import numpy as np

    rng = np.random.default_rng(11)
    out = {}
    for i in range(COUNT):
        starts = [int(rng.integers(0, n - b)) for n, b in zip(shape, BOX)]
        out[f"r{i:02d}"] = tuple((s, s + b) for s, b in zip(starts, BOX))
    return out


def run_tool(tool: str, src: str, out: str) -> None:
    """One run (in a child process): what the user of each tool would write."""
    import zarr

    shape = zarr.open_array(src, mode="r").shape
    regions = boxes(shape)
    if tool == "lazyexport":
        import lazyexport as le

        le.export(
            src,
            le.ExportSettings(
                regions={n: dict(zip("zyx", b)) for n, b in regions.items()}, format="zarr",
                output=f"{out}/{{region}}.zarr", renormalize=((0, 1), (0, 255)), dtype="uint8",
                chunks=dict(zip("zyx", CHUNKS)),
            ),
        )  # fmt: skip
        return
    import dask.array as da
    import numpy as np
    from zarr.codecs import ZstdCodec

    source = da.from_zarr(src)
    sources, targets = [], []
    for name, box in regions.items():
        cut = source[tuple(slice(*b) for b in box)]
        data = da.clip(np.round(cut * 255), 0, 255).astype("uint8").rechunk(CHUNKS)
        target = zarr.create_array(
            f"{out}/{name}.zarr", shape=data.shape, chunks=CHUNKS, dtype="uint8",
            compressors=ZstdCodec(level=3), dimension_names=["z", "y", "x"],
        )  # fmt: skip
        if tool == "dask-loop":
            da.store(data, target, lock=False)
        else:
            sources.append(data)
            targets.append(target)
    if sources:
        da.store(sources, targets, lock=False)


def check(out: Path, src: Path) -> None:
    import numpy as np
    import zarr

    source = zarr.open_array(str(src), mode="r")
    for name, box in list(boxes(source.shape).items())[:: COUNT // 4]:
        cut = source[tuple(slice(*b) for b in box)]
        want = np.clip(np.rint(cut.astype("f8") * 255), 0, 255).astype("uint8")
        got = zarr.open_array(str(out / f"{name}.zarr"), mode="r")[...]
        assert np.abs(got.astype(int) - want).max() <= 1, name  # float32 vs float64 rounding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("TOOL", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        run_tool(*args.child)
        seconds = time.perf_counter() - start
        # this process's own high-water mark (ru_maxrss would carry the parent's over exec)
        status = Path("/proc/self/status").read_text()
        peak = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1])
        peak *= 1024
        print(json.dumps({"seconds": seconds, "peak": peak}))
        return
    src = make_source(args.mib)
    import zarr

    shape = zarr.open_array(str(src), mode="r").shape
    print(f"source {src.name}: {shape} float32; {COUNT} overlapping {BOX} regions -> uint8 Zarr")
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    peaks: dict[str, list[int]] = {t: [] for t in TOOLS}
    for round_ in range(args.repeats):
        order = TOOLS[round_ % 3 :] + TOOLS[: round_ % 3]
        for tool in order:
            out = OUT / f"regions-{tool}"
            shutil.rmtree(out, ignore_errors=True)
            done = subprocess.run(
                [sys.executable, __file__, "--child", tool, str(src), str(out)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                raise SystemExit(f"{tool} failed:\n{done.stderr}")
            found = json.loads(done.stdout.strip().splitlines()[-1])
            check(out, src)
            times[tool].append(found["seconds"])
            peaks[tool].append(found["peak"])
            print(
                f"  round {round_ + 1} {tool:11s} {found['seconds']:6.2f} s, "
                f"peak {found['peak'] / 2**20:5.0f} MiB",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    mine = statistics.median(times["lazyexport"])
    print(f"median lazyexport  {mine:.2f} s, peak {max(peaks['lazyexport']) / 2**20:.0f} MiB")
    for tool in TOOLS[1:]:
        theirs = statistics.median(times[tool])
        print(
            f"median {tool:11s} {theirs:.2f} s, peak {max(peaks[tool]) / 2**20:.0f} MiB   "
            f"ratio {theirs / mine:.2f}x (> 1: lazyexport faster)"
        )


if __name__ == "__main__":
    main()
