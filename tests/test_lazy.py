"""Laziness (docs/usage.md): opening reads no pixel; an export reads and computes only the source
chunks that intersect the ROI."""

from __future__ import annotations

import itertools
import threading

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import lazyexport.sources.base as sources_base
from helpers import WRITERS, make_data
from helpers.zarr_nodes import read_all
from lazyexport import ExportSettings, describe, export, open_exported, open_source, plan_steps
from lazyexport.chunkio import ChunkFiles
from lazyexport.errors import SettingsError
from lazyexport.execution import executors
from lazyexport.plan import build_plan
from lazyexport.sources.base import FileArray, from_file_array, labeled

SHAPE = (20, 30, 40)
CHUNKS = (5, 10, 10)
ROI = {"z": (3, 8), "y": (12, -5), "x": (-27, 17)}  # z 3..8, y 12..25, x 13..17
ROI_ABS = ((3, 8), (12, 25), (13, 17))


def chunk_grid(shape, chunks):
    """Every chunk of a regular grid as ((start, stop), ...) per axis."""
    per_axis = [[(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(shape, chunks)]
    return [tuple(loc) for loc in itertools.product(*per_axis)]


def intersects(region, roi) -> bool:
    return all(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in zip(region, roi))


def inside(region, box) -> bool:
    return all(b0 <= a0 and a1 <= b1 for (a0, a1), (b0, b1) in zip(region, box))


INTERSECTING = {loc for loc in chunk_grid(SHAPE, CHUNKS) if intersects(loc, ROI_ABS)}


def coordinate_block(location) -> np.ndarray:
    """A block whose values encode their coordinates (exact in float32)."""
    (z0, z1), (y0, y1), (x0, x1) = location
    z, y, x = np.meshgrid(np.arange(z0, z1), np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
    return (z * 10000 + y * 100 + x).astype(np.float32)


FULL = coordinate_block(((0, SHAPE[0]), (0, SHAPE[1]), (0, SHAPE[2])))


class Recorder:
    def __init__(self):
        self.locations: list[tuple] = []
        self.lock = threading.Lock()

    def block(self, block_info=None):
        location = tuple(tuple(int(v) for v in loc) for loc in block_info[None]["array-location"])
        with self.lock:
            self.locations.append(location)
        return coordinate_block(location)


def recorded_source(recorder: Recorder) -> xr.DataArray:
    data = da.map_blocks(
        recorder.block,
        dtype=np.float32,
        chunks=da.core.normalize_chunks(CHUNKS, SHAPE),
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    return xr.DataArray(data, dims=("z", "y", "x"))


OUTPUTS = {"hdf5": "out.h5", "zarr": "out.zarr", "tiff-sequence": "slices/z{slice_index}.tif"}


def test_intersecting_chunk_count_is_what_the_roi_needs():
    # the test's own arithmetic: z chunks 0-1, y chunks 1-2, x chunk 1
    assert len(INTERSECTING) == 2 * 2 * 1


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_export_computes_only_chunks_intersecting_roi(fmt, out_dir):
    rec = Recorder()
    settings = ExportSettings(
        roi=ROI,
        renormalize=((0, 250000), (0, 1)),
        dtype="float32",
        axis_order="zyxc",
        format=fmt,
        output=f"{out_dir}/{OUTPUTS[fmt]}",
    )
    result = export(recorded_source(rec), settings)
    assert rec.locations, "the block function was never called"
    for loc in rec.locations:
        assert intersects(loc, ROI_ABS), f"computed block {loc} lies outside the ROI {ROI_ABS}"
    assert set(rec.locations) == INTERSECTING
    assert len(rec.locations) == len(INTERSECTING), "a source chunk was computed more than once"
    # and what was written is right
    ref = FULL[3:8, 12:25, 13:17] * np.float32(1) / np.float32(250000)
    back = open_exported(result)
    assert back.shape == (5, 13, 4, 1)
    np.testing.assert_allclose(back.values[..., 0], ref, rtol=1e-6)


def test_plan_and_open_compute_nothing():
    rec = Recorder()
    src = open_source(recorded_source(rec))
    describe(src)
    build_plan(
        src,
        ExportSettings(
            roi=ROI,
            renormalize=((0, 1), (0, 255)),
            dtype="uint8",
            format="zarr",
            output="never-written.zarr",
        ),
    )
    assert rec.locations == []


def test_data_range_reads_only_the_roi_once_more(out_dir):
    """Without an input range a float source's min/max inside the ROI is read: once more, and only
    there."""
    rec = Recorder()
    result = export(
        recorded_source(rec),
        ExportSettings(
            roi=ROI,
            renormalize=(None, (0, 255)),
            dtype="uint8",
            format="zarr",
            output=f"{out_dir}/r.zarr",
        ),
    )
    assert set(rec.locations) == INTERSECTING
    assert len(rec.locations) == 2 * len(INTERSECTING)
    roi = FULL[3:8, 12:25, 13:17]
    lo, hi = roi.min(), roi.max()
    f = np.float32
    ref = np.clip(np.rint((roi - f(lo)) * f(255) / f(hi - lo)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_all(zarr.open(str(result.output), mode="r")), ref)
    assert result.notes


@pytest.mark.parametrize("group", [1000, 4 * 16 * 16 * 4, plan_steps.RANGE_READ_BYTES])
def test_the_min_max_pass_over_a_files_units_ignores_nan_and_equals_numpys(
    tmp_path, monkeypatch, group
):
    """Renormalize's min/max of a local file is found in groups of its units (each group
    reduced as it is read; here one unit a group, where a unit is bigger or as big as a group,
    and all in one): NaN is ignored, a unit of NaN only is skipped, a cutout across units' edges
    or in the last, partial units reads only its own values, and the result equals numpy's and
    the dask pass's."""
    monkeypatch.setattr(plan_steps, "RANGE_READ_BYTES", group)
    rng = np.random.default_rng(3)
    data = rng.normal(100, 30, (20, 40, 40)).astype("float32")
    data[4:8, 16:32, 16:32] = np.nan  # one whole unit
    data[rng.random(data.shape) < 0.05] = np.nan
    data[0, 0, 0], data[19, 39, 39] = -1e6, 1e6  # outside the cutout below
    zarr.create_array(str(tmp_path / "f.zarr"), data=data, chunks=(4, 16, 16))
    src = open_source(tmp_path / "f.zarr")
    roi = {"z": (3, 17), "y": (5, 33), "x": (1, 39)}
    want = data[3:17, 5:33, 1:39]
    found = plan_steps.unit_extremes(src, roi)
    assert found == (np.nanmin(want), np.nanmax(want))
    assert found[0].dtype == np.float32 and -1e6 < found[0] < found[1] < 1e6
    assert plan_steps.data_range(found, []) == plan_steps.data_range(
        plan_steps.cutout_reads(src, roi), []
    )
    for corner in ({"z": (16, 20), "y": (33, 40), "x": (20, 40)}, {"z": (19, 20), "y": (39, 40)}):
        near_end = {**roi, **corner}
        want = data[tuple(slice(*near_end[d]) for d in "zyx")]
        assert plan_steps.unit_extremes(src, near_end) == (np.nanmin(want), np.nanmax(want))
    nan_only = {"z": (4, 8), "y": (16, 32), "x": (16, 32)}
    nans = plan_steps.unit_extremes(src, nan_only)
    assert nans is not None and all(np.isnan(v) for v in nans)
    with pytest.raises(SettingsError, match="no finite values"):
        build_plan(src, ExportSettings(roi=nan_only, renormalize=(None, (0, 255)), dtype="uint8"))
    windows: list[int] = []
    threads = executors.Threads

    def counted(workers: int):
        windows.append(workers)
        return threads(workers)

    monkeypatch.setattr(executors, "Threads", counted)
    for limit in (None, 1):  # a budget too small for two groups: one at a time
        assert plan_steps.unit_extremes(src, roi, threads=3, memory_limit=limit) == found
    assert windows == [3, 1]
    at_a_url = src.copy()
    at_a_url.attrs["source"] = "s3://bucket/f.zarr"  # read by the dask pass, many units a task
    assert plan_steps.unit_extremes(at_a_url, roi) is None


# ---------------------------------------------------------------------------------------------
# file arrays


class RecordingArray(FileArray):
    """A numpy-backed FileArray that records every region dask reads from it."""

    def __init__(self, data: np.ndarray, path):
        super().__init__(path, data.shape, data.dtype)
        self.data = data
        self.reads: list[tuple] = []
        self.read_lock = threading.Lock()

    def _open(self):
        return self.data

    def __getitem__(self, key):
        region = tuple(sl.indices(n)[:2] for sl, n in zip(key, self.shape))
        with self.read_lock:
            self.reads.append(region)
        return super().__getitem__(key)


def chunk_hull(roi, chunks, shape):
    """The box covered by the chunks that intersect ``roi``."""
    return tuple(((a // c) * c, min(-(-b // c) * c, n)) for (a, b), c, n in zip(roi, chunks, shape))


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_file_array_reads_only_chunks_intersecting_roi(fmt, monkeypatch, tmp_path, out_dir):
    data = make_data("uint16")
    arr = RecordingArray(data, tmp_path / "fake.raw")
    # dask chunks = the native chunks, as they would be for a large file
    monkeypatch.setattr(sources_base, "CHUNK_TARGET_BYTES", int(np.prod(CHUNKS)) * data.itemsize)
    darr = from_file_array(arr, CHUNKS)
    assert darr.chunks == da.core.normalize_chunks(CHUNKS, SHAPE)
    source = labeled(darr, "zyx", None)
    result = export(
        source,
        ExportSettings(
            roi=ROI,
            dtype="uint8",
            axis_order="czyx",
            format=fmt,
            output=f"{out_dir}/{OUTPUTS[fmt]}",
        ),
    )
    assert arr.reads
    hull = chunk_hull(ROI_ABS, CHUNKS, SHAPE)
    for region in arr.reads:
        assert intersects(region, ROI_ABS), f"read {region} does not touch the ROI {ROI_ABS}"
        assert inside(region, hull), f"read {region} goes beyond the chunks the ROI needs ({hull})"
    touched = {
        loc for loc in chunk_grid(SHAPE, CHUNKS) if any(intersects(loc, r) for r in arr.reads)
    }
    assert touched == INTERSECTING
    assert len(arr.reads) == len(INTERSECTING)
    ref = np.clip(data[3:8, 12:25, 13:17], 0, 255).astype(np.uint8)[np.newaxis]
    np.testing.assert_array_equal(open_exported(result).values, ref)


class ReadCounter:
    """Counts pixel reads through every path a source can take to its file."""

    def __init__(self, monkeypatch):
        self.regions: list = []
        self.lock = threading.Lock()
        for cls, name in (
            (FileArray, "__getitem__"),
            (h5py.Dataset, "__getitem__"),
            (zarr.Array, "__getitem__"),
            (ChunkFiles, "__getitem__"),
            (ChunkFiles, "read_into"),
            (tifffile.TiffPage, "asarray"),
        ):
            monkeypatch.setattr(cls, name, self._wrap(getattr(cls, name)))

    def _wrap(self, original):
        counter = self

        def wrapper(obj, *args, **kwargs):
            with counter.lock:
                counter.regions.append((type(obj).__name__, args[0] if args else None))
            return original(obj, *args, **kwargs)

        return wrapper


@pytest.mark.parametrize("kind", list(WRITERS))
def test_open_source_reads_no_pixels(kind, monkeypatch, src_dir):
    src = WRITERS[kind](src_dir, make_data("uint8"))
    counter = ReadCounter(monkeypatch)
    arr = open_source(src.spec)
    describe(src.spec)
    build_plan(
        src.spec,
        ExportSettings(
            roi=ROI,
            renormalize=((0, 255), (0, 1)),
            format="zarr",
            output=str(src_dir / "plan-only.zarr"),
        ),
    )
    assert counter.regions == []
    # the counter does see reads: a cutout's values come through it
    np.testing.assert_array_equal(arr.isel(z=slice(0, 2)).values, src.data[:2])
    assert counter.regions


def _region_of(key, shape):
    if not isinstance(key, tuple):
        key = (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    return tuple(sl.indices(n)[:2] for sl, n in zip(key, shape))


@pytest.mark.parametrize("kind", ["hdf5", "npy", "tiff", "zarr3"])
def test_file_source_export_reads_nothing_outside_roi(kind, monkeypatch, src_dir, out_dir):
    """Through ``open_source``: every region read from the file lies inside the ROI, and the
    reads cover the ROI."""
    data = make_data("uint16")
    src = WRITERS[kind](src_dir, data)
    reads: list[tuple] = []
    lock = threading.Lock()
    cls = (
        ChunkFiles if kind == "zarr3" else FileArray
    )  # zarr arrays are read through their chunk files
    original = cls.__getitem__

    def recording_getitem(obj, key):
        if kind == "zarr3" and obj.shape != SHAPE:
            return original(obj, key)
        with lock:
            reads.append(_region_of(key, SHAPE))
        return original(obj, key)

    monkeypatch.setattr(cls, "__getitem__", recording_getitem)
    if kind == "zarr3":  # a region decoded straight into a block is a read too
        into = ChunkFiles.read_into

        def recording_into(obj, out, key):
            if obj.shape == SHAPE:
                with lock:
                    reads.append(_region_of(key, SHAPE))
            return into(obj, out, key)

        monkeypatch.setattr(ChunkFiles, "read_into", recording_into)
    result = export(
        src.spec,
        ExportSettings(roi=ROI, axis_order="xyz", format="hdf5", output=f"{out_dir}/out.h5"),
    )
    monkeypatch.undo()
    assert reads
    for region in reads:
        assert inside(region, ROI_ABS), f"read {region} lies (partly) outside the ROI {ROI_ABS}"
    covered = np.zeros(SHAPE, dtype=bool)
    for region in reads:
        covered[tuple(slice(*r) for r in region)] = True
    roi_mask = np.zeros(SHAPE, dtype=bool)
    roi_mask[3:8, 12:25, 13:17] = True
    np.testing.assert_array_equal(covered, roi_mask)
    with h5py.File(result.output, "r") as f:
        np.testing.assert_array_equal(
            f["exported_data"][...], data[3:8, 12:25, 13:17].transpose(2, 1, 0)
        )
