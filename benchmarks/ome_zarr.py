"""lazyexport's OME-Zarr pyramid against the converters microscopists use, in one run (issue 29).

The job: a uint16 Zarr volume (a cube, ``--size`` 2 GiB by default, chunks 64x256x256, zstd) to
OME-Zarr 0.5 with three levels (2x steps along z, y and x), 64^3 chunks, 1 GiB of memory for
lazyexport (``--memory``). Each converter runs at its defaults except for what the job fixes
(levels, chunks, NGFF 0.5) and a mean where it offers one:

- ``lazyexport``: ``export`` to ``ome-zarr`` (``levels=3``, mean);
- ``ngff-zarr``: ``to_multiscales`` (``ITKWASM_BIN_SHRINK``: a mean) + ``to_ngff_zarr``;
- ``ome-zarr-py``: ``write_image`` (``Methods.LOCAL_MEAN``) into a Zarr v3 group;
- ``bioio-ome-zarr``: ``OMEZarrWriter.write_full_volume`` (its levels are a nearest resize:
  it has no mean);
- ``dask``: plain dask, ``from_zarr`` + ``to_zarr``-style ``store`` of level 0, then each level
  ``coarsen(np.mean)`` of the level below read back, rounded, stored; the NGFF metadata by hand.

A converter that is not installed is skipped with a printed reason. Runs alternate (each round
starts with the next converter), each in its own process after an ``os.sync()``; the time is
the conversion's (imports excluded), the peak RSS the child's own (VmHWM: ru_maxrss would
carry the parent's across the exec). After each converter's first run its output is validated
(``ome-zarr-models``, NGFF 0.5) and its levels compared with an independent mean of the source
(a 2x2x2 mean rounded half to even, level by level, in numpy, over a corner of the volume): the
largest difference is printed for every converter; lazyexport's and plain dask's must be 0.
Prints medians (``--repeat``, at least 3 for the acceptance figures) and the ratios to
lazyexport's (time: > 1 means lazyexport is faster; memory: > 1 means lazyexport takes less).

    python benchmarks/ome_zarr.py [--size 2GiB] [--repeat 3] [--memory 1GiB] [--tools ...]
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

# this file's directory is not where ``import ome_zarr`` looks: this file is not ome-zarr-py
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402
from dask.utils import parse_bytes  # noqa: E402

OUT = HERE.parent / "bench-out"
TOOLS = ("lazyexport", "ngff-zarr", "ome-zarr-py", "bioio-ome-zarr", "dask")
MODULES = {  # what each converter needs installed
    "lazyexport": "lazyexport",
    "ngff-zarr": "ngff_zarr",
    "ome-zarr-py": "ome_zarr",
    "bioio-ome-zarr": "bioio_ome_zarr",
    "dask": "dask",
}
# what a converter imports as it runs, imported before the timing (``import lazyexport`` itself
# imports nothing: its parts load as they are first used)
WARM = {
    "lazyexport": ("lazyexport.run", "lazyexport.sources.zarr", "lazyexport.formats.ome_zarr"),
    "ome-zarr-py": ("ome_zarr.writer", "ome_zarr.scale"),
    "bioio-ome-zarr": ("bioio_ome_zarr.writers",),
}
LEVELS = 3
CHUNK = 64
SOURCE_CHUNKS = (64, 256, 256)
CHECKED = 256  # the corner of the volume whose levels are compared with an independent mean


def cube_side(nbytes: int) -> int:
    """The side of the uint16 cube of about ``nbytes``, a multiple of 64 (at least 128)."""
    return max(int(round((nbytes / 2) ** (1 / 3) / CHUNK)) * CHUNK, 2 * CHUNK)


def source_path(side: int) -> Path:
    return OUT / f"omez-source-{side}.zarr"


def make_source(side: int) -> Path:
    """A uint16 cube with structure and noise (compressible like an image), made once."""
    path = source_path(side)
    if (path / "zarr.json").exists():
        return path
    import dask.array as da
    import zarr
    from zarr.codecs import ZstdCodec

    shape = (side,) * 3

    def pattern(block, block_info=None):
        """Waves along z, y and x (sums of 1-D profiles: cheap) plus noise from the block's
        place."""
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        z, y, x = np.arange(z0, z1), np.arange(y0, y1), np.arange(x0, x1)
        wave = (
            np.sin(z / 37.0)[:, None, None]
            + np.cos(y / 23.0)[None, :, None]
            + np.sin(x / 29.0)[None, None, :]
        )
        noise = np.random.default_rng(z0 * 7919 + y0 * 31 + x0).integers(0, 200, block.shape)
        return (2000 + 600 * wave + noise).astype("uint16")

    empty = da.empty(shape, chunks=SOURCE_CHUNKS, dtype="uint16")
    data = empty.map_blocks(pattern, dtype="uint16")
    array = zarr.create_array(
        str(path),
        shape=shape,
        dtype="uint16",
        chunks=SOURCE_CHUNKS,
        compressors=ZstdCodec(level=3),
        dimension_names=["z", "y", "x"],
    )
    data.store(array, lock=False)
    return path


def level_shapes(side: int) -> list[tuple[int, ...]]:
    return [(math.ceil(side / 2**k),) * 3 for k in range(LEVELS)]


def run_lazyexport(src: Path, out: Path, memory: str) -> None:
    import lazyexport as le

    chunks = {"z": CHUNK, "y": CHUNK, "x": CHUNK}
    settings = le.ExportSettings(format="ome-zarr", output=str(out), chunks=chunks, levels=LEVELS)
    le.export(le.open_source(str(src), axes="zyx"), settings, memory_limit=memory)


def run_ngff_zarr(src: Path, out: Path, memory: str) -> None:
    import dask.array as da
    import ngff_zarr as nz

    image = nz.to_ngff_image(da.from_zarr(str(src)), dims=["z", "y", "x"])
    factors = [2**k for k in range(1, LEVELS)]
    multiscales = nz.to_multiscales(
        image, scale_factors=factors, method=nz.Methods.ITKWASM_BIN_SHRINK, chunks=CHUNK
    )
    nz.to_ngff_zarr(str(out), multiscales, version="0.5")


def run_ome_zarr_py(src: Path, out: Path, memory: str) -> None:
    import dask.array as da
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    factors = [{"z": 2**k, "y": 2**k, "x": 2**k} for k in range(1, LEVELS)]
    write_image(
        da.from_zarr(str(src)),
        group,
        scale_factors=factors,
        method=Methods.LOCAL_MEAN,
        axes="zyx",
        storage_options={"chunks": (CHUNK,) * 3},
    )


def run_bioio(src: Path, out: Path, memory: str) -> None:
    import dask.array as da
    from bioio_ome_zarr.writers import OMEZarrWriter

    data = da.from_zarr(str(src))
    writer = OMEZarrWriter(
        str(out),
        level_shapes=level_shapes(data.shape[0]),
        dtype=data.dtype,
        chunk_shape=(CHUNK,) * 3,
        zarr_format=3,
        axes_names=["z", "y", "x"],
        axes_types=["space"] * 3,
    )
    writer.write_full_volume(data)


def run_dask(src: Path, out: Path, memory: str) -> None:
    import dask.array as da
    import zarr
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    level = da.from_zarr(str(src)).rechunk(CHUNK * 2)
    datasets = []
    for k in range(LEVELS):
        if k:
            below = da.from_zarr(group[str(k - 1)]).rechunk(CHUNK * 2)
            mean = da.coarsen(np.mean, below, {0: 2, 1: 2, 2: 2}, trim_excess=False)
            level = da.round(mean).astype("uint16")
        array = group.create_array(
            str(k),
            shape=level.shape,
            dtype="uint16",
            chunks=(CHUNK,) * 3,
            compressors=ZstdCodec(level=3),
            dimension_names=["z", "y", "x"],
        )
        level.store(array, lock=False)
        shift = (2**k - 1) / 2
        transforms = [{"type": "scale", "scale": [float(2**k)] * 3}]
        if shift:
            transforms.append({"type": "translation", "translation": [shift] * 3})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    axes = [{"name": a, "type": "space"} for a in "zyx"]
    multiscale = {"name": "image", "axes": axes, "datasets": datasets}
    group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


RUNS = {
    "lazyexport": run_lazyexport,
    "ngff-zarr": run_ngff_zarr,
    "ome-zarr-py": run_ome_zarr_py,
    "bioio-ome-zarr": run_bioio,
    "dask": run_dask,
}


def peak_rss() -> int:
    """This process's own peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child_main(spec: str) -> None:
    tool, src, out, memory = json.loads(spec)
    for module in ("dask.array", "zarr", *WARM.get(tool, ()), MODULES[tool]):
        __import__(module)  # imports are not timed
    os.sync()
    start = time.perf_counter()
    RUNS[tool](Path(src), Path(out), memory)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss()}))


