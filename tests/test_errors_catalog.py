"""Walks the catalog of mistakes in docs/errors.md: each command, run in a directory holding the
files the catalog describes, exits with status 2 and one ``error:`` line holding the text the
catalog shows, without a traceback, creating or changing nothing. Rows that name a test (errors
that only show during the writes) must name one that exists and checks that text."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers import ROOT, run_cli, snapshot

CATALOG = ROOT / "docs" / "errors.md"
ROW = re.compile(r"^\| (?P<what>[^|]+) \| `(?P<how>[^`]+)` \| `(?P<says>[^`]+)` \|$")


def rows() -> list[tuple[str, str, str]]:
    found = [
        cast("tuple[str, str, str]", m.group("what", "how", "says"))
        for line in CATALOG.read_text().splitlines()
        if (m := ROW.match(line))
    ]
    assert len(found) >= 30, "the catalog's tables were not found"
    return found


COMMANDS = [r for r in rows() if r[1].startswith("lazyexport ")]
INJECTED = [r for r in rows() if r[1].startswith(("test_", "tests/"))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The files the catalog's commands run against (described at the top of docs/errors.md)."""
    d = tmp_path_factory.mktemp("catalog")
    volume = np.arange(4 * 32 * 32, dtype="uint16").reshape(4, 32, 32)
    np.save(d / "v.npy", volume)
    np.save(d / "c.npy", np.zeros((4, 8, 8), dtype="complex64"))
    (d / "notes.txt").write_text("mine")
    bad = zarr.create_array(
        str(d / "bad.zarr"),
        shape=(4, 32, 32),
        chunks=(2, 16, 16),
        dtype="float32",
        dimension_names=["z", "y", "x"],
    )
    bad[...] = 1
    (d / "bad.zarr" / "c" / "0" / "0" / "0").write_bytes(b"garbage" * 10)
    tifffile.imwrite(d / "t.tif", np.ones((6, 64, 64), np.uint16))
    whole = (d / "t.tif").read_bytes()
    (d / "trunc.tif").write_bytes(whole[: len(whole) // 2])
    (d / "t.tif").unlink()
    with tifffile.TiffWriter(d / "cells.ome.tif", ome=True) as tif:
        for _ in range(2):
            tif.write(np.zeros((2, 8, 8), np.uint8), metadata={"axes": "CYX"})
    (d / "stack.dv").write_bytes(bytes(1024))
    (d / "res.zarr").mkdir()
    (d / "res.zarr" / "thesis.txt").write_text("mine")
    le.export(str(d / "v.npy"), le.ExportSettings(format="hdf5", output=str(d / "out.h5")))
    (d / "broken.toml").write_text(
        '[settings]\nformat = "hdf5"\ncolour = "red"\n\n[[datasets]]\nsource = "v.npy"\n'
    )
    (d / "list.toml").write_text('[[datasets]]\nsource = ["v.npy", "c.npy"]\n')
    return d


@pytest.mark.parametrize("what,command,says", COMMANDS, ids=[r[0] for r in COMMANDS])
def test_a_catalogued_mistake_is_one_line_with_exit_2_and_changes_nothing(
    workdir, what, command, says
):
    before = snapshot(workdir)
    run = run_cli(*shlex.split(command)[1:], cwd=workdir)
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert says in lines[0], (says, lines[0])
    assert "Traceback" not in run.stderr + run.stdout
    assert snapshot(workdir) == before  # nothing created, nothing changed


@pytest.mark.parametrize("what,test,says", INJECTED, ids=[r[0] for r in INJECTED])
def test_a_catalogued_error_during_the_writes_names_a_test_that_checks_it(what, test, says):
    path, _, test = test.rpartition("::")  # tests/FILE.py::test_name, or in test_bad_input.py
    source = (ROOT / (path or "tests/test_bad_input.py")).read_text()
    assert f"def {test}(" in source
    assert says in source  # the text the test expects


def test_the_catalog_covers_every_class_of_mistake():
    covered = " ".join(r[0] for r in rows()).lower()
    for word in (
        "roi",
        "axis",
        "dtype",
        "renormalize",
        "placeholder",
        "file where a directory",
        "existing output",
        "output is the source",
        "corrupt",
        "truncated",
        "unsupported source dtype",
        "does not use",
        "memory limit",
        "project",
        "disk",
        "read-only",
    ):
        assert word in covered, word
