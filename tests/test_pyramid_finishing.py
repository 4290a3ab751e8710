"""The OME-Zarr pyramid's finishing work: a cancel while the levels are built commits nothing; a
level whose one chunk's work exceeds the budget is built from smaller pieces (a gaussian level's
float64 windows in 128³ chunks); the cost of a sharded pyramid at a URL counts its shards, not its
chunks."""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.cli import cli_env
from lazyexport.errors import ExportCancelled
from lazyexport.formats import ome_zarr
from lazyexport.plan import ExportPlan, build_plan


def _source(tmp_path, shape=(64, 128, 128), chunks=(16, 64, 64)):
    src = tmp_path / "s.zarr"
    arr = zarr.create_array(str(src), shape=shape, chunks=chunks, dtype="uint16")
    arr[...] = (np.arange(math.prod(shape)) % 4099).astype("uint16").reshape(shape)
    return src


@pytest.mark.parametrize("method", ["mean", "gaussian"])
def test_a_cancel_while_the_pyramid_is_built_commits_nothing(tmp_path, method):
    src = _source(tmp_path)
    out = tmp_path / "o.ome.zarr"
    cancel = threading.Event()
    finishing = []

    def progress(p):
        # the blocks are all written (the first such event), then the pyramid's work is under
        # way (a later one): the user presses Cancel
        if p.blocks_done == p.blocks_total and p.fraction < 1:
            finishing.append(p.fraction)
            if len(finishing) > 1:
                cancel.set()

    settings = le.ExportSettings(
        format="ome-zarr", output=str(out), levels=4, downsample=method, chunks={"z": 16}
    )  # (4: mean makes level 1 in the blocks' pass, so levels 2 and 3 are the finishing work)
    with pytest.raises(ExportCancelled):
        le.export(str(src), settings, progress=progress, cancel=cancel)
    assert finishing, "the progress never reported the pyramid's work"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporary left either


def test_a_piece_is_halved_until_its_work_fits():
    assert ome_zarr.fitting_piece((128, 128, 128), 128**3) == (128, 128, 128)
    piece = ome_zarr.fitting_piece((128, 128, 128), 100_000)
    assert math.prod(piece) <= 100_000
    assert piece == (32, 32, 64)  # the longest axis halved first, so the piece stays near-cubic
    assert ome_zarr.fitting_piece((5, 3), 0) == (1, 1)


def test_a_gaussian_level_of_big_chunks_is_built_within_the_budget(tmp_path, monkeypatch):
    """A level's chunk of 64³ whose gaussian work (float64 windows) is ~40 MiB, with a pyramid
    budget of 4 MiB: every piece the level reads fits it, and the values are those of the whole
    level (scipy on the whole level, then the windows' means)."""
    from scipy import ndimage

    src = _source(tmp_path, shape=(128, 128, 128), chunks=(64, 64, 64))
    out = tmp_path / "o.ome.zarr"
    reads: list[int] = []
    real = ome_zarr.level_block

    def recording(read, region, shape, factors, method):
        reads.append(math.prod(s.stop - s.start for s in region))
        return real(read, region, shape, factors, method)

    monkeypatch.setattr(ome_zarr, "level_block", recording)
    monkeypatch.setattr(ExportPlan, "pyramid_budget", lambda self: 4 * 2**20)
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        levels=2,
        downsample="gaussian",
        chunks={"z": 64, "y": 64, "x": 64},
    )
    le.export(str(src), settings)
    itemsize = ome_zarr.work_bytes(2, (2, 2, 2), "gaussian")
    assert reads and max(reads) // 8 * itemsize <= 4 * 2**20  # (8 source pixels per output)
    assert len(reads) > 8  # more pieces than the level's 8 chunks
    level0 = np.asarray(zarr.open_array(str(out / "0"))[...])
    sigma = 2 * 2 / 6
    smooth = ndimage.gaussian_filter(level0.astype(np.float64), sigma, mode="reflect", truncate=4.0)
    expected = smooth.reshape(64, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5))
    got = np.asarray(zarr.open_array(str(out / "1"))[...]).astype(np.float64)
    # rounded to the nearest integer (a value at .5 may round either way by the last float bit)
    assert np.abs(got - expected).max() <= 0.5 + 1e-6


def test_the_cost_of_a_sharded_pyramid_counts_its_shards(tmp_path):
    src = _source(tmp_path, shape=(128, 128, 128), chunks=(32, 32, 32))
    out = tmp_path / "o.ome.zarr"
    settings = le.ExportSettings(
        format="ome-zarr",
        output=str(out),
        chunks={"z": 8, "y": 8, "x": 8},
        shards={"z": 32, "y": 32, "x": 32},
        levels=3,
    )
    plan = build_plan(le.open_source(str(src)), settings)
    objects = [
        math.prod(math.ceil(n / u) for n, u in zip(shape, unit))
        for shape, unit in plan.writer.chunk_objects(plan.spec)
    ]
    le.export(str(src), settings)
    files = [
        sum(1 for p in (out / str(k)).rglob("*") if p.is_file() and p.name != "zarr.json")
        for k in range(3)
    ]
    assert files == [64, 64, 1]  # level 1's shards cover a level-0 shard's region
    assert objects == files


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """``lazyexport formats | head -1``: no "export failed" line; the status a Unix tool's is."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyexport", "formats"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert "error" not in err and "Traceback" not in err
