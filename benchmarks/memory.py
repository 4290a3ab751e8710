"""Peak memory of lazyexport against its cost model's projection, and time to the first block \
at scale.

Two parts, each export in its own child process (so its peak resident memory, VmHWM, is its own):

1. **Memory table by layout.** A float32 ``zyx`` volume (8 GiB by default, planes of
   4096 x 4096, so 128 planes), generated lazily by ``da.map_blocks`` (each chunk filled in place
   plane by plane: generating a chunk takes little more than the chunk), in each source chunk
   layout (1x4096x4096, 16x256x256, 64x1024x1024, 256x256x256; each length capped at the shape),
   renormalized [0, 1] -> [0, 255] to uint8 and exported with ``memory_limit`` (512 MiB) to every
   format. Per run: the plan (tasks, tasks in flight, staged, projected peak, read amplification)
   and what was measured (``ExportResult.peak_memory``, the process's VmHWM, seconds). The layout
   64x4096x4096 (4 GiB chunks at 8 GiB) must be refused with a MemoryLimitError: it is only
   planned, and exported only if it plans. Every export writes into a temporary directory under
   bench-out/ that is removed after the run.
2. **Scale.** An empty Zarr v3 source (``zarr.create_array``, fill value 0, no chunk written) of
   1 TiB and 64 TiB exported to Zarr with ``memory_limit``: seconds of planning, seconds from
   the start of ``le.export`` to the first written block (then the export is cancelled), seconds
   the cancel took to return, and the child's peak RSS.

    python benchmarks/memory.py [--gib 8] [--memory-limit 512MiB] [--formats zarr,hdf5,...]
                                [--part all|memory|scale] [--scale-sizes 1TiB,64TiB]
                                [--smooth z=4,y=4,x=4]

``--smooth`` adds the smoothing step (docs/usage.md, "Smooth") to every export of the memory
part: its halo is read with each block.

Tables are printed and written to bench-out/ (git-ignored): memory-<GiB>-<limit>.txt/.jsonl
and scale-<limit>.txt/.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
MiB, GiB, TiB = 2**20, 2**30, 2**40
SLACK = 256 * MiB  # interpreter, libraries and allocator slack on top of the budget
LAYOUTS = "1x4096x4096,16x256x256,64x1024x1024,256x256x256,64x4096x4096"
REFUSED_LAYOUTS = {
    (64, 4096, 4096)
}  # expected: MemoryLimitError (a chunk alone exceeds the budget)
FORMATS = "zarr,hdf5,n5,ome-zarr,tiff,tiff-sequence,png-sequence,npy"
SCALE_CHUNKS = (64, 256, 256)
SCALE_SHAPES = {  # float32 zyx: exactly the size named
    "1TiB": (4096, 8192, 8192),
    "64TiB": (16384, 32768, 32768),
}
OUTPUT_NAMES = {
    "zarr": "v.zarr",
    "hdf5": "v.h5",
    "n5": "v.n5",
    "tiff": "v.tif",
    "npy": "v.npy",
    "ome-zarr": "v.ome.zarr",
    "tiff-sequence": "seq/z{slice_index}.tif",
    "png-sequence": "seq/z{slice_index}.png",
}


# --- the generated source ---------------------------------------------------------------------


def expected_plane(z: int, plane: int):
    """Plane ``z`` of the generated volume as the export writes it (uint8), for --verify."""
    import numpy as np

    from lazyexport.demo import _smooth_block

    block = _smooth_block({None: {"array-location": [(z, z + 1), (0, plane), (0, plane)]}})[0]
    return np.clip(np.round(block * np.float32(255.0)), 0, 255).astype(np.uint8)


def source_shape(gib: float, plane: int) -> tuple[int, int, int]:
    return (max(int(round(gib * GiB / (plane * plane * 4))), 1), plane, plane)


def generated(shape: tuple[int, ...], layout: tuple[int, ...]):
    from lazyexport.demo import smooth_volume

    return smooth_volume(shape, tuple(min(c, s) for c, s in zip(layout, shape)))


# --- measuring in the child -------------------------------------------------------------------


def vm(field: str) -> int:
    """A Vm* line of /proc/self/status, in bytes (VmHWM: this process's own peak; not ru_maxrss,
    which Linux carries across exec from the parent)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


