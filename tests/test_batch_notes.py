"""``batch export-all`` and ``batch export`` print each dataset's notes, named by the dataset, as
``export`` prints a single export's."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import run_cli

NOTE = "hdf5 outputs cannot resume; exported from the start"


@pytest.fixture
def project(tmp_path):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((3, 8, 8), dtype=np.uint8))
    path = tmp_path / "project.toml"
    path.write_text(
        '[settings]\nformat = "hdf5"\noutput = "{dataset_dir}/out/{nickname}.h5"\n'
        '[[datasets]]\nsource = "a.npy"\n[[datasets]]\nsource = "b.npy"\n'
    )
    return path


def test_export_all_prints_every_datasets_notes(project):
    run = run_cli("batch", project, "export-all", "--resume", "-q")
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: a: {NOTE}", f"note: b: {NOTE}"]


def test_export_of_one_dataset_prints_its_notes_as_export_does(project, tmp_path):
    named = run_cli("batch", project, "export", "b", "--resume", "-q")
    assert named.returncode == 0, named.stderr
    assert f"note: b: {NOTE}" in named.stderr.splitlines()
    single = run_cli(
        "export", tmp_path / "a.npy", "--output", tmp_path / "single.h5", "--resume", "-q"
    )
    assert single.returncode == 0, single.stderr
    assert f"note: {NOTE}" in single.stderr.splitlines()
