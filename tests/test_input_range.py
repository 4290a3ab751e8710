"""Renormalizing without an input range (issue 13 item 22): for integers the range is the data's
range inside the ROI, from Python, the command line and a batch project with an empty range, and
the docs say so. Each test failed before its fix.
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import zarr

import lazyexport as le
from helpers import ROOT, make_data, run_cli, write_hdf5


def renormalized(data: np.ndarray, lo: float, hi: float, out=(0, 255), dtype="uint8") -> np.ndarray:
    """The documented renormalization (float32 for inputs up to 16 bits), then rounding and
    clipping."""
    f = np.float32
    y = (data.astype(f) - f(lo)) * f(out[1] - out[0]) / f(hi - lo) + f(out[0])
    info = np.iinfo(dtype)
    return np.clip(np.rint(y), info.min, info.max).astype(dtype)


def test_item22_api_integer_input_range_is_the_data_range_inside_the_roi(tmp_path):
    rng = np.random.default_rng(22)
    data = rng.integers(1000, 3000, size=(6, 10, 12), dtype=np.uint16)
    data[0] = 0  # outside the ROI: must not widen the range
    data[-1] = 65535
    settings = le.ExportSettings(
        roi={"z": (1, 5)},
        renormalize=(None, (0, 255)),
        dtype="uint8",
        format="npy",
        output=str(tmp_path / "out.npy"),
    )
    result = le.export(le.open_source(data, axes="zyx"), settings)
    inside = data[1:5]
    lo, hi = int(inside.min()), int(inside.max())
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), renormalized(inside, lo, hi))
    assert any(f"[{lo}, {hi}]" in note and "data" in note for note in result.notes), result.notes


def test_item22_cli_renormalize_without_input_range_on_integers(tmp_path):
    data = (make_data("uint8") // 4 + 50).astype(np.uint8)  # values 50..113
    src = write_hdf5(tmp_path / "raw.h5", data, dataset="data")
    proc = run_cli(
        "export",
        src.spec,
        "--renormalize",
        ":0,255",
        "--dtype",
        "uint8",
        "--output",
        tmp_path / "out.h5",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    assert "renormalize input range taken from the data inside the ROI: [50, 113]" in proc.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["exported_data"][...], renormalized(data, 50, 113))


def test_item22_batch_empty_input_range_is_the_data_range(tmp_path):
    data = np.arange(-40, 60, dtype=np.int16).reshape(4, 5, 5)
    np.save(tmp_path / "vol.npy", data)
    batch = le.Batch.from_dict(
        {
            "settings": {
                "format": "zarr",
                "output": "{dataset_dir}/{nickname}.zarr",
                "dtype": "uint8",
                "renormalize": [[], [0, 255]],
            },
            "datasets": [{"source": "vol.npy"}],
        },
        base_dir=tmp_path,
    )
    report = batch.export_all()
    assert report.ok, report.summary()
    written = zarr.open_array(str(tmp_path / "vol.zarr"))[...]
    np.testing.assert_array_equal(written, renormalized(data, -40, 59))


def test_item22_docs_say_the_data_range():
    readme = (ROOT / "README.md").read_text()
    assert "dtype's range for integers" not in readme
    assert le.ExportSettings.__doc__ is not None
    assert "the dtype's range" not in le.ExportSettings.__doc__
    for text in (
        readme,
        (ROOT / "docs" / "batch.md").read_text(),
        (ROOT / "docs" / "usage.md").read_text(),
    ):
        assert re.search(r"min/max\s+inside\s+the\s+(ROI|cutout)", text), (
            "the data's range is not said"
        )