class Sampler(threading.Thread):
    """Samples this process's resident memory every few ms: the peak of the whole process
    (lazyexport resets VmHWM when its writes start). Above ``cap`` it reports and ends the
    process, so that an export blowing the budget cannot take the machine down."""

    def __init__(self, cap: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.cap, self.interval, self.peak = cap, interval, 0
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def run(self) -> None:
        while True:
            rss = self.rss()
            self.peak = max(self.peak, rss)
            if self.cap and rss > self.cap:
                print(
                    json.dumps(
                        {
                            "error": f"watchdog: resident memory {rss / MiB:.0f} MiB "
                            f"exceeded the cap {self.cap / MiB:.0f} MiB; the child was stopped",
                            "sampled_peak": rss,
                            "hwm_end": vm("VmHWM"),
                        }
                    ),
                    flush=True,
                )
                os._exit(3)
            time.sleep(self.interval)


def settings_for(fmt: str, directory: str, renormalize: bool = True, smooth: str | None = None):
    import lazyexport as le

    extra: dict = dict(renormalize=((0.0, 1.0), (0, 255)), dtype="uint8") if renormalize else {}
    if smooth:
        extra["smooth"] = smooth
    return le.ExportSettings(format=fmt, output=str(Path(directory) / OUTPUT_NAMES[fmt]), **extra)


def plan_fields(summary: dict) -> dict:
    keep = (
        "block",
        "tasks",
        "tasks_in_flight",
        "staged",
        "projected_peak",
        "projected",
        "read_amplification",
        "chunks",
        "shards",
        "notes",
        "memory_limit",
        "bytes",
        "shape",
    )
    return {k: summary.get(k) for k in keep}


def child_layout(spec: dict) -> dict:
    import dask  # noqa: F401  (imports outside the timings)
    import numpy as np

    import lazyexport as le
    import lazyexport.plan  # noqa: F401
    import lazyexport.run  # noqa: F401
    from lazyexport.errors import MemoryLimitError

    shape = source_shape(spec["gib"], spec["plane"])
    layout = tuple(spec["layout"])
    data = generated(shape, layout)
    src = le.open_source(data, axes="zyx")
    settings = settings_for(spec["format"], spec["dir"], smooth=spec.get("smooth"))
    limit = spec["memory_limit"]
    report: dict = {"shape": list(shape), "chunks": [c[0] for c in data.chunks]}
    start = time.perf_counter()
    try:
        plan = le.plan(src, settings, memory_limit=limit)
    except MemoryLimitError as exc:
        report.update(
            refused=str(exc),
            error_type=type(exc).__name__,
            plan_seconds=time.perf_counter() - start,
            hwm_end=vm("VmHWM"),
        )
        return report
    report["plan_seconds"] = time.perf_counter() - start
    report["plan"] = plan_fields(plan.summary())
    report["hwm_before_export"] = vm("VmHWM")  # imports, source, planning
    if spec.get("scheduler") == "local-cluster":
        return child_cluster(src, settings, limit, report)
    start = time.perf_counter()
    result = le.export(src, settings, memory_limit=limit, overwrite=True)
    report["seconds"] = time.perf_counter() - start
    report["peak_memory"] = result.peak_memory  # VmHWM during the writes (lazyexport's measure)
    report["projected_peak"] = result.projected_peak
    report["hwm_end"] = vm("VmHWM")
    report["sampled_peak_export"] = (
        max(SAMPLER.peak, SAMPLER.rss()) if SAMPLER else 0
    )  # before the read-back of --verify
    report["bytes_written"] = sum(
        f.stat().st_size
        for p in result.paths
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file()
    )
    if spec.get("verify"):
        out = le.open_exported(result)
        for z in sorted({0, shape[0] // 2, shape[0] - 1}):
            got = np.asarray(out.isel(z=z).values)
            want = expected_plane(z, spec["plane"])
            diff = int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max())
            if got.shape != want.shape or diff > 1:
                raise AssertionError(
                    f"plane z={z}: shape {got.shape} vs {want.shape}, max difference {diff}"
                )
        report["verified"] = True
    return report


def _worker_hwm() -> int:
    return vm("VmHWM")


def child_cluster(src, settings, limit: int, report: dict) -> dict:
    """The same export on ``--scheduler local-cluster``: each worker's peak (VmHWM) against its
    share of the budget, and whether any paused."""
    from lazyexport import run

    with run.scheduler_session("local-cluster", limit) as client:
        plan = run.plan_on(client, src, settings, memory_limit=limit)
        report["plan"] = plan_fields(plan.summary())
        start = time.perf_counter()
        run.execute(plan, scheduler=client, overwrite=True)
        report["seconds"] = time.perf_counter() - start
        peaks = client.run(_worker_hwm)
        logs = client.get_worker_logs()
    report["worker_peaks"] = sorted(peaks.values())
    report["peak_memory"] = max(peaks.values())
    report["projected_peak"] = plan.costs.projected_peak
    report["share"] = limit // len(peaks)
    report["paused"] = any("Pausing worker" in line for lines in logs.values() for _, line in lines)
    report["hwm_end"] = vm("VmHWM")
    return report


def child_make_empty(spec: dict) -> dict:
    import zarr

    path = Path(spec["path"])
    if not (path / "zarr.json").exists():
        zarr.create_array(
            str(path),
            shape=tuple(spec["shape"]),
            chunks=tuple(spec["chunks"]),
            dtype="float32",
            fill_value=0,
            dimension_names=["z", "y", "x"],
            overwrite=True,
        )
    arr = zarr.open_array(str(path), mode="r")
    files = sum(1 for _ in path.rglob("*") if _.is_file())
    return {"shape": list(arr.shape), "nbytes": arr.nbytes, "files": files}


def child_scale(spec: dict) -> dict:
    import dask  # noqa: F401
    import zarr  # noqa: F401

    import lazyexport as le
    import lazyexport.plan  # noqa: F401
    import lazyexport.run  # noqa: F401
    from lazyexport.errors import ExportCancelled

    settings = settings_for("zarr", spec["dir"])
    limit = spec["memory_limit"]
    report: dict = {}
    plan_start = time.perf_counter()
    if spec["plan_first"]:
        plan = le.plan(spec["path"], settings, memory_limit=limit)
        report["plan_seconds"] = time.perf_counter() - plan_start
        report["plan"] = plan_fields(plan.summary())
        report["hwm_before_export"] = vm("VmHWM")
    cancel = threading.Event()
    seen: dict = {}

    def progress(p) -> None:
        if "first" not in seen:
            seen["first"] = time.perf_counter()
            seen["blocks"] = (p.blocks_done, p.blocks_total, p.bytes_done)
            cancel.set()
            seen["cancel_set"] = time.perf_counter()
        seen["events"] = seen.get("events", 0) + 1

    export_start = time.perf_counter()
    try:
        le.export(
            spec["path"],
            settings,
            memory_limit=limit,
            overwrite=True,
            progress=progress,
            cancel=cancel,
        )
        report["outcome"] = "finished (not cancelled)"
    except ExportCancelled as exc:
        report["outcome"] = f"ExportCancelled: {exc}"
    returned = time.perf_counter()
    report["hwm_end"] = vm("VmHWM")
    if "first" in seen:
        report["first_block_seconds"] = seen["first"] - export_start
        report["first_block_from_plan_start"] = seen["first"] - plan_start
        report["cancel_seconds"] = returned - seen["cancel_set"]
        report["first_event"] = seen["blocks"]
        report["events"] = seen["events"]
    report["export_seconds"] = returned - export_start
    left = [str(p.relative_to(spec["dir"])) for p in Path(spec["dir"]).rglob("*")]
    report["left_in_output_dir"] = left[:20] + (
        [f"... {len(left) - 20} more"] if len(left) > 20 else []
    )
    return report


SAMPLER: Sampler | None = None


def child_main(spec_text: str) -> None:
    global SAMPLER
    spec = json.loads(spec_text)
    SAMPLER = sampler = Sampler(spec.get("rss_cap", 0))
    sampler.start()
    try:
        report = {"layout": child_layout, "make-empty": child_make_empty, "scale": child_scale}[
            spec["kind"]
        ](spec)
    except BaseException as exc:  # recorded as it is: the parent prints it in the table
        report = {
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
            "error_type": type(exc).__name__,
            "traceback": traceback.format_exc()[-4000:],
        }
        with open("/proc/self/status") as status:
            report["hwm_end"] = next(
                int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")
            )
    report["sampled_peak"] = max(sampler.peak, sampler.rss())
    print(json.dumps(report), flush=True)


# --- the parent -------------------------------------------------------------------------------


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"child timed out after {timeout:g} s"}
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    if done.returncode and "error" not in report:
        report["error"] = (
            f"child exited with status {done.returncode}: {done.stderr.strip()[-1500:]}"
        )
    report["returncode"] = done.returncode
    if done.stderr.strip():
        report["stderr_tail"] = done.stderr.strip()[-1500:]
    return report


def parse_bytes(text: str) -> int:
    from dask.utils import parse_bytes as parse

    return int(parse(text))


def mib(n) -> str:
    return f"{n / MiB:.0f}" if n else "-"


def layout_text(layout: tuple[int, ...], shape: tuple[int, ...]) -> str:
    given = "x".join(map(str, layout))
    used = tuple(min(c, s) for c, s in zip(layout, shape))
    return given if used == tuple(layout) else f"{given} (={'x'.join(map(str, used))})"


class Table:
    def __init__(self, columns: list[tuple[str, int]], files: list, echo: bool = True):
        self.columns, self.files, self.echo = columns, files, echo
        self.emit(
            " | ".join(
                f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, w) in enumerate(columns)
            )
        )
        self.emit("-" * (sum(w for _, w in columns) + 3 * (len(columns) - 1)))

    def emit(self, line: str) -> None:
        if self.echo:
            print(line, flush=True)
        for f in self.files:
            f.write(line + "\n")
            f.flush()

    def row(self, values: list) -> None:
        cells = []
        for i, ((_, w), v) in enumerate(zip(self.columns, values)):
            cells.append(f"{v!s:<{w}}" if i < 2 else f"{v!s:>{w}}")
        self.emit(" | ".join(cells).rstrip())


