"""The budget sweep: is a larger ``--memory-limit`` ever slower? (issue 30)

Two workloads on a uint16 volume (``--size``, 1 GiB by default; planes of 1024x1024 from
128 MiB up, a cube below; a multiple of 64 along every axis), made once per shape under
``--out`` (bench-out/ by default) as Zarr v3, zstd level 3:

- ``deep``: chunks ``--deep-chunks`` (32x256x256), copied to Zarr with 64^3 chunks
  (``deep-zarr``) and to OME-Zarr with 3 levels of 64^3 chunks (``deep-ome-zarr``: the OME-Zarr
  issue's job, smaller);
- ``flat``: one-plane chunks (1xYxX) copied to Zarr with 64^3 chunks (``flat-zarr``).

Each job runs at every budget of ``--budgets`` (256MiB, 512MiB, 1GiB: the default, 2GiB, 4GiB),
each run in its own process after an ``os.sync()``, imports not timed; the rounds alternate
(each round starts with the next budget, so none always runs after the same one). The peak RSS
is the child's own VmHWM (ru_maxrss would carry the parent's across the exec). ``--block-cap``
sets ``LAZYEXPORT_MAX_BLOCK_BYTES`` in the children (the largest block a task writes, read by
lazyexport.plan at import; 1GiB by default), so caps can be compared.

Prints per job and budget: the median seconds of ``--repeat`` runs (at least 3 for the
acceptance figures) and every run's, the spread (interquartile range over the median), each
median's ratio to the fastest budget's, the median peak RSS and its ratio to the fastest
budget's peak, and the plan (block, tasks, tasks in flight, projected peak). Then the two
verdicts of the issue, per job:

- ``time``: noise is the largest spread of any budget's runs, at least 10 %; each step to the
  next larger budget is ``ok`` when its median is within (1 + noise) of the smaller budget's,
  else ``SLOWER``;
- ``peak``: the default budget's (1GiB) median peak within 1.2x of the fastest budget's.

A job whose format or source library is missing is skipped with the reason.

    python benchmarks/budget_sweep.py [--size 1GiB] [--repeat 3] [--budgets 256MiB,...,4GiB]
        [--jobs deep-zarr,deep-ome-zarr,flat-zarr] [--block-cap 64MiB] [--out DIR]
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

from dask.utils import format_bytes, parse_bytes

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = ("256MiB", "512MiB", "1GiB", "2GiB", "4GiB")
DEFAULT_BUDGET = "1GiB"  # lazyexport's default memory limit (lazyexport.plan.DEFAULT_MEMORY_LIMIT)
CHUNK = 64  # the output's chunk length along z, y and x
LEVELS = 3  # the OME-Zarr job's pyramid levels
PLANE = 1024  # the planes' side from 128 MiB up
MIN_NOISE = 0.10  # the smallest noise a step's rise is judged against
PEAK_RATIO = 1.2  # the default budget's peak against the fastest budget's, at most
# job -> (source kind, output format, pyramid levels); what each needs beyond lazyexport
JOBS = {
    "deep-zarr": ("deep", "zarr", None),
    "deep-ome-zarr": ("deep", "ome-zarr", LEVELS),
    "flat-zarr": ("flat", "zarr", None),
}
NEEDS = {"zarr": ("zarr",), "ome-zarr": ("zarr", "lazyexport.formats.ome_zarr")}
# imported before the timing (``import lazyexport`` loads its parts as they are first used)
WARM = ("dask.array", "zarr", "lazyexport.run", "lazyexport.sources.zarr")


def volume_shape(nbytes: int) -> tuple[int, int, int]:
    """The uint16 volume of about ``nbytes``: planes of PLANE x PLANE where that leaves at least
    64 of them, else a cube; every length a multiple of CHUNK."""
    elements = nbytes // 2
    if elements >= CHUNK * PLANE * PLANE:
        side = PLANE
    else:
        side = max(int(round(elements ** (1 / 3))) // CHUNK * CHUNK, CHUNK)
    depth = max(elements // (side * side) // CHUNK * CHUNK, CHUNK)
    return depth, side, side


def source_chunks(kind: str, shape: tuple[int, ...], deep: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "flat":
        return (1, *shape[1:])
    return tuple(min(c, n) for c, n in zip(deep, shape))


def make_source(out: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> Path:
    """A uint16 volume with structure and noise (compressible like an image), made once per
    shape and chunks; the values depend on the shape only (both workloads hold the same)."""
    import numpy as np
    import zarr
    from zarr.codecs import ZstdCodec

    path = out / f"sweep-{'x'.join(map(str, shape))}-chunks-{'x'.join(map(str, chunks))}.zarr"
    if (path / "zarr.json").exists():
        return path
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    array = zarr.create_array(
        str(partial),
        shape=shape,
        dtype="uint16",
        chunks=chunks,
        compressors=ZstdCodec(level=3),
        dimension_names=["z", "y", "x"],
    )
    depth, height, width = shape
    rows = np.cos(np.arange(height) / 23.0)[:, None] + np.sin(np.arange(width) / 29.0)[None, :]
    rows = rows.astype("float32")
    slab = math.lcm(chunks[0], 16)  # whole chunks of planes, a few tens of MiB
    for z0 in range(0, depth, slab):
        z = np.arange(z0, min(z0 + slab, depth))
        noise = [np.random.default_rng(i).integers(0, 200, (height, width), "uint16") for i in z]
        wave = np.sin(z / 37.0).astype("float32")[:, None, None] + rows[None]
        array[z0 : z0 + len(z)] = (2000 + 600 * wave + np.stack(noise)).astype("uint16")
    partial.rename(path)
    return path


def child_main(spec: str) -> None:
    """One timed export: ``[job, source, output, budget]``; prints seconds, peak RSS and the
    plan's block, tasks, tasks in flight and projected peak as JSON."""
    job, src, out, budget = json.loads(spec)
    for module in (*WARM, *NEEDS[JOBS[job][1]]):
        __import__(module)  # imports are not timed
    import lazyexport as le
    from lazyexport.cost import peak_rss

    _, fmt, levels = JOBS[job]
    extra = {"levels": levels} if levels else {}
    chunks = dict.fromkeys("zyx", CHUNK)
    settings = le.ExportSettings(format=fmt, output=out, chunks=chunks, **extra)
    plan = le.plan(le.open_source(src, axes="zyx"), settings, memory_limit=budget).summary()
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the last run's writes reach the disk before this one is timed, not during it
    start = time.perf_counter()
    le.export(le.open_source(src, axes="zyx"), settings, memory_limit=budget)
    seconds = time.perf_counter() - start
    record = {
        "seconds": seconds,
        "peak_rss": peak_rss(),
        "block": plan["block"],
        "tasks": plan["tasks"],
        "in_flight": plan["tasks_in_flight"],
        "projected": plan["projected_peak"],
    }
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(record))


