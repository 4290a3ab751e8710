"""Issue 13 (data loss found in review): outputs inside an existing store, interrupted commits,
leftovers of killed exports, directory outputs in the way. Each test names the item it guards.
"""

from __future__ import annotations

import json
import os
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
from helpers import cli_env, hidden_temps, run_cli
from helpers.zarr_nodes import as_array, read_all
from lazyexport import storage
from lazyexport.errors import ExportCancelled, FormatError, OutputBusyError, TemplateError
from lazyexport.plan import build_plan
from lazyexport.run import _stop_writes, _write_block

KILL_AT_COMMIT = Path(__file__).with_name("helpers") / "kill_at_commit.py"
SLOW_CLI = Path(__file__).with_name("helpers") / "slow_cli.py"


def arange(shape, dtype="uint16") -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# -- item 1: an output inside the store that holds the source ---------------------------------


@pytest.fixture
def zarr_store(tmp_path) -> Path:
    store = tmp_path / "a.zarr"
    zarr.create_array(
        str(store),
        shape=(6, 8, 10),
        chunks=(2, 4, 5),
        dtype="uint16",
        name="raw",
        dimension_names=list("zyx"),
    )[...] = arange((6, 8, 10))
    zarr.create_array(str(store), shape=(3,), chunks=(3,), dtype="uint8", name="labels")[...] = 9
    return store


def test_item01_zarr_export_into_the_sources_store_keeps_every_other_array(zarr_store):
    settings = le.ExportSettings(format="zarr", output=f"{zarr_store}/export", roi={"z": (1, 5)})
    le.export(f"{zarr_store}/raw", settings)
    with pytest.raises(le.ExportError, match="exists already"):
        le.export(f"{zarr_store}/raw", settings)
    le.export(
        f"{zarr_store}/raw", settings.replace(roi={"z": (2, 4)}), overwrite=True
    )  # the case reported
    group = zarr.open_group(str(zarr_store), mode="r")
    assert sorted(group.array_keys()) == ["export", "labels", "raw"]
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["labels"]), np.full(3, 9, "uint8"))
    np.testing.assert_array_equal(read_all(group["export"]), arange((6, 8, 10))[2:4])
    assert hidden_temps(zarr_store.parent) == []


