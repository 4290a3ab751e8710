"""``export(..., compute=False)`` runs the same export job as ``compute=True``: it writes to
object storage (an S3 server), reports progress as blocks finish, and resumes an interrupted
lazy export (``resume=True``), skipping the blocks its journal lists."""

from __future__ import annotations

import importlib
import threading

import dask
import numpy as np
import pytest

import lazyexport as le
from conftest import hidden_temps, make_data, write_zarr3
from lazyexport.errors import AlreadyComputedError
from lazyexport.run import Progress
from lazyexport.settings import ExportSettings
from objstore import key_prefix, s3_bucket

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


@pytest.mark.parametrize("fmt,name", [("zarr", "o.zarr"), ("hdf5", "o.h5")], ids=["zarr", "hdf5"])
def test_a_url_output_is_written_by_the_delayed_and_commits_once(s3, prefix, source, fmt, name):
    path, data = source
    url = f"s3://lazy/{prefix}/{name}"
    cut = {"z": (2, 11), "y": (3, 37)}
    lazy = le.export(str(path), ExportSettings(format=fmt, output=url, roi=cut), compute=False)
    visible = {f"{prefix}/o.zarr/zarr.json", f"{prefix}/o.h5"}
    assert not visible & set(s3.keys("lazy", prefix))  # nothing visible before the compute
    (result,) = dask.compute(lazy)
    assert str(result.output) == url and result.format == fmt
    np.testing.assert_array_equal(le.open_source(url).values, data[2:11, 3:37])
    assert not [k for k in s3.keys("lazy", prefix) if ".lazyexport-" in k]
    before = s3.keys("lazy", prefix)
    with pytest.raises(AlreadyComputedError, match="computed already"):
        dask.compute(lazy)
    assert s3.keys("lazy", prefix) == before


def test_progress_is_called_as_blocks_finish(tmp_path, small_blocks):
    data = make_data("uint16", SHAPE)
    events: list[Progress] = []
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
    written: list[object] = []  # the locations written

    def write(self, block, location):
        if len(written) >= count:
            raise OSError("disk on fire")
        written.append(location)
        return original(self, block, location)

    monkeypatch.setattr(cls, "write", write)


@pytest.mark.parametrize("fmt", TARGETS)
def test_an_interrupted_lazy_export_is_resumed_by_the_next(
    tmp_path, small_blocks, monkeypatch, fmt
):
    data = make_data("uint16", SHAPE)  # a file: an array in memory has no identity to resume
    source = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file)
    name, target = TARGETS[fmt]
    settings = ExportSettings(format=fmt, output=str(tmp_path / "out" / name), chunks={"z": 1})
    lazy = le.export(source, settings, compute=False, resume=True)
    with monkeypatch.context() as patched:
        _fail_writes_after(patched, target, 7)
        with pytest.raises(OSError, match="disk on fire"):
            dask.compute(lazy, scheduler="synchronous")
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
    assert hidden_temps(tmp_path / "out")  # kept for the next resume=True export
    events: list[Progress] = []
    again = le.export(source, settings, compute=False, resume=True, progress=events.append)
    (result,) = dask.compute(again, scheduler="synchronous")
    assert len(events) == 12 - 7  # the journaled blocks are not written again
    assert events[0].blocks_done == 8 and events[-1].blocks_done == 12
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")
    with pytest.raises(AlreadyComputedError, match="computed already"):
        dask.compute(again, scheduler="synchronous")


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


def test_an_interrupted_lazy_export_to_s3_is_resumed_by_the_next(
    s3, prefix, tmp_path, small_blocks, monkeypatch
):
    data = make_data("uint16", SHAPE)
    source = str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file)
    url = f"s3://lazy/{prefix}/o.zarr"
    settings = ExportSettings(format="zarr", output=url, chunks={"z": 1})
    lazy = le.export(source, settings, compute=False, resume=True)
    with monkeypatch.context() as patched:
        _fail_writes_after(patched, TARGETS["zarr"][1], 5)
        with pytest.raises(OSError, match="disk on fire"):
            dask.compute(lazy, scheduler="synchronous")
    keys = s3.keys("lazy", prefix)
    assert f"{prefix}/o.zarr/zarr.json" not in keys  # not visible
    assert len([k for k in keys if "/blocks/" in k]) == 5, keys  # the journal, in the store
    events: list[Progress] = []
    again = le.export(source, settings, compute=False, resume=True, progress=events.append)
    dask.compute(again, scheduler="synchronous")
    assert len(events) == 12 - 5 and events[-1].blocks_done == 12
    np.testing.assert_array_equal(le.open_source(url).values, data)
    assert not [k for k in s3.keys("lazy", prefix) if ".lazyexport-" in k]
