"""Start-up: ``--help``, ``--version``, ``formats`` and the command line's own errors import none
of the heavy libraries (``python -X importtime`` of the real program lists every module it
imports), and ``formats`` lists every format in aligned columns."""

from __future__ import annotations

import subprocess

import pytest

from helpers import cli_command, cli_env

HEAVY = ("dask", "xarray", "zarr", "h5py", "tifffile", "numpy")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    command = cli_command(*args)
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return done, modules


@pytest.mark.parametrize(
    "args, status",
    [
        (("--version",), 0),
        (("--help",), 0),
        (("formats",), 0),
        (("no-such-command",), 2),
        ((), 2),
        (("info",), 2),  # its argument missing
    ],
)
def test_light_commands_import_no_heavy_library(args, status):
    done, modules = _imported(*args)
    assert done.returncode == status, done.stderr[-2000:]
    assert "lazyexport" in modules  # the measurement sees the program's own imports
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_an_export_imports_them_when_it_runs(tmp_path):
    """The measurement would see them: a command that needs them imports them."""
    done, modules = _imported("export", str(tmp_path / "missing.npy"))
    assert done.returncode == 2
    assert {"numpy", "dask", "xarray"} <= modules


def test_formats_columns_start_at_the_same_offsets():
    done = subprocess.run(
        cli_command("formats"), capture_output=True, text=True, env=cli_env(), timeout=120
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) >= 8
    starts = [_column_starts(line) for line in lines]
    assert all(s == starts[0] for s in starts), starts


def _column_starts(line: str) -> tuple[int, ...]:
    """Where the kind, the extensions, the compressions and the description start."""
    kind = min(i for i in (line.find(" single"), line.find(" sequence")) if i > 0) + 1
    extensions = line.index(" .") + 1
    compression = line.index("compression: ")
    default = line.index(")", compression) + 1
    description = default + len(line[default:]) - len(line[default:].lstrip())
    return kind, extensions, compression, description
