"""Renormalize applies to the steps' result, so a range taken from the data (min/max, or
percentiles) is the steps' result's, not the raw cutout's: a smoothed or binned volume
renormalized to 0..255 reaches 0 and 255."""

import numpy as np
import pytest
import zarr

import lazyexport as le


def _export(tmp_path, renormalize, **steps):
    data = np.random.default_rng(0).integers(0, 1000, (4, 40, 50), dtype=np.uint16)
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}.zarr"
    settings = le.ExportSettings(
        format="zarr", output=str(out), renormalize=renormalize, dtype="uint8", **steps
    )
    le.export(le.open_source(data, axes="zyx"), settings)
    return zarr.open_array(str(out))[...]


@pytest.mark.parametrize("asked", [None, ("p0", "p100")], ids=["minmax", "percentiles"])
@pytest.mark.parametrize(
    "steps", [{"smooth": {"y": 2, "x": 2}}, {"bin": {"y": 4, "x": 4}}], ids=["smooth", "bin"]
)
def test_the_range_read_from_the_data_is_the_steps_result_s(tmp_path, asked, steps):
    got = _export(tmp_path, (asked, (0, 255)), **steps)
    assert got.min() == 0 and got.max() == 255, (got.min(), got.max())