def test_item01_zarr_export_into_a_nested_group_of_an_existing_store(zarr_store):
    le.export(
        f"{zarr_store}/raw",
        le.ExportSettings(format="zarr", output=f"{zarr_store}/results/run1/exp"),
    )
    group = zarr.open_group(str(zarr_store), mode="r")
    np.testing.assert_array_equal(read_all(group["results/run1/exp"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))


def test_item01_ome_zarr_export_into_the_sources_store_keeps_the_source(zarr_store):
    le.export(
        f"{zarr_store}/raw", le.ExportSettings(format="ome-zarr", output=f"{zarr_store}/image")
    )
    le.export(
        f"{zarr_store}/raw",
        le.ExportSettings(format="ome-zarr", output=f"{zarr_store}/image"),
        overwrite=True,
    )
    group = zarr.open_group(str(zarr_store), mode="r")
    assert {"raw", "labels", "image"} <= set(group.keys())
    np.testing.assert_array_equal(read_all(group["raw"]), arange((6, 8, 10)))
    np.testing.assert_array_equal(read_all(group["image/0"]), arange((6, 8, 10)))


def test_item01_n5_export_into_the_sources_container_keeps_the_source(tmp_path):
    source = le.ExportSettings(format="n5", output=f"{tmp_path}/b.n5/raw")
    le.export(le.open_source(arange((4, 6, 8)), axes="zyx"), source)
    other = le.ExportSettings(format="n5", output=f"{tmp_path}/b.n5/other", dtype="float32")
    le.export(f"{tmp_path}/b.n5/raw", other)
    le.export(f"{tmp_path}/b.n5/raw", other, overwrite=True)
    np.testing.assert_array_equal(
        np.asarray(le.open_source(f"{tmp_path}/b.n5/raw")), arange((4, 6, 8))
    )
    np.testing.assert_array_equal(
        np.asarray(le.open_source(f"{tmp_path}/b.n5/other")), arange((4, 6, 8)).astype("float32")
    )
    assert json.loads((tmp_path / "b.n5" / "attributes.json").read_text())["n5"]


def test_item01_an_output_that_holds_the_source_is_refused(zarr_store, tmp_path):
    with pytest.raises(TemplateError, match="holds the source"):
        le.export(
            f"{zarr_store}/raw",
            le.ExportSettings(format="zarr", output=str(zarr_store)),
            overwrite=True,
        )
    hdf5 = tmp_path / "data.h5"
    le.export(arange((4, 4)), le.ExportSettings(format="hdf5", output=f"{hdf5}/volume/raw"))
    with pytest.raises(TemplateError, match="holds the source"):
        le.export(
            f"{hdf5}/volume/raw",
            le.ExportSettings(format="hdf5", output=f"{hdf5}/volume"),
            overwrite=True,
        )
    np.testing.assert_array_equal(zarr.open_array(str(zarr_store / "raw"))[...], arange((6, 8, 10)))


def test_item01_a_sequence_onto_the_slices_of_its_own_glob_source_is_refused(tmp_path):
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s_{i}.tif", np.full((4, 5), i, np.uint8))
    settings = le.ExportSettings(format="tiff-sequence", output=f"{tmp_path}/s_{{slice_index}}.tif")
    with pytest.raises(TemplateError, match="is a file of the source"):
        le.export(str(tmp_path / "s_*.tif"), settings, overwrite=True)
    assert [int(tifffile.imread(tmp_path / f"s_{i}.tif")[0, 0]) for i in range(3)] == [0, 1, 2]


def test_item01_a_failed_export_into_an_existing_store_changes_nothing(zarr_store, monkeypatch):
    from lazyexport.formats import zarr as zarr_format

    def failing_write(self, block, location):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(zarr_format.ZarrTarget, "write", failing_write)
    before = sorted(p.relative_to(zarr_store) for p in zarr_store.rglob("*"))
    with pytest.raises(RuntimeError):
        le.export(
            f"{zarr_store}/raw", le.ExportSettings(format="zarr", output=f"{zarr_store}/export")
        )
    assert sorted(p.relative_to(zarr_store) for p in zarr_store.rglob("*")) == before
    assert hidden_temps(zarr_store.parent) == []


def test_item01_zarr_format_of_an_existing_store_is_kept(tmp_path):
    store = tmp_path / "v2.zarr"
    zarr.create_array(str(store), shape=(4,), chunks=(4,), dtype="uint8", name="raw", zarr_format=2)
    with pytest.raises(FormatError, match="Zarr v2 store"):
        le.export(arange((4, 4)), le.ExportSettings(format="zarr", output=f"{store}/exp"))
    le.export(
        arange((4, 4)), le.ExportSettings(format="zarr", output=f"{store}/exp", zarr_format=2)
    )
    assert sorted(zarr.open_group(str(store), mode="r").array_keys()) == ["exp", "raw"]


# -- item 14: a directory output in the way of a file, or a node inside a file -----------------


@pytest.mark.parametrize("fmt", ["zarr", "n5", "ome-zarr"])
def test_item14_overwrite_replaces_a_plain_file_where_a_store_goes(tmp_path, fmt):
    out = tmp_path / ("x.n5" if fmt == "n5" else "x.zarr")
    out.write_text("not a store")
    with pytest.raises(le.ExportError, match="exists already"):
        le.export(arange((4, 4)), le.ExportSettings(format=fmt, output=str(out)))
    result = le.export(
        arange((4, 4)), le.ExportSettings(format=fmt, output=str(out)), overwrite=True
    )
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), arange((4, 4)))
    assert out.is_dir() and hidden_temps(tmp_path) == []