def run_child(tool: str, src: Path, out: Path, memory: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", json.dumps([tool, str(src), str(out), memory])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tool} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def independent_means(src: Path, side: int) -> list[np.ndarray]:
    """Level by level over the checked corner: level 0 as stored, each next level the 2x2x2
    mean of the one before, rounded half to even (what a mean pyramid of integers holds)."""
    import zarr

    n = min(CHECKED, side)
    level = np.asarray(zarr.open_array(str(src), mode="r")[:n, :n, :n])
    out = [level]
    for _ in range(1, LEVELS):
        m = level.shape[0] // 2
        windows = level[: 2 * m, : 2 * m, : 2 * m].astype(np.float64)
        windows = windows.reshape(m, 2, m, 2, m, 2)
        level = np.round(windows.mean(axis=(1, 3, 5))).astype(level.dtype)
        out.append(level)
    return out


def check_output(out: Path, expected: list[np.ndarray], side: int) -> dict:
    """Validate ``out`` (ome-zarr-models, NGFF 0.5) and compare its levels' checked corners with
    ``expected``: the largest absolute difference per level; the level shapes; files, bytes."""
    import zarr

    group = zarr.open_group(str(out), mode="r")
    try:
        from ome_zarr_models.v05.image import Image

        Image.from_zarr(group)
        valid = "valid"
    except Exception as exc:  # the report says why
        valid = f"INVALID: {str(exc).splitlines()[0][:120]}"
    multiscale = dict(group.attrs)["ome"]["multiscales"][0]
    diffs, shapes = [], []
    for k, dataset in enumerate(multiscale["datasets"][:LEVELS]):
        array = group[dataset["path"]]
        shapes.append(tuple(array.shape))
        want = expected[k]
        got = np.asarray(array[tuple(slice(0, n) for n in want.shape)])
        diffs.append(int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()))
    files = [p for p in out.rglob("*") if p.is_file()]
    return {
        "valid": valid,
        "diffs": diffs,
        "shapes": shapes,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }


