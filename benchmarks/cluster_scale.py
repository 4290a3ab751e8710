"""The load an export puts on a dask cluster started as users start one (a ``dask scheduler``
process and three ``dask worker`` processes, one thread each, each with its own
``--local-directory`` and ``TMPDIR``: the tests' ``helpers.dask_processes.ProcessCluster``),
the client connected by address.

Two parts:

1. **Scheduler load.** An empty Zarr v3 uint8 source (fill value 0, no chunk written) of 1 TiB
   and of 64 TiB exported to Zarr (``--memory-limit``) for ``--seconds`` after its first block,
   then cancelled. Sampled on the scheduler (``client.run_on_scheduler``) every 0.25 s: the tasks
   it holds and its resident memory; and the seconds from ``le.export`` to the first written
   block. A small export runs first, so that both sizes meet warm workers. Acceptance: tasks and
   scheduler RSS differ by < 10 % between the sizes; the first block within 5 s for both.
2. **Per-worker memory.** A generated float32 volume (``--gib``) in the deep-chunk layout of the
   memory tests (64 x 256 x 256 chunks), renormalized to uint8 and exported to Zarr with
   ``--memory-limit``: each worker's peak RSS (VmHWM since the export began, read on the worker)
   against its share of the limit + 256 MiB, and whether any worker paused or spilled.

    python benchmarks/cluster_scale.py [--part all|load|memory] [--seconds 60] [--gib 2]
                                       [--memory-limit 768MiB]

The tables are printed and written to bench-out/ (git-ignored): cluster-scale.txt/.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the cluster and samplers the tests use (tests/helpers)

OUT = ROOT / "bench-out"
MiB = 2**20
WORKERS = 3
ALLOWANCE = 256 * MiB  # what a worker may hold beyond its share: its interpreter and libraries
DEEP = (64, 256, 256)


def load_part(client, work: Path, args, emit) -> list[dict]:
    """Part 1: per size, the scheduler's tasks and RSS while the export runs."""
    from helpers.scheduler_load import EMPTY_SHAPES, make_empty, warm_up, watch_export

    warm_up(client, work)
    emit(
        f"scheduler load: empty uint8 Zarr sources -> zarr on {WORKERS} workers x 1 thread, "
        f"memory_limit={args.memory_limit}, {args.seconds:g} s after the first block"
    )
    emit(
        f"{'size':>6}  {'first block s':>13}  {'blocks':>6}  {'tasks max':>9}  {'tasks mean':>10}"
        f"  {'sched RSS max MiB':>17}  {'sched RSS mean MiB':>18}"
    )
    rows = []
    for size in EMPTY_SHAPES:
        source = make_empty(work / f"empty-{size}.zarr", size)
        w = watch_export(client, source, work / f"out-{size}.zarr", args.seconds, args.memory_limit)
        busy = w.busy_samples or w.samples
        row = {
            "part": "load",
            "size": size,
            "first_block_seconds": w.first_block,
            "blocks": w.blocks,
            "outcome": w.outcome,
            "tasks_max": w.max_tasks,
            "tasks_mean": sum(t for _, t, _ in busy) / len(busy),
            "scheduler_rss_max": max(r for _, _, r in busy),
            "scheduler_rss_mean": sum(r for _, _, r in busy) / len(busy),
            "samples": len(w.samples),
        }
        rows.append(row)
        first = f"{w.first_block:.2f}" if w.first_block is not None else "-"
        emit(
            f"{size:>6}  {first:>13}  {w.blocks:>6}  {row['tasks_max']:>9}  "
            f"{row['tasks_mean']:>10.2f}  {row['scheduler_rss_max'] / MiB:>17.1f}  "
            f"{row['scheduler_rss_mean'] / MiB:>18.1f}"
        )
    _verdict(rows, emit)
    return rows


