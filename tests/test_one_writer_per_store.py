"""One run writes an output in an object store at a time. A store has no rename, so a run
writes the output's chunks in place: a second run of the same output would mix its chunks
into the first's. While a live run holds the output, any other export of it (resumed or not,
from this process or another) is refused, `lazyexport clean` leaves the running run's files
alone, and a refused run leaves the running one registered."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import dask
import numpy as np
import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport.errors import OutputBusyError
from lazyexport.settings import ExportSettings
from lazyexport.storage.names import clean_named


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with s3_bucket("onewriter") as server:
        yield server


@pytest.fixture
def url(request) -> str:
    return f"s3://onewriter/{key_prefix(request.node.name)}/o.zarr"


@pytest.fixture
def source(tmp_path, small_blocks) -> tuple[str, np.ndarray]:
    data = make_data("uint16", (12, 256, 512))  # a block per slice (the small_blocks fixture)
    return str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file), data


def _paused(run: Callable[[Callable], Any]) -> tuple[threading.Thread, threading.Event, list]:
    """Start ``run(progress)`` in a thread, paused after its third block; returns the thread,
    the gate that lets it go on, and where its result (or error) goes."""
    gate, reached, result = threading.Event(), threading.Event(), []

    def progress(event) -> None:
        if event.blocks_done == 3:
            reached.set()
            gate.wait(60)

    def target() -> None:
        try:
            result.append(run(progress))
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    assert reached.wait(60)
    return thread, gate, result


def _settings(url: str) -> ExportSettings:
    return ExportSettings(format="zarr", output=url, chunks={"z": 1})


@pytest.mark.parametrize("first", ["compute=True", "compute=False"])
def test_other_exports_are_refused_while_a_resume_run_writes_the_store(s3, url, source, first):
    """Before: a plain ``overwrite=True`` export ran beside a paused ``--resume`` run and the
    visible output mixed both (and a refused second ``--resume`` run of the same plan, in the
    same process, unregistered the first, whose files the next export then took for orphans)."""
    src, data = source
    settings = _settings(url)

    def run(progress):
        if first == "compute=True":
            return le.export(src, settings, resume=True, progress=progress, scheduler="synchronous")
        lazy = le.export(src, settings, resume=True, progress=progress, compute=False)
        return dask.compute(lazy, scheduler="synchronous")[0]

    thread, gate, result = _paused(run)
    try:
        with pytest.raises(OutputBusyError, match="runs now"):
            le.export(src, settings, resume=True, scheduler="synchronous")
        zeros = np.zeros(data.shape, data.dtype)
        for values in (src, zeros):
            with pytest.raises(OutputBusyError, match="another export of .* runs now"):
                le.export(values, settings, overwrite=True, scheduler="synchronous")
    finally:
        gate.set()
        thread.join(60)
    assert not isinstance(result[0], Exception), result[0]
    np.testing.assert_array_equal(le.open_source(url).values, data)
    assert not [k for k in s3.keys("onewriter", url.split("/")[3]) if "lazyexport" in k]


def test_clean_leaves_the_mark_of_a_running_lazy_resume_export_alone(s3, url, source):
    """Before: ``lazyexport clean URL`` took the ``.lazy`` mark of a computing ``compute=False,
    resume=True`` export for an orphan and removed it; the computation then failed with
    'computed already'."""
    src, data = source

    def run(progress):
        lazy = le.export(src, _settings(url), resume=True, progress=progress, compute=False)
        return dask.compute(lazy, scheduler="synchronous")[0]

    thread, gate, result = _paused(run)
    try:
        done, _kept = clean_named(url, dry_run=False)
    finally:
        gate.set()
        thread.join(60)
    assert done == []
    assert not isinstance(result[0], Exception), result[0]
    np.testing.assert_array_equal(le.open_source(url).values, data)