def available(tools: list[str]) -> list[str]:
    """The tools installed; a missing one is said, not silently left out."""
    found = []
    for tool in tools:
        try:
            __import__(MODULES[tool])
            found.append(tool)
        except ImportError as exc:
            print(f"skipped {tool}: not installed ({exc}); pip install lazyexport[bench]")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2GiB", help="source size (default 2GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per converter (default 3)")
    parser.add_argument("--memory", default="1GiB", help="lazyexport's memory limit")
    parser.add_argument("--tools", default=",".join(TOOLS), help="converters to run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    tools = available(args.tools.split(","))
    side = cube_side(parse_bytes(args.size))
    OUT.mkdir(exist_ok=True)
    src = make_source(side)
    print(f"source: uint16 {side}^3 ({side**3 * 2 / 2**30:.2f} GiB), chunks {SOURCE_CHUNKS}")
    print(f"job: OME-Zarr 0.5, {LEVELS} levels, {CHUNK}^3 chunks; lazyexport memory {args.memory}")
    expected = independent_means(src, side)
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    checks: dict[str, dict] = {}
    for r in range(args.repeat):
        for tool in tools[r % len(tools) :] + tools[: r % len(tools)]:
            out = OUT / f"omez-{tool}.ome.zarr"
            runs[tool].append(run_child(tool, src, out, args.memory))
            print(f"  round {r + 1} {tool}: {runs[tool][-1]['seconds']:.2f} s", flush=True)
            if tool not in checks:
                checks[tool] = check_output(out, expected, side)
            shutil.rmtree(out, ignore_errors=True)
    report(tools, runs, checks, side)


def report(tools: list[str], runs: dict, checks: dict, side: int) -> None:
    seconds = {t: statistics.median(r["seconds"] for r in runs[t]) for t in tools}
    rss = {t: statistics.median(r["peak_rss"] for r in runs[t]) for t in tools}
    ours = "lazyexport"
    head = f"{'converter':<16}{'median s':>10}{'peak RSS':>12}{'time x':>8}{'RSS x':>7}"
    print(f"\n{head}{'files':>7}{'MiB':>8}  level diffs vs mean  output")
    for t in tools:
        c = checks[t]
        time_ratio = seconds[t] / seconds[ours] if ours in seconds else float("nan")
        rss_ratio = rss[t] / rss[ours] if ours in rss else float("nan")
        print(
            f"{t:<16}{seconds[t]:>10.2f}{rss[t] / 2**20:>10.0f}Mi{time_ratio:>8.2f}"
            f"{rss_ratio:>7.2f}{c['files']:>7}{c['bytes'] / 2**20:>8.1f}  "
            f"{str(c['diffs']):<20} {c['valid']}"
        )
        if c["shapes"] != level_shapes(side):
            print(f"  {t}: level shapes {c['shapes']} (the job's: {level_shapes(side)})")
    print(
        "time x: the converter's median seconds over lazyexport's (> 1: lazyexport faster); "
        "RSS x: its peak RSS over lazyexport's (> 1: lazyexport leaner)"
    )
    wrong = [t for t in ("lazyexport", "dask") if t in checks and any(checks[t]["diffs"])]
    invalid = [t for t in ("lazyexport", "dask") if t in checks and checks[t]["valid"] != "valid"]
    if wrong or invalid:
        raise SystemExit(f"levels not the mean: {wrong}; invalid outputs: {invalid}")


if __name__ == "__main__":
    main()
