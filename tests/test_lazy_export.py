"""``export(..., compute=False)``: a dask Delayed that writes the output (atomic finish included)
when computed; several computed in one ``dask.compute`` call give the outputs of separate
exports and decode each shared source chunk once."""

from __future__ import annotations

import dataclasses
import threading
import time

import dask
import dask.array as da
import h5py
import numpy as np
import pytest

import lazyexport as le
from helpers import hidden_temps, make_data, snapshot, write_zarr3
from lazyexport import chunkio
from lazyexport.errors import AlreadyComputedError, OutputExistsError
from lazyexport.run import ExportResult
from lazyexport.settings import ExportSettings

FORMATS = {"zarr": "o.zarr", "hdf5": "o.h5", "tiff-sequence": "seq/s_{slice_index}.tif"}
ROIS = [{"z": (0, 8)}, {"z": (4, 12), "y": (10, 40)}, {"z": (2, 10), "x": (0, 25)}]


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", (12, 40, 40))
    return write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 20, 20)).file, data


def _settings(tmp_path, where: str, fmt: str, roi) -> ExportSettings:
    return ExportSettings(
        format=fmt, roi=roi, output=str(tmp_path / where / FORMATS[fmt]), dtype="uint8",
        renormalize=((0, 65535), (0, 255)),
    )  # fmt: skip


def test_three_formats_in_one_compute_equal_separate_exports(tmp_path, source):
    path, _ = source
    lazy = [
        le.export(str(path), _settings(tmp_path, "lazy", fmt, roi), compute=False)
        for fmt, roi in zip(FORMATS, ROIS)
    ]
    assert not list((tmp_path / "lazy").rglob("o.*"))  # nothing visible before the compute
    results = dask.compute(*lazy)
    for (fmt, roi), result in zip(zip(FORMATS, ROIS), results):
        assert isinstance(result, ExportResult) and result.format == fmt
        eager = le.export(str(path), _settings(tmp_path, "eager", fmt, roi))
        np.testing.assert_array_equal(
            le.open_exported(result).values, le.open_exported(eager).values
        )
    assert not hidden_temps(tmp_path / "lazy")


def test_exports_computed_together_decode_each_shared_chunk_once(tmp_path, source, decodes):
    path, _ = source
    together = [
        le.export(str(path), _settings(tmp_path, f"a{i}", "zarr", roi), compute=False)
        for i, roi in enumerate(ROIS)
    ]
    dask.compute(*together)
    assert decodes and max(decodes.values()) == 1, decodes  # every chunk decoded once
    decodes.clear()
    for i, roi in enumerate(ROIS):  # one after the other: chunks in overlaps decode again
        dask.compute(le.export(str(path), _settings(tmp_path, f"b{i}", "zarr", roi), compute=False))
    assert max(decodes.values()) > 1


def test_an_existing_output_is_refused_when_the_graph_is_made(tmp_path, source):
    path, _ = source
    settings = _settings(tmp_path, "x", "zarr", ROIS[0])
    dask.compute(le.export(str(path), settings, compute=False))
    with pytest.raises(OutputExistsError):
        le.export(str(path), settings, compute=False)
    (result,) = dask.compute(le.export(str(path), settings, compute=False, overwrite=True))
    assert result.shape == (8, 40, 40)


