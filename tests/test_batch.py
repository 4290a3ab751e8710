"""Batch projects: the project file, Export All / export by nickname / Delete All, failures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import cli_env, run_cli, snapshot
from helpers.zarr_nodes import read_all
from lazyexport.batch import Dataset
from lazyexport.run import ExportResult

EXAMPLE = textwrap.dedent("""\
    [settings]
    format = "hdf5"
    output = "{dataset_dir}/{nickname}_export.h5/exported_data"
    dtype = "uint8"
    renormalize = [[0.0, 1.0], [0, 255]]
    roi = { z = [0, 10] }

    [[datasets]]
    source = "data/a.h5/volume"
    nickname = "a"
    axes = "zyx"
    [datasets.settings]      # optional overrides for this dataset
    dtype = "uint16"
""")


def expected(volume: np.ndarray, dtype: str, z=(0, 10)) -> np.ndarray:
    """What the project's renormalize [0, 1] -> [0, 255] and dtype conversion make of ``volume``."""
    scaled = volume[z[0] : z[1]].astype("float32") * np.float32(255)
    info = np.iinfo(dtype)
    return np.clip(np.rint(scaled), info.min, info.max).astype(dtype)


@pytest.fixture
def three_formats(tmp_path: Path):
    """Sources in HDF5, Zarr and TIFF, and a project exporting them to HDF5, Zarr and a TIFF
    sequence."""
    rng = np.random.default_rng(4)
    volumes = {n: rng.random((20, 24, 16), dtype=np.float32) for n in "abc"}
    data = tmp_path / "data"
    data.mkdir()
    with h5py.File(data / "a.h5", "w") as f:
        f["volume"] = volumes["a"]
    store = zarr.create_array(
        str(data / "b.zarr"), shape=(20, 24, 16), chunks=(4, 24, 16), dtype="float32"
    )
    store[:] = volumes["b"]
    tifffile.imwrite(data / "c.tif", volumes["c"])
    project = tmp_path / "project.toml"
    project.write_text(
        EXAMPLE
        + textwrap.dedent("""
        [[datasets]]
        source = "data/b.zarr"
        [datasets.settings]
        format = "zarr"
        output = "{dataset_dir}/zarr_out/{nickname}.zarr"

        [[datasets]]
        source = "data/c.tif"
        [datasets.settings]
        format = "tiff-sequence"
        output = "{dataset_dir}/slices/{nickname}/z{slice_index}.tif"
        """)
    )
    return project, volumes