def run_child(job: str, src: Path, out: Path, budget: str, cap: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([job, str(src), str(out), budget])]
    env = dict(os.environ, LAZYEXPORT_MAX_BLOCK_BYTES=cap) if cap else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{job} at {budget} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available(jobs: list[str]) -> list[str]:
    """The jobs whose libraries are installed; a missing one is said, not silently left out."""
    found = []
    for job in jobs:
        try:
            for module in NEEDS[JOBS[job][1]]:
                __import__(module)
            found.append(job)
        except ImportError as exc:
            print(f"skipped {job}: {exc}; pip install lazyexport[bench]")
    return found


def spread(values: list[float]) -> float:
    """The interquartile range of ``values`` over their median (0 for fewer than 2)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(values)


def summarize(budgets: list[str], runs: dict[str, list[dict]]) -> dict:
    """Medians, spreads, the fastest budget, noise and the step verdicts of one job."""
    seconds = {b: statistics.median(r["seconds"] for r in runs[b]) for b in budgets}
    peaks = {b: statistics.median(r["peak_rss"] for r in runs[b]) for b in budgets}
    spreads = {b: spread([r["seconds"] for r in runs[b]]) for b in budgets}
    fastest = min(budgets, key=lambda b: seconds[b])
    noise = max([MIN_NOISE, *spreads.values()])
    steps = {  # each budget against the next smaller one
        big: "ok" if seconds[big] <= seconds[small] * (1 + noise) else "SLOWER"
        for small, big in zip(budgets, budgets[1:])
    }
    return {
        "seconds": seconds,
        "peaks": peaks,
        "spreads": spreads,
        "fastest": fastest,
        "noise": noise,
        "steps": steps,
    }


def print_table(job: str, budgets: list[str], runs: dict[str, list[dict]], s: dict) -> None:
    fast = s["fastest"]
    head = (
        f"{'budget':>8} {'median s':>9} {'spread':>7} {'time x':>7} {'peak MiB':>9} "
        f"{'peak x':>7} {'projected':>10} {'tasks':>6} {'at once':>7}  {'step':6} "
        f"{'block':16} runs (s, in order)"
    )
    print(f"\n{job}\n{head}")
    for b in budgets:
        last = runs[b][-1]
        each = " ".join(f"{r['seconds']:.2f}" for r in runs[b])
        print(
            f"{b:>8} {s['seconds'][b]:9.2f} {s['spreads'][b]:6.0%} "
            f"{s['seconds'][b] / s['seconds'][fast]:7.2f} {s['peaks'][b] / 2**20:9.0f} "
            f"{s['peaks'][b] / s['peaks'][fast]:7.2f} {last['projected'] / 2**20:7.0f}MiB "
            f"{last['tasks']:6d} {last['in_flight']:7d}  {s['steps'].get(b, '-'):6} "
            f"{'x'.join(map(str, last['block'])):16} {each}"
        )


def verdicts(job: str, budgets: list[str], s: dict) -> list[str]:
    """The issue's two verdict lines for one job."""
    slower = [b for b, v in s["steps"].items() if v != "ok"]
    steps = len(s["steps"])
    lines = [
        f"verdict {job} time: never rises by more than noise ({s['noise']:.0%}) as the budget "
        f"grows: {'yes' if not slower else 'NO'} ({len(slower)} of {steps} steps SLOWER"
        f"{': ' + ', '.join(slower) if slower else ''})"
    ]
    fast = s["fastest"]
    if DEFAULT_BUDGET in budgets:
        ratio = s["peaks"][DEFAULT_BUDGET] / s["peaks"][fast]
        lines.append(
            f"verdict {job} peak: the default {DEFAULT_BUDGET}'s peak "
            f"{s['peaks'][DEFAULT_BUDGET] / 2**20:.0f} MiB is {ratio:.2f}x the fastest "
            f"setting's ({fast}, {s['peaks'][fast] / 2**20:.0f} MiB): "
            f"{'yes' if ratio <= PEAK_RATIO else 'NO'} (at most {PEAK_RATIO}x)"
        )
    else:
        lines.append(f"verdict {job} peak: not judged ({DEFAULT_BUDGET} not among the budgets)")
    return lines


