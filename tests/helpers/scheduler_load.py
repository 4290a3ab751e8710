"""A long export on a dask cluster, watched from the scheduler: how many tasks it holds and its
resident memory, sampled while the export runs, and when the first block was written; what the
workers held. For the bounded-load and worker-memory tests and benchmarks/cluster_scale.py
(which imports it), all on a :class:`helpers.dask_processes.ProcessCluster` (a scheduler process
of its own, so its resident memory is the scheduler's alone). The functions run on the scheduler
or the workers are imported there by name: the cluster's processes have tests/ on their path."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import lazyexport as le
from lazyexport.errors import ExportCancelled

TIB = 2**40
# empty uint8 zyx sources of exactly the size named (fill value 0, no chunk written)
EMPTY_SHAPES = {
    "1TiB": (4096, 16384, 16384),
    "64TiB": (16384, 65536, 65536),
}
EMPTY_CHUNKS = (64, 256, 256)


def make_empty(path: Path, size: str) -> Path:
    """An empty Zarr v3 source of ``size`` (a key of EMPTY_SHAPES) at ``path``: metadata only."""
    if not (path / "zarr.json").exists():
        zarr.create_array(
            str(path),
            shape=EMPTY_SHAPES[size],
            chunks=EMPTY_CHUNKS,
            dtype="uint8",
            fill_value=0,
            dimension_names=["z", "y", "x"],
        )
    return path


def warm_up(client: Any, directory: Path) -> None:
    """A small export on ``client``'s cluster, so that what is measured next meets workers that
    have imported what block tasks run (and a scheduler that has run a job)."""
    settings = le.ExportSettings(format="zarr", output=str(directory / "warm.zarr"))
    le.export(np.zeros((8, 64, 64), "uint8"), settings, scheduler=client)


def _scheduler_state(dask_scheduler=None) -> tuple[int, int]:
    """(tasks the scheduler holds, its resident memory in bytes); run on the scheduler."""
    import psutil

    return len(dask_scheduler.tasks), psutil.Process().memory_info().rss


@dataclasses.dataclass
class Watched:
    """What was seen of one export: samples of (seconds, scheduler tasks, scheduler RSS), the
    seconds to the first written block (None: none came), blocks written, how it ended."""

    samples: list[tuple[float, int, int]]
    first_block: float | None
    blocks: int
    outcome: str

    @property
    def max_tasks(self) -> int:
        return max((t for _, t, _ in self.samples), default=0)

    @property
    def busy_samples(self) -> list[tuple[float, int, int]]:
        """The samples taken after the first block (the export running)."""
        first = self.first_block if self.first_block is not None else float("inf")
        return [s for s in self.samples if s[0] >= first]

    @property
    def max_rss(self) -> int:
        return max((r for _, _, r in self.samples), default=0)


def watch_export(
    client: Any,
    source: Path,
    output: Path,
    seconds: float,
    memory_limit: str = "512MiB",
    every: float = 0.25,
    first_timeout: float = 60.0,
) -> Watched:
    """Export ``source`` to Zarr at ``output`` on ``client``'s cluster within ``memory_limit``
    for ``seconds`` after its first block (or ``first_timeout`` seconds without one), then cancel
    it; sample the scheduler every ``every`` seconds meanwhile."""
    cancel = threading.Event()
    seen: dict[str, Any] = {"blocks": 0}
    start = time.perf_counter()

    def progress(event) -> None:
        seen.setdefault("first", time.perf_counter() - start)
        seen["blocks"] = event.blocks_done

    def export() -> None:
        try:
            le.export(
                str(source),
                le.ExportSettings(format="zarr", output=str(output)),
                scheduler=client,
                memory_limit=memory_limit,
                progress=progress,
                cancel=cancel,
            )
            seen["outcome"] = "finished"
        except ExportCancelled:
            seen["outcome"] = "cancelled"
        except BaseException as exc:  # noqa: BLE001 -- reported to the caller
            seen["outcome"] = f"failed: {exc!r}"

    runner = threading.Thread(target=export, daemon=True)
    runner.start()
    samples = []
    while runner.is_alive():
        first = seen.get("first")
        if time.perf_counter() - start > (first_timeout if first is None else first + seconds):
            break
        tasks, rss = client.run_on_scheduler(_scheduler_state)
        samples.append((time.perf_counter() - start, tasks, rss))
        time.sleep(every)
    cancel.set()
    runner.join(120)
    return Watched(samples, seen.get("first"), seen["blocks"], seen.get("outcome", "running"))


def worker_state(dask_worker=None) -> dict[str, Any]:
    """A worker's peak resident memory since :func:`lazyexport.cost.reset_peak`, its status, and
    how many times it spilled a result to disk; run on each worker (``client.run``)."""
    from lazyexport import cost

    metrics = getattr(dask_worker.data, "cumulative_metrics", {})
    spilled = sum(v for (label, unit), v in metrics.items() if label == "disk-write")
    return {"peak": cost.peak_rss(), "status": dask_worker.status.name, "spilled": int(spilled)}


def paused_workers(client: Any) -> list[str]:
    """The workers whose logs say they paused (memory over distributed's pause threshold)."""
    logs = client.get_worker_logs()
    return [w for w, lines in logs.items() if any("Pausing worker" in x for _, x in lines)]
