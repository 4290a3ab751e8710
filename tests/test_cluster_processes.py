"""Exports on a dask cluster started as users start one (:mod:`helpers.dask_processes`): a
``dask scheduler`` and three ``dask worker`` processes, each worker with its own local directory
and TMPDIR and a directory of the client's masked (the workers see an empty one there); the
client is this test process (``scheduler=`` an address, in the API and in a project's batch) or
the command line in a subprocess (``--scheduler tcp://...``).

What is checked: S3 (moto on loopback) -> S3 for every format written to URLs, and shared
directory -> shared directory for every format, give what a local export of the same settings
gives (every file's bytes where the output is a tree of chunks; arrays, coordinates and
attributes otherwise); a worker killed with SIGKILL mid-export does not change the output; a
scheduler killed mid-export ends the command in one line with exit status 2 and nothing at the
output path, and ``--resume`` against a new scheduler completes it identically; an output in a
directory the workers do not see is refused before anything is written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import lazyexport as le
from helpers import cli_command, cli_env, make_data, run_cli, write_zarr3
from helpers.dask_processes import ProcessCluster, alive, can_hide, kill
from helpers.objstore import key_prefix, s3_bucket
from lazyexport.errors import FormatError, OutputLocationError
from lazyexport.execution import executors
from lazyexport.formats import formats

pytestmark = pytest.mark.slow
HIDE = can_hide()  # a mount namespace for the workers, where the client's directory is masked

BUCKET = "lzcluster"
SHAPE = (12, 40, 36)
OPTIONS: dict[str, dict[str, Any]] = {"ome-zarr": {"levels": 2}, "png-sequence": {"dtype": "uint8"}}
# formats written to URLs: in place by the workers (Zarr, OME-Zarr), or staged and uploaded (the
# others but N5, a directory of files, which is refused at a URL)
NOT_AT_URLS = ("n5",)
MANY = (400, 32, 32)  # one block per slice below: an export long enough to kill something in
BLOCK_BYTES = str(32 * 32 * 2)


@pytest.fixture(scope="module")
def s3():
    with s3_bucket(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("cluster")
    private = root / "client-only"
    private.mkdir()
    (private / "the-clients-file").write_text("only this machine sees it")
    with ProcessCluster(root, env=s3.env, hidden=(private,) if HIDE else ()) as started:
        yield started


NAMES = {
    "hdf5": "out.h5",
    "n5": "out.n5",
    "npy": "out.npy",
    "ome-zarr": "out.ome.zarr",
    "png-sequence": "seq/s_{slice_index}.png",
    "tiff": "out.tif",
    "tiff-sequence": "seq/s_{slice_index}.tif",
    "zarr": "out.zarr",
}


def settings(fmt: str, output: str) -> le.ExportSettings:
    return le.ExportSettings(format=fmt, output=output, chunks={"z": 4}, **OPTIONS.get(fmt, {}))


def tree(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


OPENED_AT = ("source", "dataset_dir", "nickname")


def assert_same_export(got: Path, want: Path, fmt: str) -> None:
    """``got`` holds what ``want`` holds: every file's bytes for a store of chunk files, else
    the same slice files and the same arrays, coordinates and attributes."""
    if fmt in ("zarr", "ome-zarr", "n5"):
        assert tree(got) == tree(want) and tree(want)
        return
    if fmt.endswith("sequence"):
        names = sorted(p.name for p in want.parent.iterdir())
        assert sorted(p.name for p in got.parent.iterdir()) == names and len(names) == SHAPE[0]
        got, want = got.parent / f"s_*{want.suffix}", want.parent / f"s_*{want.suffix}"
    opened = [le.open_exported(str(path)).load().rename(None) for path in (got, want)]
    for array in opened:  # where each was opened from, not what it holds
        array.attrs = {k: v for k, v in array.attrs.items() if k not in OPENED_AT}
    xr.testing.assert_identical(*opened)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[np.ndarray, Path]:
    data = make_data("uint16", SHAPE, seed=11)
    return data, write_zarr3(
        tmp_path_factory.mktemp("src") / "src.zarr", data, chunks=(4, 16, 16)
    ).file


@pytest.mark.parametrize("fmt", formats())
def test_s3_to_s3_on_the_cluster_equals_a_local_export(cluster, s3, source, tmp_path, request, fmt):
    data, local_source = source
    prefix = key_prefix(request.node.name)
    s3.upload_tree(local_source, BUCKET, f"{prefix}/src.zarr")
    name = NAMES[fmt]
    want = le.export(local_source, settings(fmt, str(tmp_path / "local" / name)))
    url = f"s3://{BUCKET}/{prefix}/out/{name}"
    if fmt in NOT_AT_URLS:
        with pytest.raises(FormatError, match="cannot be written to a URL"):
            le.export(
                f"s3://{BUCKET}/{prefix}/src.zarr", settings(fmt, url), scheduler=cluster.address
            )
        assert s3.keys(BUCKET, f"{prefix}/out") == []
        return
    got = le.export(
        f"s3://{BUCKET}/{prefix}/src.zarr", settings(fmt, url), scheduler=cluster.address
    )
    assert str(got.output).startswith(f"s3://{BUCKET}/{prefix}/out/")
    assert not [k for k in s3.keys(BUCKET, prefix) if ".lazyexport-" in k]
    down = s3.download_tree(BUCKET, f"{prefix}/out", tmp_path / "down")
    assert_same_export(down / name.replace("{slice_index}", "00"), want.paths[0], fmt)
    if "dtype" not in OPTIONS.get(fmt, {}):  # the local export holds the source's values
        np.testing.assert_array_equal(np.asarray(le.open_exported(want)), data)


@pytest.mark.parametrize("fmt", formats())
def test_shared_directory_on_the_cluster_equals_a_local_export(cluster, source, tmp_path, fmt):
    data, path = source
    name = NAMES[fmt]
    want = le.export(path, settings(fmt, str(tmp_path / "local" / name)))
    got = le.export(path, settings(fmt, str(tmp_path / "shared" / name)), scheduler=cluster.address)
    assert any(n.startswith("sized for the dask cluster: 3 workers x 1 thread") for n in got.notes)
    assert_same_export(got.paths[0], want.paths[0], fmt)


def test_a_project_batch_on_the_cluster_equals_a_local_export(cluster, source, tmp_path):
    _, path = source
    project = tmp_path / "project.toml"
    project.write_text(
        '[settings]\nformat = "zarr"\noutput = "{dataset_dir}/out/{nickname}.zarr"\n'
        f'[[datasets]]\nsource = "{path}"\nnickname = "a"\n'
    )
    want = le.export(path, le.ExportSettings(format="zarr", output=str(tmp_path / "want.zarr")))
    le.Batch.load(project).export_all(scheduler=cluster.address)
    assert_same_export(path.parent / "out" / "a.zarr", want.output, "zarr")


# -- killed mid-export ---------------------------------------------------------------------------


def long_export(directory: Path) -> Path:
    """A source whose export has one block per slice (MANY[0] blocks): long enough to kill a
    process in the middle of it."""
    np.save(directory / "long.npy", make_data("uint16", MANY, seed=7))
    return directory / "long.npy"


def export_args(source: Path, output: Path, address: str, *extra: str) -> list[str]:
    return cli_command(
        "export", source, "--axes", "zyx", "--format", "zarr", "--chunks", "z=1",
        "--output", output, "--scheduler", address, "--quiet", *extra,
    )  # fmt: skip


def start_export(args: list[str]) -> subprocess.Popen:
    env = {**cli_env(), "LAZYEXPORT_MAX_BLOCK_BYTES": BLOCK_BYTES}
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_chunks(output: Path, proc: subprocess.Popen, count: int, timeout: float = 120) -> int:
    """Wait until ``count`` chunk files of ``output``'s temporary store are written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        written = sum(
            len(list(t.glob("c/*/*/*"))) for t in output.parent.glob(f".{output.name}*.tmp")
        )
        if written >= count:
            return written
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} chunks written after {timeout} s")


