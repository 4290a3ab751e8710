"""The promises every output format keeps, one suite generated from the format registry: a
format added to :mod:`lazyexport.formats` (even one registered by a test plugin, see the last
test) gets every row without this file being edited.

Per format: the export of a cutout that starts and stops inside source chunks equals numpy,
read back by an independent reader where one is known (h5py, zarr, tensorstore, tifffile,
Pillow, numpy; otherwise lazyexport's own); a failed export leaves nothing; an existing output
is never replaced without ``overwrite``; a cancelled ``--resume`` export continues to the same
result as a clean one, or -- where the format's capabilities say it cannot resume -- restarts
with a note and the same result; the export on worker processes (single-writer formats encode
there and write here) equals the threaded one; a ``compute=False`` export computed twice commits
once (the second computation is one error and changes nothing); a directory at the output that
holds what the format does not write is refused, with or without ``overwrite``, and by a delete;
the options it declares reach it (``spec.options``) and are refused by the other formats.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

import lazyexport as le
from helpers import ROOT, cli_env, hidden_temps, snapshot
from lazyexport.errors import AlreadyComputedError, ExportCancelled, OutputExistsError
from lazyexport.formats import formats, get_writer
from test_random_e2e import read_back

BLOCK_BYTES = 4096  # at most two slices of the cutout per block: exports of several blocks


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    import importlib

    monkeypatch.setenv("LAZYEXPORT_MAX_BLOCK_BYTES", str(BLOCK_BYTES))
    monkeypatch.setattr(importlib.import_module("lazyexport.plan"), "MAX_BLOCK_BYTES", BLOCK_BYTES)


FORMATS = formats()
SHAPE, CHUNKS = (12, 40, 36), (5, 16, 16)
ROI = {"z": (2, 11), "y": (3, 37), "x": (5, 33)}  # starts and stops inside source chunks
DATA = (
    (np.arange(np.prod(SHAPE), dtype=np.uint64) * 2654435761 % 65521)
    .astype(np.uint16)
    .reshape(SHAPE)
)
EXPECTED = DATA[2:11, 3:37, 5:33]


class Unreadable(RuntimeError):
    pass


def source(fail_at: int | None = None) -> da.Array:
    """The test volume as a dask array chunked CHUNKS; a block starting at z=``fail_at`` raises."""

    def block(x, block_info=None):
        if fail_at is not None and block_info[0]["array-location"][0][0] == fail_at:
            raise Unreadable("this block cannot be read")
        return x

    array = da.from_array(DATA, chunks=CHUNKS)
    return array if fail_at is None else array.map_blocks(block, dtype=DATA.dtype)


def settings(fmt: str, out: Path) -> le.ExportSettings:
    name = "out_{slice_index}" if get_writer(fmt).capabilities.sequence else "out"
    return le.ExportSettings(format=fmt, roi=ROI, output=str(out / name), chunks={"z": 1})


def export(fmt: str, out: Path, src=None, **options) -> Any:  # a Delayed with compute=False
    return le.export(
        le.open_source(source() if src is None else src, axes="zyx"),
        settings(fmt, out),
        memory_limit="16MiB",
        **options,
    )


def stored(result) -> np.ndarray:
    """The exported values, read by an independent reader where the suite knows one."""
    try:
        arrays, _ = read_back(result, None)
    except AssertionError:  # a format the independent readers do not know
        return np.asarray(le.open_exported(result))
    return np.stack(arrays) if len(arrays) > 1 else arrays[0]


def finals(result) -> list[Path]:
    return [Path(p) for p in result.paths]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_mid_chunk_cutout_equals_numpy(fmt, tmp_path):
    result = export(fmt, tmp_path)
    assert result.format == fmt
    np.testing.assert_array_equal(stored(result).reshape(EXPECTED.shape), EXPECTED)
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failed_export_leaves_nothing(fmt, tmp_path):
    with pytest.raises(Unreadable, match="cannot be read"):
        export(fmt, tmp_path, src=source(fail_at=5))
    assert list(tmp_path.iterdir()) == []  # no output, no temporary


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_output_is_replaced_only_with_overwrite(fmt, tmp_path):
    first = export(fmt, tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError):
        export(fmt, tmp_path, src=da.zeros(SHAPE, dtype=DATA.dtype, chunks=CHUNKS))
    assert snapshot(tmp_path) == before  # untouched
    again = export(
        fmt, tmp_path, src=da.zeros(SHAPE, dtype=DATA.dtype, chunks=CHUNKS), overwrite=True
    )
    assert finals(again) == finals(first) and not stored(again).any()
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_cancelled_resume_export_ends_as_a_clean_one(fmt, tmp_path):
    cancel, written = threading.Event(), []

    def stop_after_two(event):
        written.append(event.blocks_done)
        if event.blocks_done >= 2:
            cancel.set()

    with pytest.raises(ExportCancelled):
        export(fmt, tmp_path, progress=stop_after_two, cancel=cancel, resume=True)
    total = get_plan(fmt, tmp_path).nblocks
    assert total > 2 and not any(p.exists() for p in get_plan(fmt, tmp_path).paths)  # nothing final
    events: list = []
    result = export(fmt, tmp_path, resume=True, progress=events.append)
    if get_writer(fmt).capabilities.resumable:
        assert events[0].blocks_done > 1 and len(events) < total  # the finished blocks are kept
    else:
        assert any("cannot resume; exported from the start" in n for n in result.notes)
        assert len(events) == total
    np.testing.assert_array_equal(stored(result).reshape(EXPECTED.shape), EXPECTED)
    assert hidden_temps(tmp_path) == []


def get_plan(fmt: str, out: Path):
    return le.plan(le.open_source(source(), axes="zyx"), settings(fmt, out), memory_limit="16MiB")


@pytest.mark.parametrize("fmt", FORMATS)
def test_worker_processes_write_what_threads_write(fmt, tmp_path):
    """Parallel writers write from the workers; single-writer formats (their capabilities say
    so) encode there and store in the exporting process. Either way the result is the same."""
    threaded = stored(export(fmt, tmp_path / "threads"))
    result = export(fmt, tmp_path / "processes", scheduler="processes")
    np.testing.assert_array_equal(stored(result), threaded)
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lazy_export_computed_twice_commits_once(fmt, tmp_path):
    """A compute=False export commits once: computing it again is one clear error and changes
    nothing (tests/test_lazy_export.py: on other processes too)."""
    lazy = export(fmt, tmp_path, compute=False)
    result = lazy.compute(scheduler="synchronous")
    before = snapshot(tmp_path)
    for scheduler in ("synchronous", "threads"):
        with pytest.raises(AlreadyComputedError, match="computed already"):
            lazy.compute(scheduler=scheduler)
        assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(stored(result).reshape(EXPECTED.shape), EXPECTED)
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_foreign_directory_at_the_output_is_left_alone(fmt, tmp_path):
    """A directory at the output that is not this format's (someone's files) is refused in one
    line by an export, --overwrite and compute=False too, and by a delete: nothing changes."""
    plan = get_plan(fmt, tmp_path)
    theirs = plan.paths[0]
    theirs.mkdir(parents=True)
    (theirs / "thesis.txt").write_text("years of work")
    before = snapshot(tmp_path)
    for options in ({}, {"overwrite": True}, {"overwrite": True, "compute": False}):
        with pytest.raises(OutputExistsError, match="lazyexport did not write it") as caught:
            export(fmt, tmp_path, **options)
        assert "\n" not in str(caught.value) and str(theirs) in str(caught.value)
    with pytest.raises(OutputExistsError, match="lazyexport did not write it"):
        plan.writer.delete(plan.spec)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_its_declared_options_reach_it_and_are_refused_elsewhere(fmt, tmp_path):
    """The options a format declares (``Writer.options``) are among those it reads (``lazyexport
    formats`` lists them) and reach it in ``spec.options``, at their defaults when not given; a
    format that does not declare one refuses it in one line."""
    writer = get_writer(fmt)
    assert {o.name for o in writer.options} <= writer.capabilities.options
    spec = get_plan(fmt, tmp_path).spec
    assert dict(spec.options) == {o.name: o.default for o in writer.options}
    for option in (o for o in writer.options if o.default is not None):
        for other in (f for f in FORMATS if option not in get_writer(f).options):
            with pytest.raises(le.ExportError, match="does not apply to format") as caught:
                le.ExportSettings(format=other, options={option.name: option.default})
            assert "\n" not in str(caught.value)


def test_a_format_registered_by_a_plugin_gets_every_row(tmp_path):
    """A throwaway writer registered by a pytest plugin (tests/helpers/contract_plugin.py) is
    collected and passes every row above, without this file naming it."""
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
    rows = len(
        [
            name
            for name in globals()
            if name.startswith("test_")
            and name != "test_a_format_registered_by_a_plugin_gets_every_row"
        ]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(Path(__file__)),
            "-p",
            "helpers.contract_plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "npy-contract",
            f"--basetemp={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"{rows} passed" in done.stdout, done.stdout[-2000:]