@pytest.mark.parametrize("fmt", ["zarr", "n5", "ome-zarr"])
def test_item14_a_node_inside_a_plain_file_is_refused_at_planning(tmp_path, fmt):
    out = tmp_path / ("x.n5" if fmt == "n5" else "x.zarr")
    out.write_text("not a store")
    with pytest.raises(FormatError, match="is a file"):
        build_plan(arange((4, 4)), le.ExportSettings(format=fmt, output=f"{out}/inner"))
    assert out.read_text() == "not a store"


def test_item14_cli_says_so_in_one_line(tmp_path):
    (tmp_path / "x.zarr").write_text("not a store")
    np.save(tmp_path / "v.npy", arange((4, 4)))
    run = run_cli(
        "export", "v.npy", "--format", "zarr", "--output", f"{tmp_path}/x.zarr/inner", cwd=tmp_path
    )
    assert run.returncode == 2 and run.stderr.count("error:") == 1
    assert "is a file, not a Zarr store" in run.stderr and "Traceback" not in run.stderr


# -- items 2 and 6: a commit interrupted at any step -------------------------------------------

SEQ_SHAPE = (6, 32, 40)


@pytest.fixture
def seq_source(tmp_path) -> dict[str, Path]:
    """Two sources of the same data: chunked one slice deep (slices written directly) and
    three slices deep (slices assembled in a staging file)."""
    data = arange(SEQ_SHAPE)
    out = {}
    for name, depth in (("flat", 1), ("deep", 3)):
        store = tmp_path / f"{name}.zarr"
        zarr.create_array(
            str(store),
            shape=SEQ_SHAPE,
            chunks=(depth, 32, 40),
            dtype="uint16",
            dimension_names=list("zyx"),
        )[...] = data
        out[name] = store
    return out


def seq_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        "export",
        str(src),
        "--format",
        "tiff-sequence",
        "--output",
        f"{out}/s_{{slice_index}}.tif",
        "--quiet",
        *extra,
    ]


def read_slices(out: Path) -> np.ndarray:
    return np.stack([tifffile.imread(out / f"s_{i}.tif") for i in range(SEQ_SHAPE[0])])


