"""Exports on dask.distributed: a real LocalCluster of two worker processes on loopback, a
cluster started separately with the ``dask`` command, and the local process-based schedulers.

Every format is exported through the cluster and compared with the threaded export; a worker
is killed in the middle of an export; progress and cancellation work; bad or unreachable
schedulers fail with one clear line.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import lazyexport as le
from helpers import cancel_a_huge_export, make_data
from lazyexport import cli, run
from lazyexport.errors import ExportCancelled, SchedulerError
from lazyexport.execution import executors
from lazyexport.formats import formats
from lazyexport.formats.zarr import ZarrTarget, ZarrWriter
from lazyexport.plan import WORKER_ALLOWANCE, build_plan

pytestmark = pytest.mark.usefixtures("small_blocks")

SLOW_SECONDS = 0.4
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def volume(shape=(40, 256, 256), dtype="uint16") -> np.ndarray:
    return make_data(dtype, shape, seed=5)


def slow(block: np.ndarray) -> np.ndarray:
    """A source transform slow enough to interrupt an export (runs on the workers, which
    import this module by name: they inherit the test process's sys.path)."""
    time.sleep(SLOW_SECONDS)
    return block


def slow_source(data: np.ndarray, chunks):
    return le.open_source(
        da.from_array(data, chunks=chunks).map_blocks(slow, dtype=data.dtype), axes="zyx"
    )


def settings_for(fmt: str, out: Path, **extra) -> le.ExportSettings:
    name = "out_{slice_index}" if fmt.endswith("sequence") else "out"
    return le.ExportSettings(format=fmt, output=str(out / name), **extra)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- every format on the cluster equals the threaded export -------------------------------------

FORMAT_OPTIONS: dict[str, dict[str, Any]] = {
    "ome-zarr": {"levels": 2},
    "png-sequence": {"dtype": "uint8"},
}


@pytest.mark.parametrize("fmt", formats())
def test_every_format_on_a_local_cluster_equals_the_threaded_export(client, tmp_path, fmt):
    data = volume()
    source = le.open_source(da.from_array(data, chunks=(4, 256, 256)), axes="zyx")
    options = dict(FORMAT_OPTIONS.get(fmt, {}), roi={"y": (8, 200)})
    threaded = le.export(
        source, settings_for(fmt, tmp_path / "threads", **options), memory_limit="16MiB"
    )
    events: list[run.Progress] = []
    on_cluster = le.export(
        source,
        settings_for(fmt, tmp_path / "cluster", **options),
        memory_limit="16MiB",
        scheduler=client,
        progress=events.append,
    )
    expected = np.asarray(le.open_exported(threaded))
    got = np.asarray(le.open_exported(on_cluster))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert expected.shape == (40, 192, 256)
    # progress arrives block by block, ending complete (blocks as planned for the cluster's workers)
    plan = run.plan_on(
        client, source, settings_for(fmt, tmp_path / "x", **options), memory_limit="16MiB"
    )
    # (then, for a pyramid, the events of its levels built at the commit and one after it)
    blocks = [e.blocks_done for e in events if not e.finishing_done and not e.committed]
    assert blocks == list(range(1, plan.nblocks + 1))
    assert events[-1].bytes_done == events[-1].bytes_total == plan.nbytes
    assert events[-1].fraction == 1.0 and all(e.fraction < 1 for e in events[:-1])
    assert events[-1].committed == (fmt == "ome-zarr")
    # nothing temporary is left beside the output
    assert not [n for n in files_in(tmp_path / "cluster") if "lazyexport" in n]
    if fmt == "ome-zarr":  # the pyramid level built in commit() on the client is the same too
        import zarr

        from helpers.zarr_nodes import read_all

        levels = [
            read_all(zarr.open_array(str(r.output), path="1", mode="r"))
            for r in (threaded, on_cluster)
        ]
        assert levels[0].shape == (20, 96, 128)
        np.testing.assert_array_equal(levels[1], levels[0])


def test_hdf5_on_the_cluster_keeps_metadata_and_compression(client, tmp_path):
    import h5py

    data = volume()
    source = le.open_source(data, axes="zyx")
    result = le.export(
        source,
        le.ExportSettings(format="hdf5", output=str(tmp_path / "out.h5"), compression="gzip"),
        memory_limit="16MiB",
        scheduler=client,
    )
    with h5py.File(result.output, "r") as f:
        dset = f["exported_data"]
        assert dset.compression == "gzip"
        assert '"key": "z"' in dset.attrs["axistags"]
        np.testing.assert_array_equal(dset[...], data)


def test_relative_paths_work_on_workers_in_another_directory(client, tmp_path, monkeypatch):
    data = volume((8, 32, 32))
    monkeypatch.chdir(tmp_path)  # the workers stay where they were started
    assert set(client.run(os.getcwd).values()) != {str(tmp_path)}
    np.save("src.npy", data)
    first = le.export(
        le.open_source("src.npy", axes="zyx"),
        le.ExportSettings(format="zarr", output="out/a.zarr"),
        scheduler=client,
    )
    second = le.export(
        le.open_source("out/a.zarr"),
        le.ExportSettings(format="npy", output="out/b.npy"),
        scheduler=client,
    )
    assert first.output == tmp_path / "out" / "a.zarr"
    assert second.output == tmp_path / "out" / "b.npy"
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "b.npy"), data)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.zarr", "b.npy"]


