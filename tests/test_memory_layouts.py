"""The budget holds in every source layout, to every output format (the cost model's table at
1/16 of the benchmark's scale: `make bench-memory` runs 8 GiB at 512 MiB). A 512 MiB generated
float32 volume (1024 x 1024 planes) chunked flat, small, deep, or in cubes, exported with
renormalize to uint8 at ``memory_limit=32MiB`` in a fresh process: its peak resident memory stays
under the budget + 256 MiB, within a quarter of the plan's projection, and each source chunk is
decoded once. A layout whose one chunk cannot fit the budget is refused in one line."""

from __future__ import annotations

import json
import os

import pytest

from helpers.fresh import run_json

MiB = 2**20
BUDGET = "32MiB"
SHAPE = (128, 1024, 1024)
LAYOUTS = [(1, 1024, 1024), (16, 64, 64), (64, 256, 256), (128, 128, 128)]
FORMATS = [
    "zarr",
    "hdf5",
    "n5",
    "tiff",
    "tiff-sequence",
    "npy",
]  # ome-zarr, png-sequence: see docs/performance.md, known limits

SCRIPT = """
import json, sys
import lazyexport as le
from lazyexport.demo import smooth_volume
shape, layout, fmt, output, budget = json.loads(sys.argv[1])
source = le.open_source(smooth_volume(tuple(shape), tuple(layout)), axes="zyx")
settings = le.ExportSettings(
    format=fmt, output=output, renormalize=((0, 1), (0, 255)), dtype="uint8"
)
try:
    plan = le.plan(source, settings, memory_limit=budget)
except le.ExportError as exc:
    print(json.dumps({"refused": str(exc)}))
    sys.exit(0)
result = le.run.execute(plan)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, "projected": plan.costs.projected_peak,
                  "amplification": plan.costs.amplification, "staged": plan.staged}))
"""


def run(layout, fmt, tmp_path) -> dict:
    output = str(tmp_path / ("o_{slice_index}" if fmt.endswith("sequence") else "o"))
    return run_json(SCRIPT, json.dumps([SHAPE, layout, fmt, output, BUDGET]), timeout=600)


# every layout to every format; LAZYEXPORT_MEMORY_LAYOUTS=diagonal (make test, on the other
# Pythons): each format once and each layout at least once, a quarter of the exports
PAIRS = [(fmt, layout) for fmt in FORMATS for layout in LAYOUTS]
if os.environ.get("LAZYEXPORT_MEMORY_LAYOUTS") == "diagonal":
    PAIRS = [(fmt, LAYOUTS[i % len(LAYOUTS)]) for i, fmt in enumerate(FORMATS)]


@pytest.mark.parametrize(
    "fmt, layout", PAIRS, ids=[f"{f}-{'x'.join(map(str, s))}" for f, s in PAIRS]
)
def test_every_layout_to_every_format_stays_within_the_budget(tmp_path, layout, fmt):
    found = run(layout, fmt, tmp_path)
    assert "peak" in found, found
    assert found["peak"] <= 32 * MiB + 256 * MiB, found
    assert 0.75 <= found["peak"] / found["projected"] <= 1.25, found
    assert found["amplification"] <= 1.05, found


def test_a_chunk_that_alone_exceeds_the_budget_is_refused(tmp_path):
    found = run((64, 1024, 1024), "zarr", tmp_path)  # one chunk: 256 MiB of float32
    assert found == {"refused": found["refused"]}
    assert "one source chunk of (64, 1024, 1024) float32 decodes to 256.00 MiB" in found["refused"]
    assert "smallest memory limit that works is" in found["refused"]