def kill_at(step: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(KILL_AT_COMMIT), str(step), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


KILL_AFTER_OLD_ASIDE = """
import os, signal, sys
from lazyexport import cli
from lazyexport.storage import local as storage
real = os.replace
def replace(a, b):
    real(a, b)
    if str(b).endswith(".old"):      # the old output is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
storage.os.replace = replace
sys.exit(cli.main(sys.argv[1:]))
"""


def kill_after_moving_the_old_output_aside(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILL_AFTER_OLD_ASIDE, *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("kind", ["flat", "deep"])
@pytest.mark.parametrize("step", range(SEQ_SHAPE[0] + 2))  # every step of the commit
def test_item02_item06_resume_after_a_kill_during_the_commit_ends_right(
    seq_source, tmp_path, kind, step
):
    out = tmp_path / f"out-{kind}-{step}"
    killed = kill_at(step, seq_args(seq_source[kind], out, "--resume"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert hidden_temps(out)  # it was killed with work under way
    again = run_cli(*seq_args(seq_source[kind], out, "--resume"))
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(read_slices(out), arange(SEQ_SHAPE))
    assert hidden_temps(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"s_{i}.tif" for i in range(SEQ_SHAPE[0])
    )


@pytest.mark.parametrize("step", [1, 4])
def test_item06_clean_finishes_a_commit_killed_midway_without_resume(seq_source, tmp_path, step):
    out = tmp_path / "out"
    killed = kill_at(step, seq_args(seq_source["deep"], out))
    assert killed.returncode == -signal.SIGKILL
    assert len(list(out.glob("s_*.tif"))) == step - 1  # a part renamed, the rest hidden
    cleaned = run_cli("clean", str(out))
    assert cleaned.returncode == 0, cleaned.stderr
    assert "interrupted commit" in cleaned.stdout
    np.testing.assert_array_equal(read_slices(out), arange(SEQ_SHAPE))
    assert hidden_temps(out) == []


@pytest.mark.parametrize("step", [0, 1, 2])
def test_item02_zarr_resume_after_a_kill_during_the_commit(seq_source, tmp_path, step):
    out = tmp_path / "o.zarr"
    args = [
        "export",
        str(seq_source["deep"]),
        "--format",
        "zarr",
        "--output",
        str(out),
        "--quiet",
        "--resume",
    ]
    assert kill_at(step, args).returncode == -signal.SIGKILL
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(zarr.open_array(str(out))[...], arange(SEQ_SHAPE))
    assert hidden_temps(tmp_path) == []


def test_item02_an_overwrite_killed_between_its_two_renames_loses_neither_output(
    seq_source, tmp_path
):
    """Replacing a directory is two renames (old aside, new in): a kill between them must not
    leave the user with no output at all."""
    out = tmp_path / "o.zarr"
    base = ["export", str(seq_source["deep"]), "--format", "zarr", "--output", str(out), "--quiet"]
    assert run_cli(*base, "--roi", "z=0:1").returncode == 0
    killed = kill_after_moving_the_old_output_aside([*base, "--overwrite"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()  # the old one is aside, the new one hidden
    assert run_cli("clean", str(out)).returncode == 0
    np.testing.assert_array_equal(zarr.open_array(str(out))[...], arange(SEQ_SHAPE))
    assert hidden_temps(tmp_path) == []


# -- item 5: temporaries of killed exports -----------------------------------------------------


def start_slow(args: list[str], marker: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SLOW_CLI), str(marker), "0.3", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_blocks(args: list[str], marker: Path, blocks: int = 2) -> None:
    proc = start_slow(args, marker)
    deadline = time.monotonic() + 60
    while (
        not marker.exists() or len(marker.read_text().splitlines()) < blocks
    ) and proc.poll() is None:
        assert time.monotonic() < deadline, "no blocks written"
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.wait(timeout=30)


@pytest.fixture
def npy_source(tmp_path) -> Path:
    path = tmp_path / "vol.npy"
    np.save(path, arange((24, 512, 512)))
    return path


FORMATS_KILLED = {
    "tiff": "o.tif",
    "tiff-sequence": "s_{slice_index}.tif",
    "n5": "o.n5",
    "ome-zarr": "o.ome.zarr",
    "npy": "o.npy",
    "zarr": "o.zarr",
}


@pytest.mark.parametrize("fmt", sorted(FORMATS_KILLED))
def test_item05_the_next_export_removes_what_a_killed_one_left(npy_source, tmp_path, fmt):
    out = tmp_path / "out"
    args = [
        "export",
        str(npy_source),
        "--format",
        fmt,
        "--output",
        f"{out}/{FORMATS_KILLED[fmt]}",
        "--chunks",
        "z=1",
        "--memory-limit",
        "16MiB",
        "--quiet",
    ]
    kill_after_blocks(args, tmp_path / "marker")
    assert hidden_temps(out), "the killed export left nothing to clean"
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert hidden_temps(out) == []


def test_item05_clean_lists_and_removes_orphans_but_not_a_running_exports(npy_source, tmp_path):
    out = tmp_path / "out"
    args = [
        "export",
        str(npy_source),
        "--format",
        "tiff",
        "--output",
        f"{out}/o.tif",
        "--chunks",
        "z=1",
        "--memory-limit",
        "16MiB",
        "--quiet",
    ]
    kill_after_blocks(args, tmp_path / "marker")
    left = hidden_temps(out)
    assert left
    listed = run_cli("clean", str(out / "o.tif"), "--dry-run")
    assert listed.returncode == 0 and all(str(p) in listed.stdout for p in left), listed.stdout
    assert hidden_temps(out) == left  # a dry run removes nothing
    # a temporary of an export running now (this process) is left alone
    with storage.Run(storage.new_token()) as run:
        live = storage.temp_path(out / "o.tif", run.token)
        live.write_bytes(b"x")
        cleaned = run_cli("clean", str(out))
        assert cleaned.returncode == 0, cleaned.stderr
        assert "removed" in cleaned.stdout and "running now" in cleaned.stderr
        assert hidden_temps(out) == [live]
    done, kept = storage.clean_path(out)  # the run has ended: an orphan now
    assert [d.path for d in done] == [live] and kept == [] and hidden_temps(out) == []


def test_item05_batch_clean_and_delete_all_remove_orphans(npy_source, tmp_path):
    project = tmp_path / "p.toml"
    project.write_text(
        f'[settings]\nformat = "tiff"\noutput = "{{dataset_dir}}/out/{{nickname}}.tif"\n'
        f'chunks = {{ z = 1 }}\n[[datasets]]\nsource = "{npy_source}"\n'
    )
    args = ["batch", str(project), "export-all", "--memory-limit", "16MiB", "--quiet"]
    kill_after_blocks(args, tmp_path / "marker")
    assert hidden_temps(tmp_path / "out")
    cleaned = run_cli("batch", str(project), "clean")
    assert cleaned.returncode == 0 and "removed" in cleaned.stdout, cleaned.stdout + cleaned.stderr
    assert hidden_temps(tmp_path / "out") == []


def test_item05_a_second_resume_of_the_same_plan_is_refused_while_the_first_runs(
    npy_source, tmp_path
):
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"))
    plan = build_plan(str(npy_source), settings)
    from lazyexport.resume import owner_paths, plan_token

    token = plan_token(plan)
    with storage.Run(token):
        storage.claim(owner_paths(plan, token), token)
        with pytest.raises(OutputBusyError, match="runs now"):
            le.export(str(npy_source), settings, resume=True)
    result = le.export(str(npy_source), settings, resume=True)  # the owner has gone
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), arange((24, 512, 512)))
    assert hidden_temps(tmp_path) == []


def test_item05_a_token_names_its_process_and_a_dead_process_owns_nothing(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    token = storage.new_token().split("p")[0] + f"p{pid}h" + storage.host_tag()
    orphan = storage.temp_path(tmp_path / "x.zarr", token)
    orphan.mkdir()
    (found,) = storage.leftovers([tmp_path])
    assert found.state == "orphan" and f"pid {pid}" in found.owner
    other_host = storage.temp_path(tmp_path / "y.zarr", f"t12345678p{os.getpid()}hffffff")
    other_host.write_bytes(b"")
    states = {f.path.name: f.state for f in storage.leftovers([tmp_path])}
    assert states[other_host.name] in ("unknown", "orphan")
    assert states[other_host.name] == ("orphan" if storage.host_tag() == "ffffff" else "unknown")


# -- item 9: a cancelled run's write task that was still reading --------------------------------


def test_item09_a_write_task_of_a_stopped_run_writes_nothing(tmp_path):
    class Target:
        written = 0

        def write(self, block, location):
            Target.written += 1
            return block.nbytes

    where = (slice(0, 2),)
    assert _stop_writes("run-x") == 0
    with pytest.raises(ExportCancelled):
        _write_block(np.zeros(2), where, (0,), Target(), run="run-x")
    assert Target.written == 0
    _write_block(np.zeros(2), where, (0,), Target(), run="run-y")
    assert Target.written == 1


# -- after review: races, several directories, kills inside stores ------------------------------


@pytest.mark.parametrize(
    "fmt,container", [("zarr", "new.zarr"), ("n5", "new.n5"), ("hdf5", "new.h5")]
)
def test_item01_a_container_created_by_another_export_meanwhile_is_added_to_not_replaced(
    tmp_path, fmt, container
):
    """Two exports into a store that does not exist yet: the second to finish adds its node
    to the store the first created, instead of replacing it."""
    store = tmp_path / container
    other = le.ExportSettings(format=fmt, output=f"{store}/first")
    started: list[bool] = []

    def meanwhile(event) -> None:
        if not started:
            started.append(True)
            le.export(arange((3, 3)), other)

    mine = le.ExportSettings(format=fmt, output=f"{store}/second", chunks={"z": 1})
    result = le.export(arange((4, 64, 64)), mine, memory_limit="16MiB", progress=meanwhile)
    assert started
    np.testing.assert_array_equal(np.asarray(le.open_exported(result)), arange((4, 64, 64)))
    np.testing.assert_array_equal(np.asarray(le.open_source(f"{store}/first")), arange((3, 3)))
    assert hidden_temps(tmp_path) == []


@pytest.mark.parametrize("resume", [False, True])
def test_item05_clean_of_one_directory_leaves_a_running_sequence_alone(tmp_path, resume):
    """A sequence whose slices lie in two directories: cleaning the second directory while the
    export runs removes nothing of it."""
    data = arange((6, 64, 64))
    template = f"{tmp_path}/out/d{{slice_index}}/s.tif"  # one directory per slice
    settings = le.ExportSettings(format="tiff-sequence", output=template)
    cleaned: list[tuple[list[storage.Leftover], list[storage.Leftover]]] = []

    def clean_meanwhile(event) -> None:
        if not cleaned:
            done, kept = storage.clean_path(tmp_path / "out" / "d3")
            cleaned.append((done, kept))

    result = le.export(
        le.open_source(data, axes="zyx").chunk({"z": 1}),
        settings,
        resume=resume,
        memory_limit="16MiB",
        progress=clean_meanwhile,
    )
    assert cleaned and cleaned[0][0] == []
    np.testing.assert_array_equal(np.stack([tifffile.imread(p) for p in result.paths]), data)
    assert hidden_temps(tmp_path) == []


def test_item06_clean_of_one_slice_finishes_the_whole_interrupted_commit(seq_source, tmp_path):
    out = tmp_path / "out"
    assert kill_at(3, seq_args(seq_source["deep"], out)).returncode == -signal.SIGKILL
    cleaned = run_cli("clean", str(out / "s_4.tif"))  # a slice not yet renamed
    assert cleaned.returncode == 0, cleaned.stderr
    np.testing.assert_array_equal(read_slices(out), arange(SEQ_SHAPE))
    assert hidden_temps(out) == []


def test_item01_a_kill_while_a_node_is_replaced_leaves_nothing_inside_the_store(zarr_store):
    """Overwriting ``a.zarr/export`` moves the old node aside beside the store (never inside
    it, where zarr would list it), and ``clean a.zarr/export`` finishes the commit."""
    base = [
        "export",
        f"{zarr_store}/raw",
        "--format",
        "zarr",
        "--output",
        f"{zarr_store}/export",
        "--quiet",
    ]
    assert run_cli(*base, "--roi", "z=0:1").returncode == 0
    killed = kill_after_moving_the_old_output_aside([*base, "--overwrite"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not any(p.name.startswith(".") for p in zarr_store.iterdir())
    assert sorted(zarr.open_group(str(zarr_store), mode="r").array_keys()) == ["labels", "raw"]
    assert run_cli("clean", f"{zarr_store}/export").returncode == 0
    group = zarr.open_group(str(zarr_store), mode="r")
    np.testing.assert_array_equal(read_all(group["export"]), arange((6, 8, 10)))
    assert sorted(group.array_keys()) == ["export", "labels", "raw"]
    assert hidden_temps(zarr_store.parent) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_item01_consolidated_metadata_of_the_store_lists_the_new_array(tmp_path, zarr_format):
    store = tmp_path / "c.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=zarr_format)
    group.create_array("raw", shape=(2, 2), dtype="uint8")
    zarr.consolidate_metadata(str(store), zarr_format=zarr_format)
    le.export(
        arange((8, 8)),
        le.ExportSettings(format="zarr", output=f"{store}/exp", zarr_format=zarr_format),
    )
    opened = zarr.open_consolidated(str(store), zarr_format=zarr_format)
    assert as_array(opened["exp"]).shape == (8, 8)
    np.testing.assert_array_equal(read_all(opened["exp"]), arange((8, 8)))


def test_item02_finishing_a_dead_commit_never_replaces_a_newer_output(seq_source, tmp_path):
    out = tmp_path / "o.zarr"
    args = ["export", str(seq_source["deep"]), "--format", "zarr", "--output", str(out), "--quiet"]
    assert kill_at(1, args).returncode == -signal.SIGKILL  # complete, not yet renamed
    time.sleep(0.01)
    zarr.create_array(str(out), shape=(2,), chunks=(2,), dtype="uint8")[...] = 5  # written since
    assert run_cli("clean", str(out)).returncode == 0
    np.testing.assert_array_equal(zarr.open_array(str(out))[...], [5, 5])
    assert hidden_temps(tmp_path) == []


def test_item04_delete_all_after_a_killed_commit_brings_nothing_back(npy_source, tmp_path):
    project = tmp_path / "p.toml"
    project.write_text(
        f'[settings]\nformat = "tiff-sequence"\n'
        f'output = "{{dataset_dir}}/out/{{nickname}}_{{slice_index}}.tif"\n'
        f'[[datasets]]\nsource = "{npy_source}"\n'
    )
    assert (
        kill_at(2, ["batch", str(project), "export-all", "--quiet"]).returncode == -signal.SIGKILL
    )
    deleted = run_cli("batch", str(project), "delete-all", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_item05_clean_reports_the_size_of_what_it_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    token = f"t12345678p{int(dead.stdout)}h{storage.host_tag()}"
    orphan = storage.temp_path(tmp_path / "o.npy", token)
    orphan.write_bytes(b"x" * 3000)
    cleaned = run_cli("clean", str(tmp_path / "o.npy"))
    assert cleaned.returncode == 0 and "2.9 KiB" in cleaned.stdout, cleaned.stdout
    assert not orphan.exists()


# -- review of #27, finding 9: takeover markers and FileBackend's parts are leftovers too --------


def _dead_pid() -> int:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(dead.stdout)


def _owner_record(pid: int) -> bytes:
    record = {"pid": pid, "host": storage.host_tag(), "hostname": "x", "nonce": os.urandom(4).hex()}
    return json.dumps(record).encode()


def test_finding9_a_killed_takers_marker_and_a_records_part_are_found_and_cleaned(tmp_path):
    from lazyexport.storage.runs import marker_of

    token, pid = "r00112233445566aa", _dead_pid()
    owner = storage.temp_path(tmp_path / "o.zarr", token, "owner")
    owner.write_bytes(_owner_record(pid))
    marker = tmp_path / marker_of(owner.name, owner.read_bytes())
    marker.write_bytes(_owner_record(pid))  # a taker killed midway
    part = owner.with_name(f"{owner.name}.{'ab' * 16}.part")
    part.write_bytes(_owner_record(pid)[:5])  # a record whose writing never finished
    found = {f.path.name: f for f in storage.leftovers([tmp_path])}
    assert set(found) == {owner.name, marker.name, part.name}
    assert found[marker.name].kind == "take" and found[part.name].kind == "part"
    assert all(f.state == "orphan" for f in found.values())
    assert "takeover" in found[marker.name].describe()
    assert "never finished" in found[part.name].describe()
    cleaned = run_cli("clean", str(tmp_path / "o.zarr"))
    assert cleaned.returncode == 0 and marker.name in cleaned.stdout, cleaned.stdout
    assert part.name in cleaned.stdout
    assert list(tmp_path.iterdir()) == []


def test_finding9_a_live_takers_marker_is_left_alone(tmp_path):
    from lazyexport.storage.runs import marker_of, owner_record

    token = "r00112233445566bb"
    owner = storage.temp_path(tmp_path / "o.zarr", token, "owner")
    owner.write_bytes(_owner_record(_dead_pid()))
    marker = tmp_path / marker_of(owner.name, owner.read_bytes())
    with storage.Run(token):
        marker.write_bytes(owner_record())  # this process is taking the dead run over
        removed, kept = storage.clean([tmp_path])
        assert [f.path for f in kept] == [marker] and kept[0].state == "running"
        assert [f.path for f in removed] == [owner]
    assert marker.exists()
