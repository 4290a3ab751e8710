"""``export(..., compute=False)`` to a Zarr store at a URL (an S3 server on loopback): building
the Delayed makes only its mark; the overwrite, the claim and the writes happen when it is
computed, with the storage options given to ``export`` (not the environment's); a second
computation changes nothing; staged outputs (HDF5, TIFF) stage nothing until computed
(tests/test_lazy_staged.py)."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import threading

import dask
import numpy as np
import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.errors import AlreadyComputedError, ExportCancelled, OutputBusyError
from lazyexport.formats.zarr import ZarrTarget
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.run import Progress
from lazyexport.settings import ExportSettings
from lazyexport.storage import Run, temp_path

SECRET = "SeCrEt-session-token-4711"


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lazyurl") as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    return key_prefix(request.node.name)


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", (12, 40, 36))
    return str(write_zarr3(tmp_path / "src.zarr", data, chunks=(2, 40, 36)).file), data


def _zarr(url: str) -> ExportSettings:
    return ExportSettings(format="zarr", output=url, chunks={"z": 1})


def _marks(keys: list[str]) -> list[str]:
    return [k for k in keys if k.endswith(".lazy")]


def test_an_overwrite_replaces_the_store_only_when_computed(s3, prefix, source):
    """Building the Delayed with overwrite=True leaves the existing store as it is (before: it
    was deleted then); computing it writes the new one; a second computation changes nothing."""
    path, data = source
    url = f"s3://lazyurl/{prefix}/o.zarr"
    le.export(np.zeros(data.shape, data.dtype), _zarr(url))
    before = s3.keys("lazyurl", prefix)
    events: list[Progress] = []
    lazy = le.export(path, _zarr(url), compute=False, overwrite=True, progress=events.append)
    built = s3.keys("lazyurl", prefix)
    assert len(_marks(built)) == 1 and [k for k in built if k not in _marks(built)] == before
    np.testing.assert_array_equal(le.open_source(url).values, 0)
    assert not events  # nothing runs before the compute
    (result,) = dask.compute(lazy, scheduler="threads")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    last = max(events, key=lambda e: e.blocks_done)
    assert last.blocks_done == last.blocks_total == len(events) and last.fraction == 1.0
    done = s3.keys("lazyurl", prefix)
    assert not _marks(done) and not [k for k in done if "lazyexport-" in k]
    with pytest.raises(AlreadyComputedError, match="computed already"):
        dask.compute(lazy, scheduler="threads")
    assert s3.keys("lazyurl", prefix) == done
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_without_overwrite_an_existing_store_is_refused_when_built(s3, prefix, source):
    path, data = source
    url = f"s3://lazyurl/{prefix}/o.zarr"
    le.export(path, _zarr(url))
    before = s3.keys("lazyurl", prefix)
    with pytest.raises(le.ExportError, match="exists already; pass overwrite=True"):
        le.export(path, _zarr(url), compute=False)
    assert s3.keys("lazyurl", prefix) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_the_storage_options_apply_when_computed(s3, prefix, source, monkeypatch, scheduler):
    """The environment names a closed port; storage_options name the server: the computation,
    after export() returned, uses the options (before: the environment's, and failed)."""
    path, data = source
    url = f"s3://lazyurl/{prefix}/o.zarr"
    opts = {"endpoint": s3.endpoint, "max_retries": "0", "session_token": ""}
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    lazy = le.export(path, _zarr(url), compute=False, storage_options=opts)
    assert remote.current_options() == {}  # nothing is left in effect after the call
    (result,) = dask.compute(lazy, scheduler=scheduler)
    monkeypatch.undo()
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not [k for k in s3.keys("lazyurl", prefix) if "lazyexport-" in k]


def test_option_values_are_in_no_key_or_repr_of_the_graph(s3, prefix, source):
    path, _ = source
    url = f"s3://lazyurl/{prefix}/o.zarr"
    lazy = le.export(path, _zarr(url), compute=False, storage_options={"session_token": SECRET})
    graph = dict(lazy.__dask_graph__())
    assert SECRET not in repr(list(graph)) and SECRET not in repr(graph)


@pytest.mark.parametrize("fmt,name", [("hdf5", "o.h5/new"), ("tiff", "o.tif")], ids=["h5", "tif"])
def test_staged_outputs_stage_nothing_until_computed(s3, prefix, source, fmt, name):
    path, data = source
    staging = os.path.join(tempfile.gettempdir(), "lazyexport-upload-*")
    before = set(glob.glob(staging))
    lazy = le.export(
        path, ExportSettings(format=fmt, output=f"s3://lazyurl/{prefix}/{name}"),
        compute=False, storage_options={"session_token": SECRET},
    )  # fmt: skip
    assert SECRET not in repr(dict(lazy.__dask_graph__()))
    assert len(_marks(s3.keys("lazyurl", prefix))) == len(s3.keys("lazyurl", prefix)) == 1
    assert set(glob.glob(staging)) == before
    (result,) = dask.compute(lazy, scheduler="threads")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not _marks(s3.keys("lazyurl", prefix)) and set(glob.glob(staging)) == before


def test_a_lazy_resume_is_refused_while_a_live_run_holds_the_store(s3, prefix, source):
    path, data = source
    url = f"s3://lazyurl/{prefix}/r.zarr"
    plan = build_plan(path, _zarr(url))
    token = plan_token(plan)
    held = temp_path(plan.output, token)
    remote.claim(held, token)  # another live --resume run (this process, running) holds it
    try:
        with Run(token):
            lazy = le.export(path, _zarr(url), compute=False, resume=True)
            with pytest.raises(OutputBusyError, match="another --resume export of"):
                dask.compute(lazy, scheduler="synchronous")
            assert not [k for k in s3.keys("lazyurl", prefix) if k.endswith("zarr.json")]
    finally:
        remote.release(held)
    (result,) = dask.compute(lazy, scheduler="synchronous")  # the claim is free now
    np.testing.assert_array_equal(le.open_exported(result).values, data)


def test_a_lazy_resume_continues_the_journal_in_the_store(
    s3, prefix, tmp_path, small_blocks, monkeypatch
):
    data = make_data("uint16", (12, 256, 512))  # 12 blocks of one slice with small_blocks
    path = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file)
    url = f"s3://lazyurl/{prefix}/r.zarr"
    cancel = threading.Event()

    def progress(event):
        if event.blocks_done >= 2:
            cancel.set()

    with pytest.raises(ExportCancelled):
        le.export(
            path, _zarr(url), resume=True, cancel=cancel, progress=progress,
            scheduler="synchronous",
        )  # fmt: skip
    writes, original = list[object](), ZarrTarget.write

    def write(self, block, location):
        writes.append(location)
        return original(self, block, location)

    monkeypatch.setattr(ZarrTarget, "write", write)
    lazy = le.export(path, _zarr(url), compute=False, resume=True)
    (result,) = dask.compute(lazy, scheduler="synchronous")
    assert 0 < len(writes) <= 12 - 2
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not [k for k in s3.keys("lazyurl", prefix) if "lazyexport-" in k]


def test_a_failed_lazy_resume_to_a_store_is_continued_in_the_same_process(
    s3, prefix, tmp_path, small_blocks, monkeypatch
):
    """The failed computation ends its claim of the held metadata (its storage options in
    effect), keeping the journal: compute=True resume=True then writes only the blocks left."""
    data = make_data("uint16", (12, 256, 512))
    path = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file)
    url = f"s3://lazyurl/{prefix}/r.zarr"
    writes, original = list[object](), ZarrTarget.write

    def write(self, block, location):
        if len(writes) >= 5:
            raise OSError("disk on fire")
        writes.append(location)
        return original(self, block, location)

    monkeypatch.setattr(ZarrTarget, "write", write)
    lazy = le.export(path, _zarr(url), compute=False, resume=True)
    with pytest.raises(OSError, match="disk on fire"):
        dask.compute(lazy, scheduler="threads")
    assert not [k for k in s3.keys("lazyurl", prefix) if k.endswith("/owner")]
    monkeypatch.setattr(ZarrTarget, "write", original)
    result = le.export(path, _zarr(url), resume=True, scheduler="synchronous")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not [k for k in s3.keys("lazyurl", prefix) if "lazyexport-" in k]