def test_a_failed_graph_leaves_nothing_visible_and_the_next_export_cleans_up(
    tmp_path, source, monkeypatch
):
    path, _ = source
    settings = _settings(tmp_path, "f", "zarr", ROIS[1])
    lazy = le.export(str(path), settings, compute=False)

    def broken(self, *args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(chunkio.ChunkFiles, "_load", broken)
    with pytest.raises(OSError, match="disk on fire"):
        dask.compute(lazy)
    monkeypatch.undo()
    assert not (tmp_path / "f" / "o.zarr").exists() and hidden_temps(tmp_path / "f")
    le.export(str(path), settings)
    assert (tmp_path / "f" / "o.zarr").exists() and not hidden_temps(tmp_path / "f")


@pytest.mark.slow
def test_a_second_compute_on_other_processes_or_of_regions_changes_nothing(tmp_path, source):
    """The commit removes the export's mark, so a second computation finds it gone wherever it
    runs (worker processes share no memory with the first); each region's Delayed likewise."""
    path, _ = source
    lazy = le.export(str(path), _settings(tmp_path, "p", "zarr", ROIS[0]), compute=False)
    regions = le.export(
        str(path),
        ExportSettings(
            format="tiff-sequence", output=str(tmp_path / "r" / "{region}_{slice_index}.tif"),
            regions={"a": {"z": (0, 4)}, "b": {"z": (6, 9)}},
        ),
        compute=False,
    )  # fmt: skip
    dask.compute(lazy, *regions, scheduler="processes")
    before = snapshot(tmp_path)
    for again in (lazy, *regions):
        with pytest.raises(AlreadyComputedError, match="computed already"):
            dask.compute(again, scheduler="processes")
    assert snapshot(tmp_path) == before and not hidden_temps(tmp_path)


@pytest.mark.parametrize("option", [{"scheduler": "threads"}, {"cancel": threading.Event()}])
def test_options_the_caller_s_compute_cannot_honour_are_refused(tmp_path, source, option):
    path, _ = source
    settings = _settings(tmp_path, "r", "zarr", None)
    with pytest.raises(le.ExportError, match=f"compute=False exports take no {next(iter(option))}"):
        le.export(str(path), settings, compute=False, **option)
    assert not (tmp_path / "r").exists()


def test_the_time_counts_from_the_first_block_not_from_the_graph(tmp_path, source):
    path, data = source
    lazy = le.export(str(path), _settings(tmp_path, "t", "zarr", None), compute=False)
    time.sleep(1.5)  # the graph waits: not the export's time
    (result,) = dask.compute(lazy)
    assert 0 < result.seconds < 1.0, result.seconds


def test_a_dataset_added_to_an_hdf5_file_leaves_no_mark_and_commits_once(tmp_path, source):
    """A lazy export into an HDF5 file that holds other data adds its dataset beside them (the
    merge commit): it removes its mark like any other commit, so a second computation is the
    same clear error and nothing is left for ``clean`` (before: the mark stayed, and the second
    compute raised FileNotFoundError)."""
    path, _ = source
    out = tmp_path / "o.h5"
    with h5py.File(out, "w") as f:
        f["keep"] = np.arange(5)
    settings = dataclasses.replace(
        _settings(tmp_path, "", "hdf5", ROIS[0]), output=f"{out}/exported"
    )
    lazy = le.export(str(path), settings, compute=False)
    dask.compute(lazy, scheduler="threads")
    before = snapshot(tmp_path)
    assert not hidden_temps(tmp_path)
    with pytest.raises(AlreadyComputedError, match="computed already"):
        dask.compute(lazy, scheduler="threads")
    assert snapshot(tmp_path) == before
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["exported", "keep"] and f["keep"][...].tolist() == list(range(5))


def test_a_cutout_computes_only_the_source_chunks_it_overlaps(tmp_path):
    """The job is handed to the block tasks opaquely: were dask to traverse it, the plan's source
    and result arrays inside would become inputs of every task and the whole source be computed
    (before: all 32 slices for a cutout of two)."""
    calls, lock = [], threading.Lock()

    def count(block):
        if block.size > 1:  # (dask and the planner probe it with tiny blocks)
            with lock:
                calls.append(block.shape)
        return block

    array = da.ones((32, 64, 64), dtype="uint16", chunks=(1, 64, 64)).map_blocks(count)
    settings = ExportSettings(format="zarr", roi={"z": (5, 7)}, output=str(tmp_path / "a.zarr"))
    (result,) = dask.compute(le.export(array, settings, compute=False), scheduler="threads")
    assert len(calls) == 2, calls
    assert (le.open_exported(result).values == 1).all()