def run_tag(args, cluster: bool) -> str:
    """The memory part's file names: size, limit, scheduler and smoothing."""
    tag = f"{args.gib:g}GiB-{args.memory_limit}" + ("-local-cluster" if cluster else "")
    return tag + (
        "-smooth-" + args.smooth.replace(",", "-").replace("=", "") if args.smooth else ""
    )


def memory_part(args) -> None:
    limit = parse_bytes(args.memory_limit)
    shape = source_shape(args.gib, args.plane)
    layouts = [tuple(int(n) for n in text.split("x")) for text in args.layouts.split(",")]
    formats = args.formats.split(",")
    cluster = args.scheduler == "local-cluster"
    tag = run_tag(args, cluster)
    text_path, json_path = OUT / f"memory-{tag}.txt", OUT / f"memory-{tag}.jsonl"
    with open(text_path, "w") as text, open(json_path, "w") as jsonl:
        head = (
            f"memory by layout: generated float32 zyx {shape} "
            f"({math.prod(shape) * 4 / GiB:.2f} GiB), "
            f"{f'smooth {args.smooth}, ' * bool(args.smooth)}"
            f"renormalize [0,1]->[0,255] uint8, memory_limit={args.memory_limit} "
            f"({limit / MiB:.0f} MiB), "
            f"budget+256MiB = {(limit + SLACK) / MiB:.0f} MiB; {os.cpu_count()} cores; "
            f"{time.strftime('%Y-%m-%d %H:%M')}"
        )
        if cluster:
            head += (
                "\n--scheduler local-cluster: measured peak = the largest worker's VmHWM; "
                "projected = per worker; within = every worker under its share of the budget "
                "+ 256MiB and none paused"
            )
        print(head, flush=True)
        text.write(head + "\n")
        text.write(
            "measured peak = ExportResult.peak_memory (VmHWM during the writes); "
            "process peak = the largest of the child's VmHWM before the export, at its end "
            "and its sampled RSS (imports and planning included); "
            "within budget uses the larger of the two\n"
        )
        table = Table(
            [
                ("layout", 28),
                ("format", 13),
                ("tasks", 6),
                ("in flight", 9),
                ("staged", 6),
                ("projected peak MiB", 18),
                ("measured peak MiB", 17),
                ("measured/projected", 18),
                ("within budget+256MiB?", 21),
                ("amplification", 13),
                ("seconds", 8),
                ("process peak MiB", 16),
            ],
            [text],
        )
        problems = []
        for layout in layouts:
            for fmt in formats:
                work = Path(tempfile.mkdtemp(prefix=f"memory-{fmt}-", dir=OUT))
                spec = {
                    "kind": "layout",
                    "gib": args.gib,
                    "plane": args.plane,
                    "layout": list(layout),
                    "format": fmt,
                    "memory_limit": limit,
                    "dir": str(work),
                    "verify": args.verify,
                    "scheduler": args.scheduler,
                    "rss_cap": args.rss_cap and parse_bytes(args.rss_cap),
                    "smooth": args.smooth,
                }
                try:
                    r = run_child(spec, args.timeout)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                r.update(layout=list(layout), format=fmt)
                jsonl.write(json.dumps(r) + "\n")
                jsonl.flush()
                name = layout_text(layout, shape)
                if "refused" in r:
                    expected = "expected" if layout in REFUSED_LAYOUTS else "UNEXPECTED"
                    table.row(
                        [
                            name,
                            fmt,
                            *["-"] * 6,
                            f"refused ({expected})",
                            "-",
                            f"{r['plan_seconds']:.2f}",
                            mib(r.get("hwm_end")),
                        ]
                    )
                    problems.append(f"{name} {fmt}: {r['error_type']} ({expected}): {r['refused']}")
                    continue
                if "error" in r:
                    table.row(
                        [
                            name,
                            fmt,
                            *["-"] * 6,
                            "FAILED",
                            "-",
                            "-",
                            mib(max(r.get("sampled_peak", 0), r.get("hwm_end", 0))),
                        ]
                    )
                    problems.append(f"{name} {fmt}: FAILED: {r['error']}")
                    continue
                p = r["plan"]
                peak = r["peak_memory"]
                process = max(
                    r.get("hwm_before_export", 0),
                    r.get("hwm_end", 0),
                    r.get("sampled_peak_export", r.get("sampled_peak", 0)),
                )
                within = max(peak, process) <= limit + SLACK
                if cluster:
                    within = peak <= r["share"] + SLACK and not r["paused"]
                table.row(
                    [
                        name,
                        fmt,
                        p["tasks"],
                        p["tasks_in_flight"],
                        "yes" if p["staged"] else "no",
                        mib(r["projected_peak"]),
                        mib(peak),
                        f"{peak / r['projected_peak']:.2f}" if r["projected_peak"] else "-",
                        "yes" if within else "NO",
                        f"{p['read_amplification']:.2f}",
                        f"{r['seconds']:.1f}",
                        mib(process),
                    ]
                )
                if cluster:
                    problems.append(
                        f"{name} {fmt}: worker peaks "
                        f"{[round(w / MiB) for w in r['worker_peaks']]} MiB, "
                        f"share + 256MiB = {(r['share'] + SLACK) / MiB:.0f} MiB, "
                        f"paused: {r['paused']}"
                    )
                if not within and cluster:
                    problems.append(
                        f"{name} {fmt}: a worker's peak {peak / MiB:.0f} MiB "
                        f"is over its share + 256MiB = {(r['share'] + SLACK) / MiB:.0f} MiB "
                        f"(or a worker paused); projected "
                        f"{r['projected_peak'] / MiB:.0f} MiB on one worker"
                    )
                elif not within:
                    problems.append(
                        f"{name} {fmt}: peak {peak / MiB:.0f} MiB "
                        f"(process {process / MiB:.0f} MiB) "
                        f"exceeds budget+256MiB = {(limit + SLACK) / MiB:.0f} MiB; projected "
                        f"{r['projected_peak'] / MiB:.0f} MiB"
                    )
                if layout in REFUSED_LAYOUTS:
                    problems.append(
                        f"{name} {fmt}: expected a MemoryLimitError, but it planned and exported"
                    )
        table.emit("")
        for line in problems:
            table.emit(line)
    print(f"\nwritten: {text_path}, {json_path}")


