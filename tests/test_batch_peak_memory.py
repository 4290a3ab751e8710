"""Each dataset of a batch reports its own peak memory: the process's peak resident memory
during that dataset's export (``VmHWM`` reset when it starts, Linux), not the peak of the whole
process so far, so a small dataset exported after a big one does not show the big one's peak. Its
limit: what the process already holds when the export starts (imported libraries, memory an
earlier export left allocated) is part of the figure."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import lazyexport as le
from lazyexport import cost
from lazyexport.run import ExportResult

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the peak is measured on Linux (VmHWM)"
)


def test_a_small_dataset_after_a_big_one_reports_its_own_peak(tmp_path):
    np.save(
        tmp_path / "big.npy",
        np.random.default_rng(0).integers(0, 60000, (32, 1024, 1024), dtype=np.uint16),
    )
    np.save(tmp_path / "small.npy", np.zeros((2, 16, 16), dtype=np.uint8))
    project = tmp_path / "p.toml"
    project.write_text(
        '[settings]\nformat = "zarr"\noutput = "{dataset_dir}/out/{nickname}.zarr"\n'
        '[[datasets]]\nsource = "big.npy"\n[[datasets]]\nsource = "small.npy"\n'
    )
    held: dict[str, int] = {}

    def done(nickname, outcome):
        held[nickname] = cost.process_rss()  # what the next dataset starts with

    report = le.Batch.load(project).export_all(on_done=done)
    first, second = report.results["big"], report.results["small"]
    assert isinstance(first, ExportResult) and isinstance(second, ExportResult)
    big_peak, small_peak = first.peak_memory, second.peak_memory
    assert big_peak > held["big"] + 32 * 2**20  # the big export rose well above what it left
    assert small_peak < big_peak
    assert small_peak <= held["big"] + 16 * 2**20  # at most a little above what it started with
