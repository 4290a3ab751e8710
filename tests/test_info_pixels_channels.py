"""``lazyexport info`` shows the pixel sizes and the channel names a source has (and no such lines
where it has none)."""

from __future__ import annotations

import numpy as np
import pytest

from lazyexport import ExportSettings, export
from lazyexport.cli import main


@pytest.fixture
def ome_zarr(tmp_path):
    """An OME-Zarr with pixel sizes (µm) and channel names, as lazyexport writes it."""
    import xarray as xr

    data = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    src = xr.DataArray(
        data,
        dims=("c", "z", "y", "x"),
        attrs={"channel_names": ["nuclei", "membrane"]},
    )
    out = tmp_path / "img.ome.zarr"
    export(
        src,
        ExportSettings(
            format="ome-zarr", output=str(out), pixel_size={"z": 2.0, "y": 0.5, "x": 0.25}
        ),
    )
    return out


def test_info_shows_pixel_sizes_and_channel_names(ome_zarr, capsys):
    assert main(["info", str(ome_zarr)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "pixels    z=2 y=0.5 x=0.25 µm" in lines
    assert "channels  nuclei, membrane" in lines


def test_info_without_them_shows_neither(tmp_path, capsys):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 4, 5), dtype=np.uint16))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "shape     (z=3, y=4, x=5)" in out
    assert "pixels" not in out and "channels" not in out
