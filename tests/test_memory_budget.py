"""The memory budget: peak resident memory of a whole export, measured in a fresh process
(VmHWM), stays under ``memory_limit`` + 256 MiB (interpreter, libraries, allocator
slack) whatever the volume size:

- an 8 GiB lazily generated volume with ``memory_limit=512MiB`` in every format, and as sharded
  Zarr (TIFF and OME-Zarr with its pyramid are covered at 4 GiB in test_memory_formats.py).
  ``make test`` runs a sample of writers of three kinds (one file: :data:`SAMPLE`; a chunk
  store: the 8 GiB Zarr export of the growth test below; a file per slice: the sequence
  below, at 2 GiB), so that CI stays under 30 minutes; ``make memtest``
  (``LAZYEXPORT_MEMORY_FORMATS=all``) runs every format;
- peak memory of a 1 GiB and an 8 GiB Zarr export are the same (no growth with the volume), and
  the 8 GiB one is checked as the formats above are;
- a TIFF sequence from a Zarr file chunked 64 slices deep (64 x 512 x 512 chunks: one row of
  chunks is the whole volume), 4 GiB (4096 x 4096 planes) in ``make memtest``, 2 GiB
  (4096 x 2048 planes, still four times the budget) in ``make test``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from helpers.fresh import run_json
from lazyexport import open_exported
from lazyexport.demo import sample_volume

MiB = 2**20
BUDGET = 512 * MiB
SLACK = 256 * MiB
pytestmark = pytest.mark.usefixtures("free_disk")  # gigabytes per test: removed after it
EIGHT_GIB = (1024, 1024, 1024)  # z, y, x; two float32 channels

# VmHWM: this process's own peak. ru_maxrss would also count the parent's resident memory at
# fork time (Linux carries the high-water mark across exec), here pytest's.
SCRIPT = """
import json, sys
import lazyexport as le
from lazyexport.demo import sample_volume
source, settings = json.loads(sys.argv[1]), le.ExportSettings.from_dict(json.loads(sys.argv[2]))
if isinstance(source, list):
    source = sample_volume(shape=tuple(source))
result = le.export(source, settings, memory_limit="512MiB")
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": int(hwm.split()[1]) * 1024,
                  "paths": [str(p) for p in result.paths]}))
"""


def run_export(source, settings: dict) -> dict:
    report = run_json(SCRIPT, json.dumps(source), json.dumps(settings), timeout=900)
    print(
        f"{settings['format']} {source if isinstance(source, list) else 'file'}: "
        f"peak RSS {report['peak'] / MiB:.0f} MiB"
    )
    return report


FORMATS: dict[str, dict[str, Any]] = {
    "zarr": {"output": "v.zarr"},
    "hdf5": {"output": "v.h5"},
    "n5": {"output": "v.n5", "compression": "raw"},
    "npy": {"output": "v.npy"},
    "zarr-sharded": {
        "format": "zarr",
        "output": "s.zarr",
        "chunks": {"z": 1, "y": 128, "x": 128},
        "shards": {"z": 16, "y": 512, "x": 512},
    },
    "tiff-sequence": {"output": "seq/z{slice_index}.tif"},
    "png-sequence": {
        "output": "png/z{slice_index}.png",
        "renormalize": [[0, 1], [0, 255]],
        "dtype": "uint8",
        "roi": {"c": [0, 1]},
        "axis_order": "zyx",
    },
}


FULL = os.environ.get("LAZYEXPORT_MEMORY_FORMATS") == "all"  # make memtest
SAMPLE = ("hdf5",)  # zarr: in test_peak_memory_does_not_grow_with_the_volume
# (zarr: the growth test's 8 GiB export, checked the same way)
CHOSEN = [f for f in FORMATS if f != "zarr"] if FULL else SAMPLE


def expected(z: int) -> np.ndarray:
    return sample_volume(shape=EIGHT_GIB).isel(z=z).values  # yxc


@pytest.mark.slow
@pytest.mark.parametrize("fmt", CHOSEN)
def test_8_gib_export_stays_within_the_budget(tmp_path, fmt):
    settings = {"format": fmt, **FORMATS[fmt]}
    settings["output"] = str(tmp_path / settings["output"])
    report = run_export(list(EIGHT_GIB), settings)
    if fmt == "zarr-sharded":
        assert zarr.open_array(report["paths"][0], mode="r").shards == (16, 512, 512, 2)
    check_8_gib_export(tmp_path, fmt, report)


def check_8_gib_export(tmp_path: Path, fmt: str, report: dict) -> None:
    """Within the budget, no temporaries left, and slice 777 reads back as generated."""
    assert report["peak"] < BUDGET + SLACK, f"peak RSS {report['peak'] / MiB:.0f} MiB"
    assert not [p for p in tmp_path.rglob("*") if ".lazyexport-" in p.name]  # no temporaries left
    z = 777
    if fmt.endswith("-sequence"):
        back = open_exported([report["paths"][z]])
        plane = back.isel(z=0).values
        if fmt == "png-sequence":
            ref = np.clip(np.rint(expected(z)[..., 0] * np.float32(255)), 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(plane, ref)
        else:
            np.testing.assert_array_equal(plane, expected(z))
    else:
        back = open_exported(report["paths"][0] + ("/exported_data" if fmt == "hdf5" else ""))
        np.testing.assert_array_equal(back.isel(z=z).transpose("y", "x", "c").values, expected(z))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_volume(tmp_path):
    peaks = {}
    for factor, shape in ((1, (128, 1024, 1024)), (8, EIGHT_GIB)):
        report = run_export(
            list(shape), {"format": "zarr", "output": str(tmp_path / f"x{factor}.zarr")}
        )
        peaks[factor] = report["peak"]
    check_8_gib_export(tmp_path, "zarr", report)  # the 8 GiB one, as every format's
    assert peaks[8] - peaks[1] < 96 * MiB, {k: v // MiB for k, v in peaks.items()}


@pytest.mark.slow
def test_slice_sequence_from_deep_chunks_stays_within_the_budget(tmp_path):
    """64-slice-deep source chunks: blocks follow them and slices are assembled in a staging
    file."""
    source = tmp_path / "deep.zarr"
    width = 4096 if FULL else 2048
    volume = sample_volume(shape=(64, 4096, width), chunks=(64, 512, 512)).isel(c=0)
    arr = zarr.create_array(
        str(source),
        shape=volume.shape,
        chunks=(64, 512, 512),
        dtype="float32",
        compressors=None,
        dimension_names=["z", "y", "x"],
    )
    volume.data.store(arr, lock=False, compute=True, scheduler="threads", num_workers=2)
    assert arr.nbytes == (4 if FULL else 2) * 2**30
    report = run_export(
        str(source),
        {"format": "tiff-sequence", "output": str(tmp_path / "seq" / "z{slice_index}.tif")},
    )
    assert report["peak"] < BUDGET + SLACK, f"peak RSS {report['peak'] / MiB:.0f} MiB"
    assert len(report["paths"]) == 64
    assert not [p for p in tmp_path.rglob("*") if ".lazyexport-" in p.name]
    for z in (0, 41, 63):
        np.testing.assert_array_equal(tifffile.imread(report["paths"][z]), arr[z])