def _verdict(rows: list[dict], emit) -> None:
    small, big = rows[0], rows[-1]
    for key in ("tasks_max", "tasks_mean", "scheduler_rss_max", "scheduler_rss_mean"):
        diff = abs(big[key] - small[key]) / max(small[key], 1e-9)
        emit(
            f"  {key}: 64TiB / 1TiB = {big[key] / max(small[key], 1e-9):.3f} "
            f"({'ok' if diff < 0.10 else 'NOT MET'}: target within 10 %)"
        )
    for r in rows:
        first = r["first_block_seconds"]
        ok = first is not None and first <= 5.0
        emit(
            f"  first block {r['size']}: {first if first is None else round(first, 2)} s "
            f"({'ok' if ok else 'NOT MET'}: target 5 s)"
        )


def memory_part(client, work: Path, args, emit) -> list[dict]:
    """Part 2: each worker's peak on the deep-chunk layout, against its share."""
    import lazyexport as le
    from helpers.scheduler_load import paused_workers, worker_state
    from lazyexport import cost, run
    from lazyexport.demo import smooth_volume
    from lazyexport.plan import parse_memory_limit

    limit = parse_memory_limit(args.memory_limit)
    planes = max(int(args.gib * 2**30 / (2048 * 2048 * 4)), DEEP[0])
    source = le.open_source(smooth_volume((planes, 2048, 2048), DEEP), axes="zyx")
    settings = le.ExportSettings(
        format="zarr", output=str(work / "deep.zarr"), renormalize=((0, 1), (0, 255)), dtype="uint8"
    )
    plan = run.plan_on(client, source, settings, memory_limit=limit)
    client.run(cost.reset_peak)
    start = time.perf_counter()
    run.execute(plan, scheduler=client)
    seconds = time.perf_counter() - start
    states, paused = client.run(worker_state), paused_workers(client)
    share = limit // WORKERS
    emit(
        f"\nper-worker memory: float32 ({planes}, 2048, 2048) in {DEEP} chunks -> uint8 zarr, "
        f"memory_limit={args.memory_limit} (share {share / MiB:.0f} MiB + {ALLOWANCE // MiB} MiB "
        f"= {(share + ALLOWANCE) / MiB:.0f} MiB per worker); {plan.nblocks} tasks, "
        f"{plan.in_flight} at a time; {seconds:.1f} s"
    )
    rows = []
    for address, s in sorted(states.items()):
        ok = s["peak"] <= share + ALLOWANCE and not s["spilled"] and address not in paused
        emit(
            f"  {address}: peak {s['peak'] / MiB:.0f} MiB, status {s['status']}, spilled "
            f"{s['spilled']}, paused {address in paused} -> {'ok' if ok else 'NOT MET'}"
        )
        rows.append({"part": "memory", "worker": address, **s, "share": share, "ok": ok})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "load", "memory"), default="all")
    parser.add_argument("--seconds", type=float, default=60.0, help="per size (default 60)")
    parser.add_argument("--gib", type=float, default=2.0, help="memory part's volume (default 2)")
    parser.add_argument("--memory-limit", default="768MiB", help="of every export (768MiB)")
    parser.add_argument("--worker-memory", default="2GiB", help="each worker's limit (2GiB)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cluster-scale-", dir=OUT))
    from helpers.dask_processes import ProcessCluster

    cluster = ProcessCluster(work, workers=WORKERS, memory_limit=args.worker_memory)
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        with cluster, cluster.client(timeout=60) as client:
            rows = []
            if args.part in ("all", "load"):
                rows += load_part(client, work, args, emit)
            if args.part in ("all", "memory"):
                rows += memory_part(client, work, args, emit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (OUT / "cluster-scale.txt").write_text("\n".join(lines) + "\n")
    with open(OUT / "cluster-scale.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"\nwritten: {OUT / 'cluster-scale.txt'}, {OUT / 'cluster-scale.jsonl'}")


if __name__ == "__main__":
    main()
