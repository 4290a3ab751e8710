"""Killed exports (issue 13 items 1, 2, 4, 5, 6 and 9, review finding 9): a kill during the
commit ends right on ``--resume``, ``clean`` or the next export; an overwrite killed between its
two renames loses neither output, nor a kill while a node of a store is replaced the store; what a
killed export leaves is found and removed by the next export, ``clean`` and Delete All, never a
running export's files; a write task of a stopped run writes nothing. Each test names the item it
guards and failed before its fix.
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
from helpers import arange, cli_env, hidden_temps, run_cli
from helpers.zarr_nodes import read_all
from lazyexport import storage
from lazyexport.errors import ExportCancelled, OutputBusyError
from lazyexport.plan import build_plan
from lazyexport.run import _stop_writes, _write_block

KILL_AT_COMMIT = Path(__file__).with_name("helpers") / "kill_at_commit.py"


SLOW_CLI = Path(__file__).with_name("helpers") / "slow_cli.py"


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
