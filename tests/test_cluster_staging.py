"""An output staged before its upload on a dask cluster started as users start one
(:mod:`helpers.dask_processes`): a format that edits files (npy, TIFF, the sequences) exported
to an object store (S3 on loopback, moto) is written by the workers into a staging directory
in this machine's TMPDIR and uploaded from here. When the workers do not see that directory
(masked on them, as on hosts that share nothing but the scheduler and the store), the export and
``--plan`` are refused in one line, exit status 2, before anything is staged or uploaded; HDF5,
which the workers only encode for, is staged and uploaded as usual.
"""

from __future__ import annotations

import subprocess
import tempfile

import numpy as np
import pytest

import lazyexport as le
from helpers import cli_command, cli_env, make_data, write_zarr3
from helpers.dask_processes import ProcessCluster, can_hide
from helpers.objstore import s3_bucket
from lazyexport.errors import OutputLocationError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_hide(), reason="masking a directory needs unshare --user --mount"),
]

BUCKET = "lzstaging"
WORKERS = 2


@pytest.fixture(scope="module")
def s3():
    with s3_bucket(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("cluster")
    private = root / "client-tmp"  # this machine's TMPDIR below: masked on the workers
    private.mkdir()
    (private / "the-clients-file").write_text("only this machine sees it")
    with ProcessCluster(root, workers=WORKERS, env=s3.env, hidden=(private,)) as started:
        yield started


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data = make_data("uint16", (6, 24, 20), seed=5)
    return data, write_zarr3(tmp_path_factory.mktemp("src") / "src.zarr", data).file


def export_cli(source, url: str, cluster: ProcessCluster, s3, *extra: str):
    env = {**cli_env(), **s3.env, "TMPDIR": str(cluster.root / "client-tmp")}
    args = cli_command(
        "export", source, "--output", url, "--scheduler", cluster.address, *extra
    )  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def test_a_staged_output_the_workers_cannot_write_is_refused_in_the_plan(cluster, s3, source):
    _, path = source
    private = cluster.root / "client-tmp"
    before = sorted(p.name for p in private.iterdir())
    url = f"s3://{BUCKET}/refused/out.npy"
    for extra in ((), ("--plan",)):
        done = export_cli(path, url, cluster, s3, *extra)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if not line.startswith("note:")]
        assert errors == [
            f"error: {WORKERS} of {WORKERS} dask workers ({sorted(cluster.worker_pids())[0]}, "
            f"...) do not see {private} as this machine does, and {url} is staged there before "
            "its upload; set TMPDIR to a directory every worker shares under the same path, or "
            "export to Zarr (written to the store directly)"
        ], done.stderr
        assert "Traceback" not in done.stderr
    assert s3.keys(BUCKET, "refused") == []  # nothing uploaded
    assert sorted(p.name for p in private.iterdir()) == before  # nothing staged


def test_from_python_a_staged_sequence_is_refused_and_hdf5_is_uploaded(
    cluster, s3, source, monkeypatch
):
    data, path = source
    monkeypatch.setattr(tempfile, "tempdir", str(cluster.root / "client-tmp"))
    sequence = le.ExportSettings(
        format="tiff-sequence", output=f"s3://{BUCKET}/seq/s_{{slice_index}}.tif"
    )
    with pytest.raises(OutputLocationError, match="is staged there before its upload"):
        le.export(path, sequence, scheduler=cluster.address)
    assert s3.keys(BUCKET, "seq") == []
    # HDF5: the workers only encode, this machine writes the staged file and uploads it
    hdf5 = le.ExportSettings(format="hdf5", output=f"s3://{BUCKET}/ok/out.h5")
    made = le.export(path, hdf5, scheduler=cluster.address)
    assert s3.keys(BUCKET, "ok") == ["ok/out.h5"]
    np.testing.assert_array_equal(np.asarray(le.open_exported(made)), data)