def test_example_project_loads_with_overrides_and_relative_sources(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    path = tmp_path / "proj" / "p.toml"
    path.write_text(EXAMPLE)
    monkeypatch.chdir(tmp_path)  # relative sources start at the project file, not here
    batch = le.Batch.load(path)
    assert batch.nicknames == ["a"]
    assert batch.source_path(batch.dataset("a")) == str(
        tmp_path / "proj" / "data" / "a.h5" / "volume"
    )
    settings = batch.settings_for("a")
    assert settings.dtype == "uint16"  # the override wins
    assert settings.roi == {"z": (0, 10)}
    assert settings.renormalize == ((0.0, 1.0), (0.0, 255.0))
    assert settings.format == "hdf5"


def test_default_nicknames_and_duplicates_are_refused(tmp_path):
    batch = le.Batch.from_dict(
        {"datasets": [{"source": "x/cells.ome.tif"}, {"source": "y/nuclei.h5/data"}]},
        base_dir=tmp_path,
    )
    assert batch.nicknames == ["cells", "nuclei"]
    with pytest.raises(le.ExportError) as info:
        le.Batch.from_dict(
            {
                "datasets": [
                    {"source": "x/a.h5/raw"},
                    {"source": "y/a.zarr"},
                    {"source": "b.npy"},
                    {"source": "c.npy", "nickname": "b"},
                ]
            }
        )
    message = str(info.value)
    assert "duplicate nickname" in message
    assert "'a' (x/a.h5/raw, y/a.zarr)" in message and "'b' (b.npy, c.npy)" in message


def test_bad_project_settings_name_the_dataset(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[datasets]]\nsource = "a.npy"\n[datasets.settings]\ndtype = "complex64"\n')
    with pytest.raises(
        le.ExportError, match=r"p.toml: dataset 'a': cannot export to data type complex64"
    ):
        le.Batch.load(path)
    path.write_text('[[datasets]]\nsource = "a.npy"\ncolour = "red"\n')
    with pytest.raises(le.ExportError, match="unknown key"):
        le.Batch.load(path)


def test_cli_export_all_list_reexport_and_delete_all_restore_the_directory(three_formats):
    project, volumes = three_formats
    root = project.parent
    before = snapshot(root)

    run = run_cli("batch", project, "export-all")
    assert run.returncode == 0, run.stderr
    assert "3 exported, 0 failed" in run.stdout
    a = h5py.File(root / "data" / "a_export.h5", "r")["exported_data"][...]
    np.testing.assert_array_equal(a, expected(volumes["a"], "uint16"))
    b = zarr.open_array(str(root / "data" / "zarr_out" / "b.zarr"))[...]
    np.testing.assert_array_equal(b, expected(volumes["b"], "uint8"))
    c = np.stack([tifffile.imread(root / "data" / "slices" / "c" / f"z{i}.tif") for i in range(10)])
    np.testing.assert_array_equal(c, expected(volumes["c"], "uint8"))

    listing = run_cli("batch", project, "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NICKNAME", "SOURCE", "OUTPUT", "EXISTS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"a", "b", "c"} and all(line.endswith("yes") for line in rows.values())
    assert "data/a.h5/volume" in rows["a"] and "a_export.h5/exported_data" in rows["a"]
    assert "(10 files)" in rows["c"]

    again = run_cli("batch", project, "export", "b")
    assert again.returncode == 1 and "exists already" in again.stdout
    zarr_out = root / "data" / "zarr_out" / "b.zarr"
    stamp = (zarr_out / "zarr.json").stat().st_mtime_ns
    again = run_cli("batch", project, "export", "b", "--overwrite")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (zarr_out / "zarr.json").stat().st_mtime_ns != stamp
    np.testing.assert_array_equal(zarr.open_array(str(zarr_out))[...], b)

    refused = run_cli("batch", project, "delete-all")  # stdin is not a terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert (root / "data" / "a_export.h5").exists()

    deleted = run_cli("batch", project, "delete-all", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert snapshot(root) == before
    assert "nothing to delete" in run_cli("batch", project, "delete-all", "--yes").stdout


def test_delete_all_confirms_on_a_terminal(three_formats, monkeypatch):
    project, _ = three_formats
    batch = le.Batch.load(project)
    assert batch.export_all().ok
    from lazyexport import cli

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["batch", str(project), "delete-all"]) == 1
    assert all(row.exists for row in batch.list())
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert cli.main(["batch", str(project), "delete-all"]) == 0
    assert not any(row.exists for row in batch.list())


def test_a_failing_dataset_does_not_stop_the_others(three_formats):
    project, volumes = three_formats
    text = project.read_text() + textwrap.dedent("""
        [[datasets]]
        source = "data/missing.h5/volume"

        [[datasets]]
        source = "data/a.h5/volume"
        nickname = "bad_roi"
        [datasets.settings]
        roi = { z = [0, 100] }
        """)
    project.write_text(text)
    run = run_cli("batch", project, "export-all")
    assert run.returncode == 1
    assert "3 exported, 2 failed" in run.stdout
    assert "FAILED missing: source" in run.stdout and "does not exist" in run.stdout
    assert (
        "FAILED bad_roi: roi stop 100 for axis 'z' is outside the valid range [0, 20)" in run.stdout
    )
    assert (project.parent / "data" / "a_export.h5").exists()
    assert (project.parent / "data" / "zarr_out" / "b.zarr").exists()
    listing = run_cli("batch", project, "list").stdout
    assert "missing" in listing and "does not exist" in listing


def test_fail_fast_stops_at_the_first_failure(three_formats):
    project, _ = three_formats
    text = project.read_text().replace(
        'source = "data/b.zarr"', 'source = "data/nothere.zarr"\nnickname = "b"'
    )
    project.write_text(text)
    run = run_cli("batch", project, "export-all", "--fail-fast")
    assert run.returncode == 1
    assert "1 exported, 1 failed, 1 not attempted" in run.stdout
    assert "not attempted (--fail-fast): c" in run.stdout
    assert not (project.parent / "data" / "slices").exists()


def test_python_api_progress_per_dataset_and_results(three_formats):
    project, _ = three_formats
    batch = le.Batch.load(project)
    seen: dict[str, list] = {}
    finished = []
    report = batch.export_all(
        progress=lambda nick, event: seen.setdefault(nick, []).append(event),
        on_done=lambda nick, outcome: finished.append(nick),
        memory_limit="16MiB",
    )
    assert report.ok and set(report.results) == {"a", "b", "c"} and not report.failures
    assert finished == ["a", "b", "c"]
    for events in seen.values():
        last = events[-1]
        assert last.blocks_done == last.blocks_total and last.bytes_done == last.bytes_total
    assert isinstance(report.results["c"], ExportResult)
    assert report.results["c"].paths[0].name == "z0.tif" and len(report.results["c"].paths) == 10
    with pytest.raises(le.ExportError, match="no dataset nicknamed 'zz'"):
        batch.export(["zz"])


def test_delete_all_in_a_shared_hdf5_file_removes_only_the_dataset(tmp_path):
    np.save(tmp_path / "vol.npy", np.arange(4 * 8 * 8, dtype="uint16").reshape(4, 8, 8))
    shared = tmp_path / "shared.h5"
    with h5py.File(shared, "w") as f:
        f["keep/me"] = np.ones(5)
    batch = le.Batch(
        {"output": "{dataset_dir}/shared.h5/results/{nickname}"},
        [Dataset("vol.npy")],
        base_dir=tmp_path,
    )
    assert batch.export_all().ok
    with h5py.File(shared, "r") as f:
        assert "results/vol" in f and "keep/me" in f
    report = batch.delete_all()
    assert report.removed == [
        f"{shared}/results/vol (only this dataset: the file holds other data)"
    ]
    with h5py.File(shared, "r") as f:
        assert "results" not in f and f["keep/me"][...].tolist() == [1.0] * 5
    assert (tmp_path / "vol.npy").exists()


def test_delete_all_never_removes_a_source(tmp_path):
    zarr.create_array(
        str(tmp_path / "in.zarr"), shape=(4, 4), chunks=(4, 4), dtype="uint8", name="raw"
    )
    # an output that is the whole store holding the source: deleting it would destroy the
    # source, so Delete All refuses
    batch = le.Batch(
        {"format": "zarr", "output": "{dataset_dir}/in.zarr"},
        [Dataset("in.zarr/raw", "x")],
        base_dir=tmp_path,
    )
    report = batch.delete_all()
    assert report.removed == [] and "holds the source" in report.refused["x"]
    assert (tmp_path / "in.zarr" / "raw" / "zarr.json").exists()


@pytest.mark.parametrize(
    "fmt,output,theirs",
    [
        ("zarr", "res.zarr", "res.zarr"),
        ("ome-zarr", "res.ome.zarr", "res.ome.zarr"),
        ("n5", "res.n5", "res.n5"),
        ("zarr", "store.zarr/node", "store.zarr/node"),
        ("tiff", "res.tif", "res.tif"),
        ("tiff-sequence", "seq/s{slice_index}.tif", "seq/s0.tif"),
    ],
)
def test_delete_all_and_overwrite_leave_a_directory_lazyexport_did_not_write(
    tmp_path, fmt, output, theirs
):
    """Issue 26, item 4: ``res.zarr/`` holding ``thesis.txt`` (no Zarr metadata) is not the
    output's; delete-all and export --overwrite refuse it in one line and leave it as it is."""
    np.save(tmp_path / "v.npy", np.zeros((3, 16, 16), np.uint8))
    if "/" in output and fmt == "zarr":
        zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    (tmp_path / theirs).mkdir(parents=True)
    (tmp_path / theirs / "thesis.txt").write_text("years of work")
    before = snapshot(tmp_path)
    batch = le.Batch(
        {"format": fmt, "output": "{dataset_dir}/" + output}, [Dataset("v.npy", "v")],
        base_dir=tmp_path,
    )  # fmt: skip
    report = batch.delete_all()
    assert report.removed == [] and "lazyexport did not write it" in report.refused["v"]
    run = run_cli(
        "export", "v.npy", "--format", fmt, "--output", output, "--overwrite", cwd=tmp_path
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: {theirs} is a directory")
    assert snapshot(tmp_path) == before


def test_delete_all_removes_only_its_array_from_a_store_with_other_arrays(tmp_path):
    """Issue 13, item 4: an output inside a store (``store.zarr/{nickname}``) is deleted alone:
    the source beside it and arrays the user added later stay."""
    store = tmp_path / "store.zarr"
    zarr.create_array(str(store), shape=(4, 4), chunks=(4, 4), dtype="uint8", name="raw")[...] = 7
    batch = le.Batch(
        {"format": "zarr", "output": "{dataset_dir}/store.zarr/{nickname}"},
        [Dataset("store.zarr/raw", "x")],
        base_dir=tmp_path,
    )
    assert batch.export_all().ok
    zarr.create_array(str(store), shape=(2,), chunks=(2,), dtype="uint8", name="labels")[...] = 1
    report = batch.delete_all()
    assert (
        report.refused == {} and len(report.removed) == 1 and "only this node" in report.removed[0]
    )
    group = zarr.open_group(str(store), mode="r")
    assert sorted(group.array_keys()) == ["labels", "raw"]
    assert (read_all(group["raw"]) == 7).all() and (read_all(group["labels"]) == 1).all()


def test_export_save_settings_makes_a_reusable_project(tmp_path):
    src = tmp_path / "vol.npy"
    np.save(src, np.linspace(0, 1, 6 * 8 * 8, dtype="float32").reshape(6, 8, 8))
    saved = tmp_path / "proj" / "p.toml"
    run = run_cli(
        "export",
        src.name,
        "--roi",
        "z=2:,x=:6",
        "--renormalize",
        ":0,255",
        "--dtype",
        "uint8",
        "--format",
        "zarr",
        "--output",
        "{dataset_dir}/{nickname}_{roi}.zarr",
        "--save-settings",
        saved,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    data = tomllib.loads(saved.read_text())
    assert data["settings"]["roi"] == "z=2:,x=:6"  # open ends in the text form
    assert data["settings"]["renormalize"] == [[], [0.0, 255.0]]  # input range from the data
    assert data["datasets"] == [{"source": str(src), "nickname": "vol"}]
    first = read_all(zarr.open_array(str(tmp_path / "vol_z2-6_y0-8_x0-6.zarr")))

    listing = run_cli("batch", saved, "list")
    assert listing.stdout.splitlines()[1].endswith("yes")
    rerun = run_cli("batch", saved, "export-all", "--overwrite")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "vol_z2-6_y0-8_x0-6.zarr"))[...], first
    )
    assert first.max() == 255 and first.shape == (4, 8, 6)


def test_save_round_trips_a_project(three_formats, tmp_path):
    project, _ = three_formats
    batch = le.Batch.load(project)
    copy = batch.save(project.parent / "sub" / "copy.toml")
    again = le.Batch.load(copy)
    assert again.nicknames == batch.nicknames
    assert [again.source_path(d) for d in again.datasets] == [
        batch.source_path(d) for d in batch.datasets
    ]
    assert tomllib.loads(copy.read_text())["datasets"][0]["source"] == str(
        project.parent / "data/a.h5/volume"
    )
    assert all(again.settings_for(n) == batch.settings_for(n) for n in batch.nicknames)


def test_project_file_errors_exit_2(tmp_path):
    run = run_cli("batch", tmp_path / "none.toml", "list")
    assert run.returncode == 2 and "does not exist" in run.stderr
    (tmp_path / "bad.toml").write_text("[settings\n")
    run = run_cli("batch", tmp_path / "bad.toml", "list")
    assert run.returncode == 2 and "cannot read project file" in run.stderr


def test_cli_subprocess_uses_this_checkout():
    out = subprocess.run(
        [sys.executable, "-c", "import lazyexport; print(lazyexport.__file__)"],
        env=cli_env(),
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert out.stdout.strip() == str(Path(le.__file__))


def run_on_terminal(args: list, cwd: Path) -> str:
    """Run the CLI with stderr on a pseudo-terminal (150 columns); return what it showed there."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyexport", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return shown.decode(errors="replace").replace("\r", "\n")


def test_progress_bars_one_per_dataset_on_a_terminal_only(three_formats):
    project, _ = three_formats
    shown = run_on_terminal(
        ["batch", project, "export-all", "--memory-limit", "16MiB"], project.parent
    )
    finals = [line for line in shown.splitlines() if "100%" in line]
    for nick in "abc":
        assert any(
            line.startswith(f"{nick}: 100%") and " blocks" in line and "/s" in line
            for line in finals
        )
    quiet = run_on_terminal(
        ["batch", project, "export-all", "--overwrite", "--quiet"], project.parent
    )
    assert "blocks" not in quiet
    piped = run_cli("batch", project, "export-all", "--overwrite")
    assert piped.returncode == 0 and "blocks" not in piped.stderr
