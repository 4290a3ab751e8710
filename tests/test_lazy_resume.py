"""``export(..., compute=False, resume=True)``: the computation claims the output as
``compute=True`` does (atomically: of two runs, one wins) and continues from the journal an
interrupted run kept (cancelled, failed or killed); building the Delayed touches no output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest

import lazyexport as le
from helpers import cli_env, hidden_temps, make_data, snapshot, write_zarr3
from lazyexport.errors import AlreadyComputedError, ExportCancelled, OutputBusyError
from lazyexport.formats.zarr import ZarrTarget
from lazyexport.run import Progress
from lazyexport.settings import ExportSettings

SHAPE = (12, 256, 512)  # 12 blocks of one 256 KiB slice with small_blocks


@pytest.fixture
def source(tmp_path, small_blocks):
    data = make_data("uint16", SHAPE)
    return str(write_zarr3(tmp_path / "src.zarr", data, chunks=(1, 256, 512)).file), data


def _settings(tmp_path) -> ExportSettings:
    return ExportSettings(format="zarr", output=str(tmp_path / "out" / "o.zarr"), chunks={"z": 1})


@pytest.fixture
def writes(monkeypatch):
    """The block writes of Zarr targets in this process, counted."""
    counted, lock, original = [], threading.Lock(), ZarrTarget.write

    def write(self, block, location):
        with lock:
            counted.append(location)
        return original(self, block, location)

    monkeypatch.setattr(ZarrTarget, "write", write)
    return counted


def _cancelled_after(source, settings, blocks: int) -> None:
    """A compute=True resume export cancelled after ``blocks`` blocks (it keeps its journal)."""
    cancel = threading.Event()

    def progress(event):
        if event.blocks_done >= blocks:
            cancel.set()

    with pytest.raises(ExportCancelled):
        le.export(
            source, settings, resume=True, cancel=cancel, progress=progress,
            scheduler="synchronous",
        )  # fmt: skip


def test_a_lazy_resume_continues_what_an_interrupted_run_kept(tmp_path, source, writes):
    path, data = source
    settings = _settings(tmp_path)
    _cancelled_after(path, settings, 5)
    first = len(writes)
    assert 5 <= first < 12 and hidden_temps(tmp_path / "out")
    events: list[Progress] = []
    lazy = le.export(path, settings, compute=False, resume=True, progress=events.append)
    (result,) = dask.compute(lazy, scheduler="threads")
    assert len(writes) - first == 12 - first  # only the blocks the journal did not list
    assert len(events) == 12 and max(e.blocks_done for e in events) == 12
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_building_a_lazy_resume_export_touches_no_output(tmp_path, source):
    """Only the mark is made: the kept temporary output and journal stay as they were until
    the computation claims them."""
    path, data = source
    settings = _settings(tmp_path)
    _cancelled_after(path, settings, 4)
    before = snapshot(tmp_path / "out")
    lazy = le.export(path, settings, compute=False, resume=True)
    after = snapshot(tmp_path / "out")
    added = sorted(set(after) - set(before))
    assert [k.rpartition(".")[2] for k in added] == ["lazy"]
    assert {k: v for k, v in after.items() if k not in added} == before
    (result,) = dask.compute(lazy, scheduler="synchronous")
    np.testing.assert_array_equal(le.open_exported(result).values, data)


def test_a_running_lazy_resume_export_holds_its_claim(tmp_path, source):
    """While a compute=False resume export is computed (paused after 3 blocks), a compute=True
    resume export of the same plan is refused; the lazy one then commits the whole output
    (before: it claimed nothing, and the other run could take its temporary output)."""
    path, data = source
    settings = _settings(tmp_path)
    gate, paused, results, errors = threading.Event(), threading.Event(), [], []

    def progress(event):
        if event.blocks_done == 3:
            paused.set()
            gate.wait(60)

    lazy = le.export(path, settings, compute=False, resume=True, progress=progress)

    def first():
        try:
            results.extend(dask.compute(lazy, scheduler="synchronous"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(60)
        with pytest.raises(OutputBusyError, match="another --resume export of .* runs now"):
            le.export(path, settings, resume=True, scheduler="synchronous")
    finally:
        gate.set()
        thread.join()
    assert not errors
    assert (tmp_path / "out" / "o.zarr" / "zarr.json").exists()
    np.testing.assert_array_equal(le.open_exported(results[0]).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_of_two_lazy_resume_exports_computed_at_once_one_wins(tmp_path, source):
    path, data = source
    settings = _settings(tmp_path)
    gate, paused, results, errors = threading.Event(), threading.Event(), [], []

    def progress(event):
        if event.blocks_done == 2:
            paused.set()
            gate.wait(60)

    one = le.export(path, settings, compute=False, resume=True, progress=progress)
    two = le.export(path, settings, compute=False, resume=True)

    def first():
        try:
            results.extend(dask.compute(one, scheduler="threads"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(60)
        with pytest.raises(OutputBusyError):
            dask.compute(two, scheduler="threads")
    finally:
        gate.set()
        thread.join()
    assert not errors
    np.testing.assert_array_equal(le.open_exported(results[0]).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_a_lazy_resume_export_computed_twice_commits_once(tmp_path, source):
    path, data = source
    lazy = le.export(path, _settings(tmp_path), compute=False, resume=True)
    dask.compute(lazy, scheduler="threads")
    before = snapshot(tmp_path / "out")
    for scheduler in ("synchronous", "threads"):
        with pytest.raises(AlreadyComputedError, match="computed already"):
            dask.compute(lazy, scheduler=scheduler)
        assert snapshot(tmp_path / "out") == before
    assert not hidden_temps(tmp_path / "out")


_KILLED = """
import sys, time, dask, lazyexport as le
from lazyexport.settings import ExportSettings
def progress(event):
    if event.blocks_done == 4:
        print("written", flush=True)
        time.sleep(600)