def scale_part(args) -> None:
    limit = parse_bytes(args.memory_limit)
    tag = args.memory_limit
    text_path, json_path = OUT / f"scale-{tag}.txt", OUT / f"scale-{tag}.jsonl"
    with open(text_path, "w") as text, open(json_path, "w") as jsonl:
        head = (
            f"scale: empty Zarr v3 float32 source (fill value 0, no chunk written, chunks "
            f"{'x'.join(map(str, SCALE_CHUNKS))}) -> zarr, renormalize [0,1]->[0,255] uint8, "
            f"memory_limit={args.memory_limit}; cancelled at the first progress event; "
            f"{os.cpu_count()} cores; "
            f"{time.strftime('%Y-%m-%d %H:%M')}"
        )
        print(head, flush=True)
        text.write(head + "\n")
        text.write(
            "plan s: le.plan in the child; first block s: le.export start -> first progress event "
            "(its own planning included), in the same child after le.plan; "
            "cold: the same in a fresh child that only calls le.export; "
            "cancel s: cancel set -> le.export returned; "
            "peak RSS: the child's largest of VmHWM before/after the export and sampled RSS "
            "(cold child in parentheses)\n"
        )
        table = Table(
            [
                ("size", 6),
                ("shape", 20),
                ("plan s", 7),
                ("first block s", 13),
                ("cancel s", 8),
                ("peak RSS MiB", 14),
                ("first block s (cold)", 20),
                ("cancel s (cold)", 15),
                ("tasks", 9),
                ("in flight", 9),
                ("projected MiB", 13),
            ],
            [text],
        )
        peaks, problems = {}, []
        for size in args.scale_sizes.split(","):
            shape = SCALE_SHAPES[size]
            path = OUT / f"empty-{size}.zarr"
            made = run_child(
                {
                    "kind": "make-empty",
                    "path": str(path),
                    "shape": list(shape),
                    "chunks": list(SCALE_CHUNKS),
                },
                args.timeout,
            )
            if "error" in made:
                table.row([size, str(shape), "FAILED to create the source: " + made["error"]])
                continue
            runs = _scale_runs(size, shape, path, made, limit, args, jsonl, problems)
            a, b = runs["planned"], runs["cold"]
            peaks[size] = _scale_peak(a)
            p = a.get("plan", {})
            table.row(
                [
                    size,
                    "x".join(map(str, shape)),
                    _secs(a, "plan_seconds"),
                    _secs(a, "first_block_seconds"),
                    _secs(a, "cancel_seconds"),
                    f"{mib(_scale_peak(a))} ({mib(_scale_peak(b))})",
                    _secs(b, "first_block_seconds"),
                    _secs(b, "cancel_seconds"),
                    p.get("tasks", "-"),
                    p.get("tasks_in_flight", "-"),
                    mib(p.get("projected_peak", 0)),
                ]
            )
            problems += _slow_first_blocks(size, runs)
        table.emit("")
        if len(peaks) > 1:
            spread = (max(peaks.values()) - min(peaks.values())) / MiB
            table.emit(
                f"peak RSS spread across sizes: {spread:.0f} MiB (target: within 50 MiB) -> "
                f"{'ok' if spread <= 50 else 'NOT MET'}"
            )
        for line in problems:
            table.emit(line)
    print(f"\nwritten: {text_path}, {json_path}")