# -- a worker killed in the middle of an export ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["hdf5", "tiff-sequence"])
def test_an_export_survives_a_killed_worker(client, tmp_path, fmt):
    data = volume((64, 256, 256))
    source = slow_source(data, (8, 256, 256))
    plan = build_plan(source, settings_for(fmt, tmp_path), memory_limit="16MiB")
    assert plan.nblocks >= 6
    pids = client.run(os.getpid)
    killed: list[tuple[int, int]] = []

    def kill_one_worker(event: run.Progress) -> None:
        if not killed:
            victim = next(iter(pids.values()))
            os.kill(victim, signal.SIGKILL)
            killed.append((victim, event.blocks_done))

    result = le.export(
        source,
        settings_for(fmt, tmp_path),
        memory_limit="16MiB",
        scheduler=client,
        progress=kill_one_worker,
    )
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data)
    ((victim, done_then),) = killed
    assert done_then < plan.nblocks  # it died while blocks were still to write
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it ...
    assert victim not in client.run(os.getpid).values()  # ... as a new process: the old one is dead


@pytest.fixture
def sent(client, monkeypatch) -> list[Any]:
    """The futures of what the export sends to the workers (``client.scatter``: its job)."""
    found: list[Any] = []
    scatter = client.scatter

    def recorded(*args, **kwargs):
        found.append(scatter(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr(client, "scatter", recorded)
    return found


def test_an_export_survives_the_loss_of_its_job_on_the_cluster(client, tmp_path, sent):
    """The job is sent to the workers once; if the workers holding it die (one that joined
    after the broadcast fetches it from them), the scheduler forgets the tasks that need it.
    The export sends the job again and runs those blocks again."""
    data = volume((64, 256, 256))
    source = slow_source(data, (8, 256, 256))
    lost: list[int] = []

    def lose_the_job(event: run.Progress) -> None:
        if not lost:
            client.cancel([sent[0]], force=True)  # as the scheduler does when its holders die
            lost.append(event.blocks_done)

    result = le.export(
        source,
        settings_for("zarr", tmp_path),
        memory_limit="16MiB",
        scheduler=client,
        progress=lose_the_job,
    )
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data)
    assert lost == [1]
    assert len(sent) == 2  # sent again once
    assert sent[0].status == "cancelled"


def test_a_cluster_that_keeps_losing_the_job_fails_the_export(client, tmp_path, sent):
    data = volume((64, 256, 256))
    source = slow_source(data, (8, 256, 256))
    plan = build_plan(source, settings_for("zarr", tmp_path, chunks={"z": 8}), memory_limit="16MiB")
    assert plan.nblocks > executors.MAX_JOB_SENDS
    with pytest.raises(SchedulerError, match="the dask cluster lost the export's job 5 times"):
        le.export(
            source,
            settings_for("zarr", tmp_path, chunks={"z": 8}),
            memory_limit="16MiB",
            scheduler=client,
            progress=lambda event: client.cancel([sent[-1]], force=True),
        )
    assert len(sent) == executors.MAX_JOB_SENDS
    assert files_in(tmp_path) == []  # nothing half-written is left


# -- cancellation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zarr", "hdf5", "tiff-sequence", "n5"])
def test_cancel_on_the_cluster_removes_the_temporary_output(client, tmp_path, fmt):
    """Also issue 13, item 9: a task still reading its block when the export is cancelled
    must not write (and re-create temporary files) after the clean-up."""
    data = volume((64, 256, 256))
    source = slow_source(data, (8, 256, 256))
    out = tmp_path / "out"
    cancel = threading.Event()
    events: list[run.Progress] = []

    def cancel_after_first(event: run.Progress) -> None:
        events.append(event)
        cancel.set()

    with pytest.raises(ExportCancelled):
        le.export(
            source,
            settings_for(fmt, out, chunks={"z": 8}),
            memory_limit="16MiB",
            scheduler=client,
            progress=cancel_after_first,
            cancel=cancel,
        )
    assert len(events) >= 1
    plan = build_plan(source, settings_for(fmt, out, chunks={"z": 8}), memory_limit="16MiB")
    assert len(events) < plan.nblocks
    assert files_in(out) == []
    time.sleep(3 * SLOW_SECONDS)  # a write still running would re-create files by now
    assert files_in(out) == []
    # the cluster is free for the next export
    assert client.submit(sum, [1, 2]).result(timeout=30) == 3


class SlowWriteZarrTarget(ZarrTarget):
    """Opens its store, then writes its blocks only after a while: a write still running when
    an export is cancelled."""

    def write(self, block, location):
        self.array()
        time.sleep(SLOW_SECONDS)
        return super().write(block, location)


class SlowWriteZarr(ZarrWriter):
    def open(self, spec, token):
        target = super().open(spec, token)
        assert isinstance(target, ZarrTarget)
        return SlowWriteZarrTarget(target.temps, target.token, target.internal)


def test_cancel_waits_for_running_writes_before_removing_the_output(client, tmp_path):
    """Cancelled futures do not stop tasks that already run: the export must wait for those
    writes to end before it removes the temporary store, or they would re-create it."""
    out = tmp_path / "out"
    plan = build_plan(
        le.open_source(volume((64, 256, 256)), axes="zyx"),
        settings_for("zarr", out, chunks={"z": 8}),
        memory_limit="16MiB",
    )
    plan = dataclasses.replace(plan, writer=SlowWriteZarr())
    assert plan.nblocks >= 6
    cancel = threading.Event()
    with pytest.raises(ExportCancelled):
        run.execute(plan, scheduler=client, cancel=cancel, progress=lambda event: cancel.set())
    assert files_in(out) == []
    time.sleep(3 * SLOW_SECONDS)
    assert files_in(out) == []


# -- the local process-based schedulers ------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler,fmt", [("processes", "hdf5"), ("processes", "zarr"), ("local-cluster", "hdf5")]
)
def test_local_process_schedulers(tmp_path, scheduler, fmt):
    data = volume()
    events: list[run.Progress] = []
    result = le.export(
        le.open_source(data, axes="zyx"),
        settings_for(fmt, tmp_path),
        memory_limit="16MiB",
        scheduler=scheduler,
        progress=events.append,
    )
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data)
    assert events and events[-1].blocks_done == events[-1].blocks_total > 1


