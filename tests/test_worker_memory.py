"""Per-worker memory on a cluster started as users start one
(:class:`helpers.dask_processes.ProcessCluster`: a ``dask scheduler`` and three ``dask worker``
processes): on the deep-chunk layout of the memory tests (64 x 256 x 256 float32 source
chunks), each worker's peak resident memory, read from the worker itself (VmHWM since the export
started), stays within its even share of ``--memory-limit`` + WORKER_ALLOWANCE (its interpreter
and libraries), and no worker pauses or spills. The full-size figure is ``make bench-cluster``
(benchmarks/cluster_scale.py)."""

from __future__ import annotations

import numpy as np
import pytest

import lazyexport as le
from helpers.dask_processes import ProcessCluster
from helpers.scheduler_load import paused_workers, worker_state
from lazyexport import cost, run
from lazyexport.demo import smooth_volume
from lazyexport.plan import WORKER_ALLOWANCE

WORKERS = 3
LIMIT = 192 * 2**20  # a share of 64 MiB per worker
DEEP = (64, 256, 256)


@pytest.mark.slow
def test_each_worker_stays_within_its_share_and_none_pauses_or_spills(tmp_path):
    source = le.open_source(smooth_volume((128, 512, 1024), DEEP), axes="zyx")  # 256 MiB
    settings = le.ExportSettings(
        format="zarr",
        output=str(tmp_path / "o.zarr"),
        renormalize=((0, 1), (0, 255)),
        dtype="uint8",
    )
    with (
        ProcessCluster(tmp_path / "cluster", workers=WORKERS, memory_limit="1GiB") as cluster,
        cluster.client() as client,
    ):
        plan = run.plan_on(client, source, settings, memory_limit=LIMIT)
        assert plan.cluster is not None and plan.cluster.count == WORKERS
        client.run(cost.reset_peak)
        result = run.execute(plan, scheduler=client)
        states = client.run(worker_state)
        paused = paused_workers(client)
    share = LIMIT // WORKERS
    peaks = {w: s["peak"] for w, s in states.items()}
    assert len(peaks) == WORKERS and all(peaks.values())
    assert all(p <= share + WORKER_ALLOWANCE for p in peaks.values()), (peaks, share)
    assert not paused
    assert all(s["spilled"] == 0 and s["status"] == "running" for s in states.values()), states
    back = le.open_exported(result)
    assert back.shape == (128, 512, 1024) and back.dtype == np.uint8
    assert int(np.asarray(back[::32, ::64, ::64]).max()) > 0
