"""Atomic outputs (docs/usage.md): a failed export leaves no finished-looking file and no temporary
file, an existing output survives a failed replacement, and HDF5 exports into an existing file
touch only their own dataset."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

from helpers import hidden_temps, make_data
from lazyexport import ExportSettings, export
from lazyexport.errors import OutputExistsError
from lazyexport.formats.hdf5 import HDF5Target
from lazyexport.formats.sequence import TiffSequenceTarget
from lazyexport.formats.zarr import ZarrTarget
from lazyexport.plan import build_plan
from lazyexport.run import execute

pytestmark = pytest.mark.usefixtures("small_blocks")
plan_module = importlib.import_module("lazyexport.plan")

SHAPE = (20, 30, 40)
CHUNKS = (5, 30, 40)
FORMATS = ["hdf5", "zarr", "tiff-sequence"]
OUTPUTS = {"hdf5": "out.h5", "zarr": "out.zarr", "tiff-sequence": "slices/z{slice_index}.tif"}
TARGETS: dict[str, type[HDF5Target | ZarrTarget | TiffSequenceTarget]] = {
    "hdf5": HDF5Target,
    "zarr": ZarrTarget,
    "tiff-sequence": TiffSequenceTarget,
}


class Boom(RuntimeError):
    pass


def failing_source(fail_at_z: int = 10, before_failing=None) -> xr.DataArray:
    """A float32 zyx source whose block starting at z=``fail_at_z`` raises."""

    def block(block_info=None):
        info = block_info[None]
        if info["array-location"][0][0] == fail_at_z:
            if before_failing is not None:
                before_failing()
            raise Boom("this block cannot be read")
        return np.ones(info["chunk-shape"], dtype=np.float32)

    data = da.map_blocks(
        block,
        dtype=np.float32,
        chunks=da.core.normalize_chunks(CHUNKS, SHAPE),
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    return xr.DataArray(data, dims=("z", "y", "x"))


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``directory``: relative path -> (bytes, mtime_ns)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of one source chunk (5 z-slices), so an export runs as several tasks."""
    monkeypatch.setattr(plan_module, "MAX_BLOCK_BYTES", int(np.prod(CHUNKS)) * 4)


def settings_for(fmt: str, out_dir: Path, **kw) -> ExportSettings:
    return ExportSettings(format=fmt, output=f"{out_dir}/{OUTPUTS[fmt]}", chunks={"z": 5}, **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_export_leaves_no_files(fmt, out_dir, small_blocks):
    plan = build_plan(failing_source(), settings_for(fmt, out_dir), threads=1)
    assert plan.nblocks == 4
    with pytest.raises(Boom):
        execute(plan)
    assert hidden_temps(out_dir) == []
    assert [p for p in out_dir.rglob("*") if p.is_file()] == []
    for path in plan.paths:
        assert not path.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_export_keeps_existing_output(fmt, out_dir, small_blocks):
    good = make_data("float32")
    first = export(good, settings_for(fmt, out_dir))
    before = snapshot(out_dir)
    assert before and all(p.exists() for p in first.paths)
    # one worker: no other block is being written when the failure comes (that race has its own
    # test)
    plan = build_plan(failing_source(), settings_for(fmt, out_dir), threads=1)
    with pytest.raises(Boom):
        execute(plan, overwrite=True)
    assert hidden_temps(out_dir) == []
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_export_with_a_write_in_flight_leaves_no_temp_files(
    fmt, out_dir, small_blocks, monkeypatch
):
    """One block fails while another block's write is still running (a slow disk): once
    everything has settled, no temporary output may be left behind."""
    cls = TARGETS[fmt]
    original = cls.write
    lock = threading.Lock()
    calls = []
    stalled, failed, late_write_done = threading.Event(), threading.Event(), threading.Event()

    def slow_write(self, block, location):
        with lock:
            calls.append(location)
            n = len(calls)
        if n != 2:  # the first write goes through at once
            return original(self, block, location)
        stalled.set()  # the second one is still busy when a block fails
        failed.wait(5)
        try:
            threading.Event().wait(0.2)  # ... and finishes after the runner has reacted
            return original(self, block, location)
        finally:
            late_write_done.set()

    def before_failing():
        stalled.wait(5)
        failed.set()

    monkeypatch.setattr(cls, "write", slow_write)
    plan = build_plan(
        failing_source(fail_at_z=15, before_failing=before_failing),
        settings_for(fmt, out_dir),
        threads=2,
    )
    assert plan.nblocks == 4
    with pytest.raises(Boom):
        execute(plan)
    assert stalled.is_set(), "test set-up: no write was in flight when the block failed"
    assert late_write_done.wait(5)
    threading.Event().wait(0.1)
    assert hidden_temps(out_dir) == []
    assert [p for p in out_dir.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------
# HDF5 into an existing file


@pytest.fixture
def shared_h5(out_dir) -> Path:
    path = out_dir / "project.h5"
    with h5py.File(path, "w") as f:
        other = f.create_dataset("raw/other", data=np.arange(60, dtype=np.int16).reshape(3, 4, 5))
        other.attrs["note"] = "keep me"
        f.attrs["project"] = "shared"
    return path


def assert_other_intact(path: Path) -> None:
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(
            f["raw/other"][...], np.arange(60, dtype=np.int16).reshape(3, 4, 5)
        )
        assert f["raw/other"].attrs["note"] == "keep me"
        assert f.attrs["project"] == "shared"


def test_hdf5_export_adds_dataset_to_existing_file(shared_h5):
    data = make_data("uint8")
    result = export(
        data,
        ExportSettings(format="hdf5", output=f"{shared_h5}/results/exported", roi={"z": (0, 5)}),
    )
    assert result.output == shared_h5
    assert_other_intact(shared_h5)
    with h5py.File(shared_h5, "r") as f:
        np.testing.assert_array_equal(f["results/exported"][...], data[:5])
    assert hidden_temps(shared_h5.parent) == []


def test_hdf5_overwrite_replaces_only_its_dataset(shared_h5):
    first, second = make_data("uint8", seed=1), make_data("uint8", seed=2)
    target = f"{shared_h5}/results/exported"
    export(first, ExportSettings(format="hdf5", output=target))
    with pytest.raises(OutputExistsError):
        export(second, ExportSettings(format="hdf5", output=target))
    with h5py.File(shared_h5, "r") as f:
        np.testing.assert_array_equal(f["results/exported"][...], first)
    export(
        second[:7], ExportSettings(format="hdf5", output=target, axis_order="xyz"), overwrite=True
    )
    assert_other_intact(shared_h5)
    with h5py.File(shared_h5, "r") as f:
        np.testing.assert_array_equal(f["results/exported"][...], second[:7].transpose(2, 1, 0))
        assert set(f.keys()) == {"raw", "results"}
        assert set(f["results"].keys()) == {"exported"}
    assert hidden_temps(shared_h5.parent) == []


def test_hdf5_failed_export_into_existing_file_changes_nothing(shared_h5, small_blocks):
    before = shared_h5.read_bytes()
    plan = build_plan(
        failing_source(),
        ExportSettings(format="hdf5", output=f"{shared_h5}/results/exported", chunks={"z": 5}),
        threads=1,
    )
    with pytest.raises(Boom):
        execute(plan)
    assert shared_h5.read_bytes() == before
    assert_other_intact(shared_h5)
    assert hidden_temps(shared_h5.parent) == []