settings = ExportSettings(format="zarr", output=sys.argv[2], chunks={"z": 1})
lazy = le.export(sys.argv[1], settings, compute=False, resume=True, progress=progress)
dask.compute(lazy, scheduler="synchronous")
"""


def test_a_killed_lazy_resume_export_is_continued(tmp_path, source, writes):
    """A compute=False resume export killed (SIGKILL) after 4 blocks: the next one (lazy too)
    takes over its claim (its process is gone) and writes only the blocks it did not."""
    path, data = source
    settings = _settings(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED), path, str(settings.output)],
        env=cli_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    time.sleep(0.1)
    assert any(p.name.endswith(".owner") for p in hidden_temps(tmp_path / "out"))
    lazy = le.export(path, settings, compute=False, resume=True)
    (result,) = dask.compute(lazy, scheduler="threads")
    assert 0 < len(writes) <= 12 - 4
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_a_lazy_overwrite_replaces_the_output_only_when_computed(tmp_path, source):
    path, data = source
    settings = _settings(tmp_path)
    le.export(np.zeros(SHAPE, dtype="uint16"), settings)
    before = snapshot(tmp_path / "out")
    lazy = le.export(path, settings, compute=False, overwrite=True, resume=True)
    after = snapshot(tmp_path / "out")
    assert {k: v for k, v in after.items() if not k.endswith(".lazy")} == before
    (result,) = dask.compute(lazy, scheduler="threads")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")


_KILLED_COMMITTING = """
import os, signal, sys
import lazyexport as le
from lazyexport.storage import local as storage

real_remove, written = storage.remove, [False]