def _scale_runs(size, shape, path, made, limit, args, jsonl, problems: list[str]) -> dict:
    """The scale export of one size, planned first and cold, each in a fresh child: its records
    by mode (also written to ``jsonl``); what went wrong is added to ``problems``."""
    runs = {}
    for mode in ("planned", "cold"):
        work = Path(tempfile.mkdtemp(prefix=f"scale-{size}-", dir=OUT))
        spec = {
            "kind": "scale",
            "path": str(path),
            "dir": str(work),
            "memory_limit": limit,
            "plan_first": mode == "planned",
            "rss_cap": args.rss_cap and parse_bytes(args.rss_cap),
        }
        try:
            r = run_child(spec, args.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r.update(size=size, shape=list(shape), mode=mode, source=made)
        jsonl.write(json.dumps(r) + "\n")
        jsonl.flush()
        runs[mode] = r
        if "error" in r:
            problems.append(f"{size} ({mode}): FAILED: {r['error']}")
        if r.get("left_in_output_dir"):
            problems.append(f"{size} ({mode}): left after the cancel: {r['left_in_output_dir']}")
        if "first_block_seconds" not in r and "error" not in r:
            problems.append(f"{size} ({mode}): no progress event; outcome {r.get('outcome')}")
    return runs


def _scale_peak(r: dict) -> int:
    """A scale child's peak RSS: the largest of VmHWM before/after the export and sampled RSS."""
    return max(r.get("hwm_before_export", 0), r.get("hwm_end", 0), r.get("sampled_peak", 0))


def _secs(r: dict, key: str) -> str:
    return f"{r[key]:.2f}" if key in r else "-"


def _slow_first_blocks(size: str, runs: dict) -> list[str]:
    """The runs of ``size`` whose first block came after its target (1TiB: 5 s, 64TiB: 10 s)."""
    target = {"1TiB": 5.0, "64TiB": 10.0}.get(size)
    return [
        f"{size} ({mode}): first block after {_secs(r, 'first_block_seconds')} s, "
        f"target {target:g} s"
        for mode, r in runs.items()
        if target and r.get("first_block_seconds", math.inf) > target
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "memory", "scale"), default="all")
    parser.add_argument(
        "--gib", type=float, default=8.0, help="generated source size in GiB (default 8)"
    )
    parser.add_argument(
        "--plane", type=int, default=4096, help="plane edge (default 4096: 4096x4096 planes)"
    )
    parser.add_argument(
        "--memory-limit", default="512MiB", help="memory_limit of every export (default 512MiB)"
    )
    parser.add_argument("--formats", default=FORMATS, help=f"comma-separated (default {FORMATS})")
    parser.add_argument(
        "--layouts", default=LAYOUTS, help=f"source chunk layouts zyx (default {LAYOUTS})"
    )
    parser.add_argument(
        "--scale-sizes",
        default="1TiB,64TiB",
        help="empty sources for the scale part: " + ", ".join(SCALE_SHAPES),
    )
    parser.add_argument(
        "--scheduler",
        choices=("threads", "local-cluster"),
        default="threads",
        help="memory part: run each export on a 2-worker local cluster (--scheduler local-cluster)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="also compare three planes of each output"
    )
    parser.add_argument(
        "--rss-cap",
        default="6GiB",
        help="a child whose RSS passes this is stopped (a safety net; 0 for none; default 6GiB)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds per child (default 3600)"
    )
    parser.add_argument(
        "--smooth", help="memory part: smooth every export, e.g. z=4,y=4,x=4 (sigma in pixels)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child)
    if args.rss_cap in ("0", ""):
        args.rss_cap = None
    OUT.mkdir(exist_ok=True)
    if args.part in ("all", "memory"):
        memory_part(args)
    if args.part == "all":
        print()
    if args.part in ("all", "scale"):
        scale_part(args)


if __name__ == "__main__":
    main()