def sweep(job: str, src: Path, out: Path, budgets: list[str], args) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {b: [] for b in budgets}
    for r in range(args.repeat):
        for budget in budgets[r % len(budgets) :] + budgets[: r % len(budgets)]:
            run = run_child(job, src, out, budget, args.block_cap)
            runs[budget].append(run)
            print(f"  round {r + 1} {job} {budget}: {run['seconds']:.2f} s", flush=True)
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="the volume's size (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per budget (default 3)")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="memory limits, ascending")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"of {', '.join(JOBS)}")
    parser.add_argument(
        "--block-cap", help="LAZYEXPORT_MAX_BLOCK_BYTES for the children (default: lazyexport's)"
    )
    parser.add_argument("--deep-chunks", default="32,256,256", help="the deep source's chunks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out", help="sources, outputs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budgets = args.budgets.split(",")
    if [parse_bytes(b) for b in budgets] != sorted(parse_bytes(b) for b in budgets):
        parser.error("--budgets must be in ascending order")
    unknown = set(args.jobs.split(",")) - set(JOBS)
    if unknown:
        parser.error(f"unknown jobs {sorted(unknown)}: choose from {', '.join(JOBS)}")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        return child_main(args.child)
    budgets = args.budgets.split(",")
    shape = volume_shape(parse_bytes(args.size))
    deep = tuple(int(n) for n in args.deep_chunks.split(","))
    cap = args.block_cap or os.environ.get("LAZYEXPORT_MAX_BLOCK_BYTES") or "1GiB (default)"
    print(
        f"volume: uint16 {'x'.join(map(str, shape))} ({format_bytes(2 * math.prod(shape))}); "
        f"budgets {', '.join(budgets)}; {args.repeat} runs each; block cap {cap}; "
        f"{os.cpu_count()} cores; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for job in available(args.jobs.split(",")):
        kind, fmt, levels = JOBS[job]
        chunks = source_chunks(kind, shape, deep)
        src = make_source(args.out, shape, chunks)
        print(
            f"{job}: source chunks {'x'.join(map(str, chunks))} -> {fmt}, {CHUNK}^3 chunks"
            + (f", {levels} levels" if levels else "")
        )
        runs = sweep(job, src, args.out / f"sweep-out-{job}.zarr", budgets, args)
        results[job] = (runs, summarize(budgets, runs))
    print("\ntime x: median over the fastest budget's; peak x: median peak RSS over the fastest's;")
    print("spread: the runs' interquartile range over their median; step: against the budget above")
    for job, (runs, s) in results.items():
        print_table(job, budgets, runs, s)
    print()
    for job, (_, s) in results.items():
        print("\n".join(verdicts(job, budgets, s)))


if __name__ == "__main__":
    main()