# -- bad and unreachable schedulers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheduler", ["bogus", "tcp:/127.0.0.1", 42])
def test_an_unknown_scheduler_is_a_clear_error(tmp_path, scheduler):
    with pytest.raises(
        SchedulerError, match="unknown scheduler .*choose threads, synchronous, processes"
    ):
        le.export(np.zeros((4, 4)), settings_for("npy", tmp_path), scheduler=scheduler)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("command", ["export", "batch"])
def test_cli_unknown_scheduler_exits_2_with_one_line(tmp_path, capsys, command):
    np.save(tmp_path / "src.npy", np.zeros((4, 8, 8), np.uint8))
    if command == "export":
        argv = [
            "export",
            str(tmp_path / "src.npy"),
            "--format",
            "zarr",
            "--output",
            str(tmp_path / "o"),
        ]
    else:
        project = tmp_path / "project.toml"
        project.write_text(
            f'[settings]\nformat = "zarr"\n[[datasets]]\nsource = "{tmp_path / "src.npy"}"\n'
        )
        argv = ["batch", str(project), "export-all"]
    code = cli.main([*argv, "--scheduler", "bogus", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: unknown scheduler 'bogus'")
    assert not [p for p in tmp_path.iterdir() if "zarr" in p.name]


def test_cli_unreachable_scheduler_fails_in_bounded_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "CONNECT_TIMEOUT", 2.0)
    np.save(tmp_path / "src.npy", np.zeros((4, 8, 8), np.uint8))
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    code = cli.main(
        [
            "export",
            str(tmp_path / "src.npy"),
            "--format",
            "hdf5",
            "--output",
            str(tmp_path / "o.h5"),
            "--scheduler",
            address,
            "--quiet",
        ]
    )
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(
        f"error: cannot reach a dask scheduler at {address} within 2 s"
    )
    assert elapsed < 15
    assert files_in(tmp_path) == ["src.npy"]


# -- the CLI against a cluster started separately --------------------------------------------------


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the dask scheduler exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cli_exports_on_a_separately_started_cluster(tmp_path):
    data = make_data("uint16", (24, 64, 80), seed=3)
    np.save(tmp_path / "src.npy", data)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "wb")
    scheduler = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        stdout=logs,
        stderr=logs,
    )
    worker = None
    try:
        wait_listening(port, scheduler)
        worker = subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "2",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            stdout=logs,
            stderr=logs,
        )
        with Client(address, timeout=30, set_as_default=False) as probe:
            probe.wait_for_workers(2, timeout=60)
        lazyexport = str(BIN / "lazyexport")
        out = tmp_path / "out"
        done = subprocess.run(
            [
                lazyexport,
                "export",
                str(tmp_path / "src.npy"),
                "--axes",
                "zyx",
                "--format",
                "hdf5",
                "--output",
                str(out / "cli.h5"),
                "--chunks",
                "z=4",
                "--memory-limit",
                "16MiB",
                "--scheduler",
                address,
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert "wrote hdf5" in done.stdout
        np.testing.assert_array_equal(np.asarray(le.open_exported(out / "cli.h5")), data)
        # a batch passes the scheduler on to each of its exports
        project = tmp_path / "project.toml"
        project.write_text(
            '[settings]\nformat = "tiff-sequence"\n'
            'output = "{dataset_dir}/out/{nickname}_{slice_index}.tif"\n'
            f'[[datasets]]\nsource = "{tmp_path / "src.npy"}"\nnickname = "a"\naxes = "zyx"\n'
        )
        done = subprocess.run(
            [lazyexport, "batch", str(project), "export-all", "--scheduler", address, "--quiet"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        slices = sorted(out.glob("a_*.tif"))
        assert len(slices) == 24
        np.testing.assert_array_equal(np.asarray(le.open_exported(str(out / "a_*.tif"))), data)
    finally:
        if worker is not None:
            stop(worker)
        stop(scheduler)
        logs.close()


# -- plans sized for the cluster's workers ------------------------------------------------------


def _worker_peak() -> int:
    return next(
        int(line.split()[1]) * 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM:")
    )


def test_a_plan_for_a_cluster_is_sized_by_its_workers(client, tmp_path):
    source = le.open_source(volume((64, 256, 256)), axes="zyx")
    plan = run.plan_on(client, source, settings_for("zarr", tmp_path))
    workers = client.scheduler_info()["workers"].values()
    assert plan.cluster is not None and plan.cluster.count == len(workers) == 2
    assert plan.notes[0].startswith("sized for the dask cluster: 2 workers x 1 thread")
    assert plan.costs is not None
    assert plan.workers == 2 and plan.costs.per_host == 1  # one thread per worker
    limit = min(w["memory_limit"] for w in workers)
    assert plan.cluster.budget <= 0.7 * limit and plan.memory_limit == 2 * plan.cluster.budget
    result = run.execute(plan, scheduler=client)
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), volume((64, 256, 256)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "chunks,in_flight",
    [
        ((64, 256, 256), 2),  # 16 MiB chunks: a task on each worker
        ((64, 512, 1024), 1),
    ],
)  # 128 MiB chunks: one task in all
def test_local_cluster_workers_stay_within_their_share_and_never_pause(
    tmp_path, monkeypatch, chunks, in_flight
):
    """Two workers and --memory-limit 256MiB: a worker's share is 128 MiB (+ its interpreter).
    Where one task needs more than a share (a deep 128 MiB source chunk), the plan runs one task
    at a time on the cluster instead of refusing, and no worker goes over its share."""
    import importlib

    from lazyexport.demo import smooth_volume

    monkeypatch.setattr(
        importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", 2**30
    )  # not small_blocks'

    source = le.open_source(smooth_volume((128, 1024, 1024), chunks), axes="zyx")  # 512 MiB float32
    settings = le.ExportSettings(
        format="zarr", output=str(tmp_path / "o"), renormalize=((0, 1), (0, 255)), dtype="uint8"
    )
    with run.scheduler_session("local-cluster", "256MiB") as cluster:
        plan = run.plan_on(cluster, source, settings, memory_limit="256MiB")
        assert plan.cluster is not None
        share = 256 * 2**20 // plan.cluster.count
        assert plan.memory_limit == 256 * 2**20 and plan.in_flight == in_flight
        assert plan.costs is not None
        assert plan.in_flight * plan.costs.task_peak <= plan.memory_limit
        result = run.execute(plan, scheduler=cluster)
        peaks = cluster.run(_worker_peak)
        logs = cluster.get_worker_logs()
    assert all(peak <= share + WORKER_ALLOWANCE for peak in peaks.values()), (peaks, share)
    assert not any("Pausing worker" in line for lines in logs.values() for _, line in lines)
    back = le.open_exported(result)
    assert back.shape == (128, 1024, 1024) and back.dtype == np.uint8


@pytest.mark.parametrize(
    "depth,fits_a_share",
    [
        (64, True),  # 256 MiB chunks: one chunk per task fits a share (it once took two: 636 MiB)
        (80, False),  # 320 MiB chunks: a task of one chunk needs more than a share
    ],
)
def test_a_cluster_plan_keeps_a_task_within_an_even_share_where_one_fits(
    monkeypatch, depth, fits_a_share
):
    """8-12 GiB of float32 with deep chunks, --memory-limit 512MiB on 2 single-thread workers
    (as local-cluster starts them, with room for the whole budget): each worker is planned
    within its share (256 MiB) + WORKER_ALLOWANCE where a task fits that, and given what it
    has room for only where none does."""
    import importlib

    from lazyexport.demo import smooth_volume
    from lazyexport.plan import Workers

    monkeypatch.setattr(
        importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", 2**30
    )  # not small_blocks'
    mib = 2**20
    room = Workers(
        count=2,
        threads=1,
        budget=512 * mib,
        baseline=150 * mib,
        memory_limit=int((512 * mib + WORKER_ALLOWANCE) / run.PAUSE_MARGIN),
        total=512 * mib,
    )
    source = le.open_source(smooth_volume((192, 4096, 4096), (depth, 1024, 1024)), axes="zyx")
    settings = le.ExportSettings(
        format="zarr", output="unused.zarr", renormalize=((0, 1), (0, 255)), dtype="uint8"
    )
    plan = build_plan(source, settings, workers=room, in_process=False)
    costs = plan.priced
    per_worker = costs.baseline + costs.per_host * costs.task_peak
    share = 512 * mib // 2 + WORKER_ALLOWANCE
    assert (per_worker <= share) == fits_a_share, (costs, per_worker / mib)
    assert per_worker <= costs.baseline + room.budget  # never over what a worker has room for
    assert plan.in_flight * costs.task_peak <= plan.memory_limit  # all workers within the budget


def test_a_huge_export_on_the_cluster_starts_at_once_and_cancels_within_seconds(client, tmp_path):
    """Streamed on the cluster too: an empty 1 TiB Zarr source writes its first block within
    seconds, and a cancel returns within seconds (it once did not return after 300 s)."""
    first, stop = cancel_a_huge_export(tmp_path, scheduler=client)
    assert first < 10
    assert stop < 10
