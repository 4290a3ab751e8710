"""``export(..., compute=False)`` runs the same export job as ``compute=True``: it reports
progress as blocks finish, and an interrupted lazy export is started again by the next. Outputs
at a URL that are staged and uploaded are left as they are until computed (an S3 server here:
the other datasets of a file there are kept; tests/test_lazy_staged.py); a ``resume=True``
export claims its output when computed (tests/test_lazy_resume.py)."""

from __future__ import annotations

import importlib
import threading

import dask
import numpy as np
import pytest

import lazyexport as le
from helpers import hidden_temps, make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport.run import Progress
from lazyexport.settings import ExportSettings

SHAPE = (12, 256, 512)  # 12 blocks of one 256 KiB slice with small_blocks


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lazy") as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    return key_prefix(request.node.name)


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", (12, 40, 36))
    return write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16)).file, data


SECRET = "SeCrEt-session-token-4711"


@pytest.mark.parametrize("fmt,name", [("hdf5", "o.h5/new")], ids=["hdf5"])
def test_a_url_output_leaves_what_is_there_until_computed(s3, prefix, source, fmt, name):
    """(Zarr at a URL is exported lazily: tests/test_lazy_urls.py.)"""
    path, data = source
    url = f"s3://lazy/{prefix}/{name}"
    kept = "o.zarr" if fmt == "zarr" else "o.h5/old"  # an existing output; another dataset
    le.export(str(path), ExportSettings(format=fmt, output=f"s3://lazy/{prefix}/{kept}"))
    before = s3.keys("lazy", prefix)
    for overwrite in (False, True):
        lazy = le.export(
            str(path), ExportSettings(format=fmt, output=url), compute=False,
            overwrite=overwrite, storage_options={"session_token": SECRET},
        )  # fmt: skip
        assert SECRET not in repr(dict(lazy.__dask_graph__()))
        made = s3.keys("lazy", prefix)  # nothing deleted, written or staged: the mark only
        assert [k for k in made if not k.endswith(".lazy")] == before
    dask.compute(lazy, scheduler="threads")
    np.testing.assert_array_equal(le.open_source(f"s3://lazy/{prefix}/{kept}").values, data)
    np.testing.assert_array_equal(le.open_source(url).values, data)


def test_a_running_resume_export_is_not_touched_by_a_lazy_one(tmp_path, small_blocks):
    """A compute=True resume=True export paused after 3 blocks: a compute=False resume=True
    export of the same plan is refused when computed (it claims the output as compute=True
    does), and the running export commits the whole output."""
    data = make_data("uint16", SHAPE)
    source = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file)
    out = tmp_path / "out" / "o.zarr"
    settings = ExportSettings(format="zarr", output=str(out), chunks={"z": 1})
    gate, paused, errors = threading.Event(), threading.Event(), []

    def progress(event):
        if event.blocks_done == 3:
            paused.set()
            gate.wait(60)

    def first():
        try:
            le.export(source, settings, resume=True, progress=progress, scheduler="synchronous")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(60)
        lazy = le.export(source, settings, compute=False, resume=True)
        with pytest.raises(le.ExportError, match="another --resume export of .* runs now"):
            dask.compute(lazy, scheduler="synchronous")
    finally:
        gate.set()
        thread.join()
    assert not errors
    np.testing.assert_array_equal(le.open_source(str(out)).values, data)
    assert not hidden_temps(tmp_path / "out")  # (its commit removed the lazy export's mark)


def test_progress_is_called_as_blocks_finish(tmp_path, small_blocks):
    data = make_data("uint16", SHAPE)
    events = []
    lock = threading.Lock()

    def progress(event):
        with lock:
            events.append(event)

    settings = ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"), chunks={"z": 1})
    lazy = le.export(data, settings, compute=False, progress=progress)
    assert not events  # nothing runs before the compute
    dask.compute(lazy, scheduler="threads")
    assert len(events) == 12 and sorted(e.blocks_done for e in events) == list(range(1, 13))
    last = max(events, key=lambda e: e.blocks_done)
    assert last.blocks_total == 12 and last.fraction == 1.0 and last.bytes_done == data.nbytes


TARGETS = {
    "zarr": ("o.zarr", "lazyexport.formats.zarr.ZarrTarget"),
    "tiff-sequence": ("s_{slice_index}.tif", "lazyexport.formats.sequence.SequenceTarget"),
}


def _fail_writes_after(monkeypatch, target: str, count: int) -> None:
    """Make every block write after the first ``count`` fail (a full disk, say)."""
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    original = cls.write
    written: list[tuple[slice, ...]] = []

    def write(self, block, location):
        if len(written) >= count:
            raise OSError("disk on fire")
        written.append(location)
        return original(self, block, location)

    monkeypatch.setattr(cls, "write", write)


def test_without_resume_an_interrupted_lazy_export_starts_again(
    tmp_path, small_blocks, monkeypatch
):
    data = make_data("uint16", SHAPE)
    settings = ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"), chunks={"z": 1})
    with monkeypatch.context() as patched:
        _fail_writes_after(patched, TARGETS["zarr"][1], 7)
        with pytest.raises(OSError, match="disk on fire"):
            dask.compute(le.export(data, settings, compute=False), scheduler="synchronous")
    events: list[Progress] = []
    again = le.export(data, settings, compute=False, progress=events.append)
    (result,) = dask.compute(again, scheduler="synchronous")
    assert len(events) == 12
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path)
