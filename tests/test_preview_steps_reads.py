"""preview's live layer with a step that is not piecewise reads only the plane's source region
(its halo, its windows), not whole dask chunks of the source (32 planes here): counted by the
planes each read of the source asks for. Without steps it reads one plane (a one-plane ROI)."""

import dask.array as da
import numpy as np

import lazyexport as le


class Counting:
    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.planes = 0

    def __getitem__(self, key):
        out = self.data[key]
        self.planes += out.shape[0]
        return out


def planes_read(**steps) -> int:
    store = Counting(np.random.default_rng(0).random((64, 64, 64), dtype=np.float32))
    src = le.open_source(da.from_array(store, chunks=(32, 64, 64)), axes="zyx")
    settings = le.ExportSettings(format="zarr", output="/nonexistent/o.zarr", **steps)
    le.preview(src, settings, at={"z": 40}, layers=["live"])
    return store.planes


def test_without_steps_one_plane():
    assert planes_read() <= 1


def test_smooth_in_plane_reads_one_plane():
    assert planes_read(smooth={"y": 1, "x": 1}) <= 1


def test_bin_in_plane_reads_one_plane():
    assert planes_read(bin={"y": 2, "x": 2}) <= 1


def test_a_z_smooth_reads_its_halo_only():
    assert planes_read(smooth={"z": 1}) <= 1 + 2 * 4  # radius int(4 * 1 + 0.5) each side