def remove(path):  # the run dies as it removes its journal once every block is written
    if written[0] and str(path).endswith(".blocks"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_remove(path)


def progress(event):
    written[0] = event.blocks_done == event.blocks_total


storage.remove = remove
settings = le.ExportSettings(format="tiff-sequence", output=sys.argv[2], dtype="uint8")
le.export(sys.argv[1], settings, resume=True, progress=progress)
"""


def test_a_lazy_resume_finishes_a_commit_a_killed_run_began(tmp_path):
    """A resume run killed in its commit (its record left, its outputs renamed): the lazy
    export is not refused as "exists" and its computation finishes that commit."""
    data = np.random.default_rng(3).integers(0, 255, (6, 40, 50)).astype("uint8")
    np.save(tmp_path / "v.npy", data)
    out = str(tmp_path / "o_{slice_index}.tif")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_COMMITTING, str(tmp_path / "v.npy"), out],
        env=cli_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-800:]
    assert any(".commit" in p.name for p in tmp_path.iterdir())  # the record is still there
    settings = ExportSettings(format="tiff-sequence", output=out, dtype="uint8")
    lazy = le.export(str(tmp_path / "v.npy"), settings, compute=False, resume=True)
    (result,) = dask.compute(lazy, scheduler="synchronous")
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)).reshape(data.shape), data)
    assert [p.name for p in tmp_path.iterdir() if ".lazyexport-" in p.name] == []


class _Flaky:
    """A source read that fails for slice ``at`` while ``failing`` (the same dask array, so the
    same plan, before and after)."""

    def __init__(self, data: np.ndarray, at: int):
        self.failing, self.at = True, at
        self.array = da.from_array(data, chunks=(1, *data.shape[1:])).map_blocks(
            self.read, dtype=data.dtype
        )

    def read(self, block, block_info=None):
        if block_info and self.failing and block_info[0]["array-location"][0][0] == self.at:
            raise OSError("source on fire")
        return block


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("failing", ["write", "source"])
def test_a_failed_lazy_resume_is_resumed_in_the_same_process(
    tmp_path, small_blocks, monkeypatch, scheduler, failing
):
    """A computation that fails (a block write, or a source read: a task before the export's
    own) ends its claim and keeps its journal: compute=True resume=True in the same process then
    writes only the blocks left (before: refused as a running export while the process lived),
    and computing the failed Delayed again is refused as done, the output left alone."""
    data = make_data("uint16", SHAPE)
    flaky = _Flaky(data, at=8)
    settings = _settings(tmp_path)
    original, written = ZarrTarget.write, list[object]()

    def write(self, block, location):
        if failing == "write" and len(written) >= 5:
            raise OSError("disk on fire")
        written.append(location)
        return original(self, block, location)

    monkeypatch.setattr(ZarrTarget, "write", write)
    lazy = le.export(flaky.array, settings, compute=False, resume=True)
    with pytest.raises(OSError, match="on fire"):
        dask.compute(lazy, scheduler=scheduler)
    assert not any(p.name.endswith(".owner") for p in hidden_temps(tmp_path / "out"))
    flaky.failing, first = False, len(written)
    monkeypatch.setattr(ZarrTarget, "write", original)
    monkeypatch.setattr(ZarrTarget, "write", write if failing == "source" else original)
    result = le.export(flaky.array, settings, resume=True, scheduler=scheduler)
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    if failing == "source":
        assert len(written) - first <= 12 - first
    assert not hidden_temps(tmp_path / "out")
    before = snapshot(tmp_path / "out")
    with pytest.raises(AlreadyComputedError):
        dask.compute(lazy, scheduler=scheduler)
    assert snapshot(tmp_path / "out") == before


def test_a_failed_lazy_resume_computed_again_continues(tmp_path, small_blocks):
    data = make_data("uint16", SHAPE)
    flaky = _Flaky(data, at=6)
    lazy = le.export(flaky.array, _settings(tmp_path), compute=False, resume=True)
    with pytest.raises(OSError, match="source on fire"):
        dask.compute(lazy, scheduler="threads")
    flaky.failing = False
    (result,) = dask.compute(lazy, scheduler="threads")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_a_lazy_resume_computed_on_worker_processes(tmp_path, source):
    """The claim is made, and ended by the commit, in the worker processes."""
    path, data = source
    settings = _settings(tmp_path)
    _cancelled_after(path, settings, 3)
    lazy = le.export(path, settings, compute=False, resume=True)
    (result,) = dask.compute(lazy, scheduler="processes")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")


def test_without_resume_a_killed_lazy_export_is_removed_by_the_next(tmp_path, source):
    """Killed after 4 blocks, a compute=False export without resume leaves its temporary output
    and mark (no claim); the next export of the output removes them and writes it whole."""
    path, data = source
    settings = _settings(tmp_path)
    script = textwrap.dedent(_KILLED).replace("resume=True", "resume=False")
    child = subprocess.Popen(
        [sys.executable, "-c", script, path, str(settings.output)],
        env=cli_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    left = {p.name.rpartition(".")[2] for p in hidden_temps(tmp_path / "out")}
    assert left == {"tmp", "lazy"} and not (tmp_path / "out" / "o.zarr").exists()
    (result,) = dask.compute(le.export(path, settings, compute=False), scheduler="threads")
    np.testing.assert_array_equal(le.open_exported(result).values, data)
    assert not hidden_temps(tmp_path / "out")
