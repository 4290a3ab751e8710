"""``export(..., compute=False)`` of outputs at a URL that are staged locally and uploaded (HDF5,
also a dataset into an existing file; TIFF; image sequences; npy), on an S3 server on loopback:
building the Delayed makes only its mark (nothing staged, fetched, deleted or uploaded); the
computation runs the export as ``compute=True`` does, in one task, under the storage options
given to ``export``, with progress; the staging directory is gone however it ends; a second
computation is refused and changes nothing."""

from __future__ import annotations

import glob
import io
import os
import socket
import tempfile

import dask
import h5py
import numpy as np
import pytest
import tifffile

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.errors import AlreadyComputedError
from lazyexport.run import Progress
from lazyexport.settings import ExportSettings

SECRET = "SeCrEt-session-token-4711"


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path, monkeypatch):
    """Each test stages in a temporary directory of its own (TMPDIR, inherited by worker
    processes), so that what other runs stage at the same time is not counted."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))


def _staging() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "lazyexport-upload-*")))


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lazystaged") as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    return key_prefix(request.node.name)


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", (6, 40, 36))
    return str(write_zarr3(tmp_path / "src.zarr", data, chunks=(2, 40, 36)).file), data


def _url(prefix: str, name: str) -> str:
    return f"s3://lazystaged/{prefix}/{name}"


def _bodies(s3, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    return {
        k: client.get_object(Bucket="lazystaged", Key=k)["Body"].read()
        for k in s3.keys("lazystaged", prefix)
    }


def _ours(keys) -> list[str]:
    return [k for k in keys if "lazyexport-" in k]


def _h5(s3, prefix: str, name: str = "f.h5") -> dict[str, np.ndarray]:
    body = _bodies(s3, prefix)[f"{prefix}/{name}"]
    with h5py.File(io.BytesIO(body), "r") as f:
        return {k: f[k][()] for k in f}


def _read(s3, prefix: str, name: str) -> np.ndarray:
    """The array at ``name`` (npy files and slice sequences are not read from a URL: fetched)."""
    bodies = _bodies(s3, prefix)
    if name.endswith(".npy"):
        return np.load(io.BytesIO(bodies[f"{prefix}/{name}"]))
    if "*" in name:
        start = f"{prefix}/{name.split('*')[0]}"
        keys = sorted(
            (k for k in bodies if k.startswith(start)), key=lambda k: int(k[len(start) : -4])
        )
        return np.stack([tifffile.imread(io.BytesIO(bodies[k])) for k in keys])
    return le.open_source(_url(prefix, name)).values


def test_a_dataset_into_an_existing_remote_file_keeps_the_others(s3, prefix, source):
    """Building stages and fetches nothing; computing adds the dataset and keeps the file's
    other one (before the first fix: the file was replaced by one holding only the new one),
    reports progress to the end; a second computation is refused and changes nothing."""
    path, data = source
    le.export(data + 1, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/old")))
    before, staged = _bodies(s3, prefix), _staging()
    events: list[Progress] = []
    settings = ExportSettings(format="hdf5", output=_url(prefix, "f.h5/new"))
    lazy = le.export(path, settings, compute=False, progress=events.append)
    built = _bodies(s3, prefix)
    assert len(_ours(built)) == 1 and _ours(built)[0].endswith(".lazy")
    assert {k: v for k, v in built.items() if k not in _ours(built)} == before
    assert _staging() == staged and not events
    (result,) = dask.compute(lazy, scheduler="threads")
    got = _h5(s3, prefix)
    np.testing.assert_array_equal(got["old"], data + 1)
    np.testing.assert_array_equal(got["new"], data)
    assert result.format == "hdf5" and result.internal == "new"
    last = max(events, key=lambda e: e.blocks_done)
    assert last.blocks_done == last.blocks_total and last.fraction == 1.0
    done = _bodies(s3, prefix)
    assert not _ours(done) and _staging() == staged
    with pytest.raises(AlreadyComputedError, match="computed already"):
        dask.compute(lazy, scheduler="threads")
    assert _bodies(s3, prefix) == done


@pytest.mark.parametrize(
    "fmt,name,read",
    [
        ("tiff", "o.tif", "o.tif"),
        ("hdf5", "o.h5/d", "o.h5/d"),
        ("npy", "o.npy", "o.npy"),
        ("tiff-sequence", "seq/s_{slice_index}.tif", "seq/s_*.tif"),
    ],
    ids=["tiff", "hdf5", "npy", "tiff-sequence"],
)
def test_an_overwrite_replaces_the_output_only_when_computed(s3, prefix, source, fmt, name, read):
    path, data = source
    url = _url(prefix, name)
    le.export(np.zeros(data.shape, data.dtype), ExportSettings(format=fmt, output=url))
    before, staged = _bodies(s3, prefix), _staging()
    lazy = le.export(path, ExportSettings(format=fmt, output=url), compute=False, overwrite=True)
    built = _bodies(s3, prefix)
    assert {k: v for k, v in built.items() if k not in _ours(built)} == before
    np.testing.assert_array_equal(_read(s3, prefix, read), 0)
    assert _staging() == staged
    dask.compute(lazy, scheduler="synchronous")
    np.testing.assert_array_equal(_read(s3, prefix, read), data)
    assert not _ours(s3.keys("lazystaged", prefix)) and _staging() == staged


def test_without_overwrite_an_existing_output_is_refused_when_built(s3, prefix, source):
    path, data = source
    url = _url(prefix, "o.tif")
    le.export(path, ExportSettings(format="tiff", output=url))
    before = _bodies(s3, prefix)
    with pytest.raises(le.ExportError, match="exists already; pass overwrite=True") as e:
        le.export(path, ExportSettings(format="tiff", output=url), compute=False)
    assert str(e.value).count("\n") == 0 and _bodies(s3, prefix) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_the_storage_options_apply_when_computed(s3, prefix, source, monkeypatch, scheduler):
    """The environment names a closed port; storage_options name the server: the staged
    export's fetch and upload, after export() returned, use the options."""
    path, data = source
    le.export(data + 1, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/old")))
    opts = {"endpoint": s3.endpoint, "max_retries": "0", "session_token": ""}
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    settings = ExportSettings(format="hdf5", output=_url(prefix, "f.h5/new"))
    lazy = le.export(path, settings, compute=False, storage_options=opts)
    assert remote.current_options() == {}  # nothing is left in effect after the call
    dask.compute(lazy, scheduler=scheduler)
    assert remote.current_options() == {}
    monkeypatch.undo()
    got = _h5(s3, prefix)
    np.testing.assert_array_equal(got["old"], data + 1)
    np.testing.assert_array_equal(got["new"], data)
    assert not _ours(s3.keys("lazystaged", prefix))


def test_a_failed_upload_leaves_no_staging_and_the_output_as_it_was(
    s3, prefix, source, monkeypatch
):
    """The upload fails: the staging directory is removed, the existing file is as it was
    (with its other dataset), and computing the Delayed again exports it."""
    path, data = source
    le.export(data + 1, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/old")))
    before, staged = _bodies(s3, prefix), _staging()
    settings = ExportSettings(format="hdf5", output=_url(prefix, "f.h5/new"))
    lazy = le.export(path, settings, compute=False)

    def broken(*args, **kwargs):
        raise OSError("the upload broke")

    with monkeypatch.context() as patched:  # (undo() would also undo the own TMPDIR)
        patched.setattr(remote, "upload", broken)
        with pytest.raises(OSError, match="the upload broke"):
            dask.compute(lazy, scheduler="threads")
    assert _staging() == staged
    after = _bodies(s3, prefix)
    assert {k: v for k, v in after.items() if k not in _ours(after)} == before
    dask.compute(lazy, scheduler="threads")
    got = _h5(s3, prefix)
    np.testing.assert_array_equal(got["old"], data + 1)
    np.testing.assert_array_equal(got["new"], data)
    assert not _ours(s3.keys("lazystaged", prefix)) and _staging() == staged


@pytest.mark.parametrize(
    "fmt,name",
    [("hdf5", "o.h5/d"), ("tiff-sequence", "seq/s_{slice_index}.tif")],
    ids=["hdf5", "tiff-sequence"],
)
def test_resume_does_what_compute_true_does(s3, prefix, source, fmt, name):
    """resume=True: staged outputs do not resume at a URL (compute=True exports them from the
    start, claiming nothing): the lazy export does the same, with the same notes."""
    path, data = source
    eager = le.export(
        path, ExportSettings(format=fmt, output=_url(f"{prefix}/eager", name)), resume=True
    )
    url = _url(f"{prefix}/lazy", name)
    lazy = le.export(path, ExportSettings(format=fmt, output=url), compute=False, resume=True)
    (result,) = dask.compute(lazy, scheduler="threads")
    assert result.notes == eager.notes
    assert len(result.paths) == len(eager.paths)
    assert not _ours(s3.keys("lazystaged", prefix))
    np.testing.assert_array_equal(
        _read(s3, f"{prefix}/lazy", name.replace("{slice_index}", "*")), data
    )


def test_staged_and_zarr_exports_computed_together(s3, prefix, source):
    """A staged export's task and a Zarr export's tasks in one dask.compute (threads, under
    storage options): both are written; the source is shared."""
    path, data = source
    opts = {"session_token": ""}
    tif = le.export(
        path, ExportSettings(format="tiff", output=_url(prefix, "o.tif")),
        compute=False, storage_options=opts,
    )  # fmt: skip
    zarr = le.export(
        path, ExportSettings(format="zarr", output=_url(prefix, "o.zarr")),
        compute=False, storage_options=opts,
    )  # fmt: skip
    first, second = dask.compute(tif, zarr, scheduler="threads")
    for result in (first, second):
        np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not _ours(s3.keys("lazystaged", prefix))


def test_option_values_are_in_no_key_or_repr_of_the_graph(s3, prefix, source):
    path, _ = source
    settings = ExportSettings(format="hdf5", output=_url(prefix, "o.h5/d"))
    lazy = le.export(path, settings, compute=False, storage_options={"session_token": SECRET})
    graph = dict(lazy.__dask_graph__())
    assert SECRET not in repr(list(graph)) and SECRET not in repr(graph)
    assert len(graph) == 2  # the export (opaque) and its one task


def _put(s3, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket="lazystaged", Key=key, Body=body)


def test_what_is_written_after_the_build_is_kept(s3, prefix, source):
    """The existing file is fetched when computed, not when built: a dataset another program
    added to it in between is kept; a TIFF another program wrote in between (the Delayed was
    built without overwrite) is not replaced (refused as compute=True refuses it)."""
    path, data = source
    le.export(data + 1, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/old")))
    tif = ExportSettings(format="tiff", output=_url(prefix, "o.tif"))
    lazy_h5 = le.export(
        path, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/new")), compute=False
    )
    lazy_tif = le.export(path, tif, compute=False)
    body = io.BytesIO(_bodies(s3, prefix)[f"{prefix}/f.h5"])
    with h5py.File(body, "a") as f:
        f["between"] = data + 2
    _put(s3, f"{prefix}/f.h5", body.getvalue())
    other = io.BytesIO()
    tifffile.imwrite(other, data + 3)
    _put(s3, f"{prefix}/o.tif", other.getvalue())
    dask.compute(lazy_h5, scheduler="threads")
    got = _h5(s3, prefix)
    assert sorted(got) == ["between", "new", "old"]
    np.testing.assert_array_equal(got["between"], data + 2)
    np.testing.assert_array_equal(got["new"], data)
    with pytest.raises(le.ExportError, match="exists already") as e:
        dask.compute(lazy_tif, scheduler="threads")
    assert str(e.value).count("\n") == 0
    np.testing.assert_array_equal(le.open_source(_url(prefix, "o.tif")).values, data + 3)


def test_another_export_of_the_file_in_between_is_not_undone(s3, prefix, source):
    """An export into the same file in this process, after the build: the Delayed is then
    refused when computed (its mark was removed, as for any output exported again), and the
    file keeps both datasets."""
    path, data = source
    le.export(data + 1, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/old")))
    lazy = le.export(
        path, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/new")), compute=False
    )
    le.export(data + 2, ExportSettings(format="hdf5", output=_url(prefix, "f.h5/between")))
    before = _bodies(s3, prefix)
    with pytest.raises(AlreadyComputedError):
        dask.compute(lazy, scheduler="threads")
    assert _bodies(s3, prefix) == before
    assert sorted(_h5(s3, prefix)) == ["between", "old"]