def local_copy(source: Path, tmp_path: Path) -> Path:
    want = tmp_path / "local.zarr"
    chunked = le.ExportSettings(format="zarr", output=str(want), chunks={"z": 1})
    le.export(le.open_source(str(source), axes="zyx"), chunked)
    return want


def test_a_worker_killed_mid_export_changes_nothing(cluster, tmp_path):
    source, out = long_export(tmp_path), tmp_path / "out.zarr"
    before = cluster.worker_pids()
    proc = start_export(export_args(source, out, cluster.address))
    written = wait_for_chunks(out, proc, 40)
    victim = next(iter(before.values()))
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert "wrote zarr" in stdout and "error" not in stderr
    assert written < MANY[0]  # it died while blocks were still to write
    assert_same_export(out, local_copy(source, tmp_path), "zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.zarr", "long.npy", "out.zarr"]
    cluster.wait_for_workers(3)  # its nanny started a new worker process
    assert victim not in cluster.worker_pids().values()


def test_every_worker_killed_and_a_new_one_later_completes_the_export(tmp_path):
    """All workers die (nannies too), so the job sent to them is lost; a worker that joins
    later than the job's send timeout gets it sent again, and the export completes."""
    data = make_data("uint16", (64, 64, 64), seed=2)
    source = tmp_path / "s.zarr"
    write_zarr3(source, data, chunks=(4, 64, 64))
    with ProcessCluster(tmp_path / "cluster", workers=2) as cluster, cluster.client(3) as client:
        killed: list[float] = []  # (the client waits 3 s at most for a worker to send data to)

        def kill_every_worker(event) -> None:
            if not killed:
                for worker in list(cluster.workers):
                    kill(worker)
                killed.append(time.monotonic())
                later = threading.Timer(executors.SEND_TIMEOUT + 2, cluster.start_worker, (2,))
                later.start()

        result = le.export(
            le.open_source(str(source), axes="zyx"),
            le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"), chunks={"z": 4}),
            memory_limit="16MiB",
            scheduler=client,
            progress=kill_every_worker,
        )
        took = time.monotonic() - killed[0]
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), data)
    assert took > executors.SEND_TIMEOUT + 2  # it waited for the new worker


