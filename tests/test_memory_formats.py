"""Peak memory of the streaming writers: a 4 GiB lazily generated volume exported with a 512 MiB
budget, as multipage TIFF and as OME-Zarr with its pyramid, each in a fresh process whose
peak resident memory (VmHWM) must stay under the budget plus 256 MiB of interpreter,
libraries and allocator slack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from helpers.fresh import run_json
from helpers.zarr_nodes import as_array, read
from lazyexport.demo import sample_volume

SHAPE = (512, 1024, 1024)  # z, y, x; two float32 channels: 4 GiB
BUDGET = 512 * 2**20
SLACK = 256 * 2**20
pytestmark = pytest.mark.usefixtures("free_disk")  # gigabytes per test: removed after it

SCRIPT = """
import json, sys, time
import lazyexport as le
from lazyexport.demo import sample_volume
settings = le.ExportSettings.from_json(sys.argv[1])
volume = sample_volume(shape={shape})
assert volume.nbytes == 4 * 2**30
start = time.perf_counter()
result = le.export(volume, settings, memory_limit={budget})
# not ru_maxrss: see test_memory_budget
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"peak": int(hwm.split()[1]) * 1024,
                   "seconds": time.perf_counter() - start, "output": str(result.output)}}))
"""


def run_export(settings: dict) -> dict:
    code = SCRIPT.format(shape=SHAPE, budget=BUDGET)
    report = run_json(code, json.dumps(settings))
    print(
        f"{settings['format']}: peak RSS {report['peak'] / 2**20:.0f} MiB "
        f"in {report['seconds']:.0f} s"
    )
    return report


def expected_plane(z: int) -> np.ndarray:
    return sample_volume(shape=SHAPE).isel(z=z).values.transpose(2, 0, 1)  # cyx


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tiff", "ome-zarr"])
def test_peak_memory_of_a_4_gib_export(tmp_path, fmt):
    if fmt == "tiff":
        settings = {
            "format": "tiff",
            "tiff_flavor": "ome",
            "axis_order": "czyx",
            "output": str(tmp_path / "big.tif"),
        }
    else:
        settings = {
            "format": "ome-zarr",
            "output": str(tmp_path / "big.ome.zarr"),
            "compression": "none",
        }
    report = run_export(settings)
    assert report["peak"] < BUDGET + SLACK, f"peak RSS {report['peak'] / 2**20:.0f} MiB"
    z = 301
    if fmt == "tiff":
        with tifffile.TiffFile(report["output"]) as tif:
            assert tif.is_ome and tif.is_bigtiff
            assert tif.series[0].axes == "CZYX" and tif.series[0].shape == (2, 512, 1024, 1024)
            plane = np.stack([tif.pages[c * 512 + z].asarray() for c in range(2)])
        np.testing.assert_array_equal(plane, expected_plane(z))
    else:
        group = zarr.open_group(report["output"], mode="r")
        assert as_array(group["0"]).shape == (2, *SHAPE)
        assert as_array(group["1"]).shape == (2, 256, 512, 512)
        assert "2" not in group  # 512x512 fits: two levels
        np.testing.assert_array_equal(read(group["0"], np.s_[:, z]), expected_plane(z))
        level1 = read(group["1"], np.s_[:, 150])
        np.testing.assert_allclose(
            level1,
            read(group["0"], np.s_[:, 300:302])
            .reshape(2, 2, 512, 2, 512, 2)
            .mean(axis=(1, 3, 5), dtype=np.float64)
            .astype(np.float32),
            rtol=1e-6,
        )
