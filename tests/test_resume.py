"""Interrupting exports (SIGINT, SIGTERM, the cancel event) and resuming them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import cli_env, snapshot
from helpers.zarr_nodes import read_all
from lazyexport.plan import build_plan
from lazyexport.run import Progress

pytestmark = pytest.mark.usefixtures("small_blocks")

SLOW_CLI = Path(__file__).with_name("helpers") / "slow_cli.py"
SHAPE = (
    24,
    512,
    512,
)  # float32: 1 MiB per slice, so --memory-limit 16MiB gives one slice per block
OUTPUTS = {
    "zarr": "{dataset_dir}/out/{nickname}.zarr",
    "tiff-sequence": "{dataset_dir}/out/{nickname}_z{slice_index}.tif",
    "hdf5": "{dataset_dir}/out/{nickname}.h5/exported_data",
}


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(7)
    np.save(work / "vol.npy", rng.random(SHAPE, dtype=np.float32))
    return work / "vol.npy"


def settings(fmt: str, **changes) -> le.ExportSettings:
    base = dict(format=fmt, output=OUTPUTS[fmt], dtype="uint8", renormalize=((0, 1), (0, 255)))
    return le.ExportSettings(**{**base, **changes})


def export_args(fmt: str, src: Path, *extra: str) -> list[str]:
    return [
        "export",
        str(src),
        "--format",
        fmt,
        "--output",
        OUTPUTS[fmt],
        "--dtype",
        "uint8",
        "--renormalize",
        "0,1:0,255",
        "--chunks",
        "z=1",
        "--memory-limit",
        "16MiB",
        "--quiet",
        *extra,
    ]


def read_output(fmt: str, src: Path) -> np.ndarray:
    out = src.parent / "out"
    if fmt == "zarr":
        return read_all(zarr.open_array(str(out / "vol.zarr")))
    if fmt == "tiff-sequence":
        return np.stack([tifffile.imread(out / f"vol_z{i:02}.tif") for i in range(SHAPE[0])])
    import h5py

    with h5py.File(out / "vol.h5", "r") as f:
        return f["exported_data"][...]


def reference(src: Path) -> np.ndarray:
    data = np.load(src).astype("float32") * np.float32(255)
    return np.clip(np.rint(data), 0, 255).astype("uint8")


def _default_sigint() -> None:
    # an ignored SIGINT is inherited (dask's process pools and clusters earlier in the test
    # session leave pytest ignoring it); the child must get Python's Ctrl-C handling, as from a
    # shell
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_slow(args: list[str], marker: Path, delay: float = 0.2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SLOW_CLI), str(marker), str(delay), *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def interrupt(
    proc: subprocess.Popen, marker: Path, sig: int, after_blocks: int = 3
) -> tuple[int, str]:
    wait_for(
        lambda: lines(marker) >= after_blocks or proc.poll() is not None, "blocks to be written"
    )
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def exit_code(sig: int) -> int:
    return 130 if sig == signal.SIGINT else 143


@pytest.mark.parametrize("fmt", ["zarr", "tiff-sequence", "hdf5"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_leaving_no_temporaries_and_the_old_output_untouched(
    volume, tmp_path, fmt, sig
):
    le.export(volume, settings(fmt, roi={"z": (0, 2)}))  # an older, different output
    before = snapshot(volume.parent)
    assert any(name.startswith("out/") for name in before)

    marker = tmp_path / "marker"
    proc = start_slow(export_args(fmt, volume, "--overwrite"), marker)
    code, err = interrupt(proc, marker, sig)
    assert code == exit_code(sig), err
    assert "temporary output removed" in err
    written = int(err.rsplit("blocks-written=", 1)[1])
    assert 3 <= written < SHAPE[0]
    assert snapshot(volume.parent) == before  # old output intact, no temporaries


def test_without_an_older_output_nothing_final_is_left(volume, tmp_path):
    marker = tmp_path / "marker"
    proc = start_slow(export_args("zarr", volume), marker)
    code, err = interrupt(proc, marker, signal.SIGTERM)
    assert code == 143, err
    # nothing final, no temporary, not even the output directory the export made
    assert sorted(p.name for p in volume.parent.rglob("*")) == ["vol.npy"]


# -- resume --------------------------------------------------------------------------------------

RESUMABLE = ["zarr", "tiff-sequence"]


def resume_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if ".lazyexport-r" in p.name) if out.exists() else []


def journal_of(out: Path) -> Path:
    (journal,) = [p for p in resume_files(out) if p.name.endswith(".blocks")]
    return journal


def cancel_after(blocks: int):
    """A progress callback and cancel event that stop the export after ``blocks`` blocks."""
    import threading

    cancel = threading.Event()

    def progress(event):
        if event.blocks_done >= blocks:
            cancel.set()

    return progress, cancel


def run_api(src: Path, fmt: str, **options) -> list:
    events: list = []
    user = options.pop("progress", None)

    def progress(event):
        events.append(event)
        if user:
            user(event)

    le.export(
        src, settings(fmt, chunks={"z": 1}), memory_limit="16MiB", progress=progress, **options
    )
    return events


@pytest.mark.parametrize("fmt", RESUMABLE)
def test_cancelled_resumable_export_continues_and_equals_an_uninterrupted_one(volume, fmt):
    out = volume.parent / "out"
    progress, cancel = cancel_after(5)
    with pytest.raises(le.ExportError, match="cancelled"):
        run_api(volume, fmt, progress=progress, cancel=cancel, resume=True)
    assert not read_paths_exist(fmt, volume)
    done_lines = lines(journal_of(out)) - 1  # the header, then one line per block
    assert 5 <= done_lines < SHAPE[0]
    assert any(p.name.endswith(".tmp") for p in resume_files(out))

    events = run_api(volume, fmt, resume=True)
    assert events[0].blocks_done == done_lines + 1  # finished blocks count as done...
    assert len(events) == SHAPE[0] - done_lines  # ...and are not written again
    assert events[-1].blocks_done == events[-1].blocks_total == SHAPE[0]
    assert events[-1].bytes_done == events[-1].bytes_total
    resumed = read_output(fmt, volume)
    assert resume_files(out) == []  # temporaries and journal are gone

    run_api(volume, fmt, overwrite=True)  # the same, uninterrupted
    np.testing.assert_array_equal(resumed, read_output(fmt, volume))
    np.testing.assert_array_equal(resumed, reference(volume))


def read_paths_exist(fmt: str, src: Path) -> bool:
    out = src.parent / "out"
    return (out / "vol.zarr").exists() if fmt == "zarr" else any(out.glob("vol_z*.tif"))


def test_a_changed_plan_does_not_reuse_stale_data(volume):
    out = volume.parent / "out"
    progress, cancel = cancel_after(4)
    with pytest.raises(le.ExportError):
        run_api(volume, "zarr", progress=progress, cancel=cancel, resume=True)
    stale = resume_files(out)
    assert len(stale) == 2
    changed = settings("zarr", chunks={"z": 1}, renormalize=((0, 1), (0, 100)))
    events: list[Progress] = []
    le.export(volume, changed, memory_limit="16MiB", resume=True, progress=events.append)
    assert events[0].blocks_done == 1  # nothing skipped
    assert resume_files(out) == []  # the stale run's files are gone
    data = np.load(volume).astype("float32") * np.float32(100)
    np.testing.assert_array_equal(read_output("zarr", volume), np.rint(data).astype("uint8"))


def test_a_changed_source_does_not_reuse_stale_data(volume):
    progress, cancel = cancel_after(4)
    with pytest.raises(le.ExportError):
        run_api(volume, "tiff-sequence", progress=progress, cancel=cancel, resume=True)
    np.save(volume, np.zeros(SHAPE, dtype=np.float32))  # same shape and dtype, new data
    events = run_api(volume, "tiff-sequence", resume=True)
    assert events[0].blocks_done == 1 and len(events) == SHAPE[0]
    assert not read_output("tiff-sequence", volume).any()


def test_hdf5_resume_restarts_and_cleans_up(volume):
    out = volume.parent / "out"
    progress, cancel = cancel_after(3)
    with pytest.raises(le.ExportError):
        run_api(volume, "hdf5", progress=progress, cancel=cancel, resume=True)
    assert not out.exists()  # no temporary kept, nor the directory the export made
    plan = build_plan(volume, settings("hdf5", chunks={"z": 1}), memory_limit="16MiB")
    result = le.run.execute(plan, resume=True)
    assert "hdf5 outputs cannot resume; exported from the start" in result.notes
    np.testing.assert_array_equal(read_output("hdf5", volume), reference(volume))


def test_journal_drops_an_interrupted_line(tmp_path):
    from lazyexport.resume import Journal

    journal = Journal(tmp_path / "j.blocks", ((2, 2), (3, 3)))
    assert journal.load() == set()
    for block in [(0, 0), (1, 0), (0, 1)]:
        journal.record(block)
    with open(journal.path, "a") as f:
        f.write("[1, ")  # killed in the middle of an append
    assert journal.load() == {(0, 0), (1, 0), (0, 1)}
    journal.record((1, 1))
    assert journal.load() == {(0, 0), (1, 0), (0, 1), (1, 1)}
    other_grid = Journal(journal.path, ((4,), (3, 3)))
    assert other_grid.load() == set()  # another block grid: start afresh


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt,sig",
    [("zarr", signal.SIGTERM), ("tiff-sequence", signal.SIGINT)],
    ids=["zarr-SIGTERM", "tiff-sequence-SIGINT"],
)
def test_killed_cli_export_resumes_to_the_same_result(volume, tmp_path, fmt, sig):
    out = volume.parent / "out"
    marker = tmp_path / "marker"
    proc = start_slow(export_args(fmt, volume, "--resume"), marker)
    wait_for(
        lambda: (
            any(p.suffix == ".blocks" for p in resume_files(out)) and lines(journal_of(out)) > 4
        ),
        "the journal to grow",
    )
    code, err = interrupt(proc, marker, sig)
    assert code == exit_code(sig), err
    assert "temporary output kept for --resume" in err
    assert not read_paths_exist(fmt, volume)
    first = int(err.rsplit("blocks-written=", 1)[1])
    assert lines(journal_of(out)) - 1 == first  # every block written is recorded
    assert 4 <= first < SHAPE[0]

    again = start_slow(export_args(fmt, volume, "--resume"), tmp_path / "marker2", delay=0)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert int(err.rsplit("blocks-written=", 1)[1]) == SHAPE[0] - first
    assert resume_files(out) == []
    resumed = read_output(fmt, volume)

    whole = subprocess.run(
        [sys.executable, "-m", "lazyexport", *export_args(fmt, volume, "--overwrite")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert whole.returncode == 0, whole.stderr
    np.testing.assert_array_equal(resumed, read_output(fmt, volume))
    np.testing.assert_array_equal(resumed, reference(volume))


def test_delete_all_removes_what_an_interrupted_resume_kept(volume):
    before = snapshot(volume.parent)
    batch = le.Batch(
        {**settings("zarr", chunks={"z": 1}).to_dict()},
        [{"source": volume.name}],
        base_dir=volume.parent,
    )
    progress, cancel = cancel_after(3)
    with pytest.raises(le.ExportError):
        batch.export_all(
            resume=True,
            memory_limit="16MiB",
            cancel=cancel,
            progress=lambda nick, event: progress(event),
        )
    assert len(resume_files(volume.parent / "out")) == 2
    assert [row.exists for row in batch.list()] == [False]
    report = batch.delete_all()
    assert len(report.removed) == 2 and all("interrupted --resume" in r for r in report.removed)
    assert snapshot(volume.parent) == before


KILLED_WHILE_CLEANING_UP = """
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
settings = le.ExportSettings(format=sys.argv[2], output=sys.argv[3], dtype="uint8")
le.export(sys.argv[1], settings, resume=True, progress=progress)
"""


@pytest.mark.parametrize(
    ("fmt", "output"),
    [
        ("zarr", "o.zarr"),
        ("tiff-sequence", "o_{slice_index}.tif"),
        ("png-sequence", "o_{slice_index}.png"),
    ],
)
def test_a_kill_while_a_finished_resume_run_cleans_up_leaves_nothing_after_the_next(
    tmp_path, fmt, output
):
    """The journal goes before the commit record: a run killed as it removes the journal still
    has its record, so the next run finishes that commit and removes the rest (before, the
    record went first, and the next run refused the finished output and left the journal)."""
    data = np.random.default_rng(3).integers(0, 255, (6, 40, 50)).astype("uint8")
    np.save(tmp_path / "v.npy", data)
    out = str(tmp_path / output)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_CLEANING_UP, str(tmp_path / "v.npy"), fmt, out],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-800:]
    assert any(".commit" in p.name for p in tmp_path.iterdir())  # the record is still there
    settings = le.ExportSettings(format=fmt, output=out, dtype="uint8")
    result = le.export(str(tmp_path / "v.npy"), settings, resume=True)
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)).reshape(data.shape), data)
    assert [p.name for p in tmp_path.iterdir() if ".lazyexport-" in p.name] == []