def test_a_scheduler_killed_mid_export_fails_in_one_line_and_resume_completes(tmp_path):
    source, out = long_export(tmp_path), tmp_path / "out.zarr"
    with ProcessCluster(tmp_path / "first") as first:
        assert first.scheduler is not None
        processes = [first.scheduler.pid, *first.worker_pids().values()]
        proc = start_export(export_args(source, out, first.address, "--resume"))
        written = wait_for_chunks(out, proc, 40)
        first.kill_scheduler()
        start = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert not [pid for pid in processes if alive(pid)]  # the cluster left no process behind
    assert time.monotonic() - start < 60  # not a hang: the client gives up after its timeout
    errors = [line for line in stderr.splitlines() if line and not line.startswith("note:")]
    assert errors == [
        f"error: lost the connection to the dask scheduler at {first.address} during the export "
        "(the scheduler stopped, or the network to it failed)"
    ], stderr
    assert not out.exists() and written < MANY[0]
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.zarr"))
    assert [k.rsplit(".", 1)[1] for k in kept] == ["blocks", "tmp"]  # kept for --resume
    with ProcessCluster(tmp_path / "second") as second:
        done = start_export(export_args(source, out, second.address, "--resume"))
        stdout, stderr = done.communicate(timeout=180)
    assert done.returncode == 0, stderr
    assert "wrote zarr" in stdout
    assert_same_export(out, local_copy(source, tmp_path), "zarr")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]


# -- workers that cannot see the output's directory ----------------------------------------------


@pytest.mark.skipif(not HIDE, reason="masking a directory needs unshare --user --mount")
def test_an_output_the_workers_do_not_see_is_refused_before_anything_is_written(cluster, source):
    _, path = source
    private = cluster.root / "client-only"
    before = sorted(p.name for p in private.iterdir())
    env = {**cli_env(), "TMPDIR": str(private)}  # the client's temp dir: no worker's
    args = cli_command(
        "export", path, "--format", "zarr", "--output", private / "out.zarr",
        "--scheduler", cluster.address,
    )  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith("note:")]
    assert errors == [
        f"error: 3 of 3 dask workers ({sorted(cluster.worker_pids())[0]}, ...) do not see "
        f"{private} as this machine does, and the output goes there; put the output on storage "
        "every worker shares under the same path, or in an object store"
    ]
    assert sorted(p.name for p in private.iterdir()) == before  # nothing half-written
    # the same on a plan, and from the API; a shared directory and HDF5 (encoded on the workers,
    # written here) are not refused
    plan = run_cli("export", path, "--format", "zarr", "--output", private / "x.zarr",
                   "--scheduler", cluster.address, "--plan")  # fmt: skip
    assert plan.returncode == 2 and "do not see" in plan.stderr
    sequence = settings("tiff-sequence", str(private / "s_{slice_index}.tif"))
    with pytest.raises(OutputLocationError, match="do not see"):
        le.export(path, sequence, scheduler=cluster.address)
    made = le.export(path, settings("hdf5", str(private / "ok.h5")), scheduler=cluster.address)
    np.testing.assert_array_equal(np.asarray(le.open_exported(made)), source[0])
    assert sorted(p.name for p in private.iterdir()) == sorted([*before, "ok.h5"])
