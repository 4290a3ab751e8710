"""A built-in sample volume: a lazily generated 3-D two-channel probability map.

Nothing is held in memory: each block is computed from its coordinates when a writer asks for
it, so the volume can be made as large as a test or benchmark needs.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

DEFAULT_SHAPE = (160, 512, 512)  # z, y, x; with 2 channels of float32: 320 MiB


def _probability_block(block_info=None, out_dtype="float32"):
    info = block_info[None]
    (z0, z1), (y0, y1), (x0, x1), (c0, c1) = info["array-location"]
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    # smooth blobs: a sum of waves through a logistic function gives values in (0, 1)
    field = np.sin(x / 23.0 + z / 41.0) + np.cos(y / 29.0 - x / 67.0) + np.sin(z / 17.0 + y / 53.0)
    p = 1.0 / (1.0 + np.exp(-2.5 * field))
    channels = np.stack([p, 1.0 - p], axis=-1)[..., c0:c1]
    return channels.astype(out_dtype)


def sample_volume(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    chunks: tuple[int, int, int] = (32, 256, 256),
    dtype: str = "float32",
) -> xr.DataArray:
    """A ``zyxc`` float probability map (channel 0: foreground, 1: background), generated lazily."""
    full = (*shape, 2)
    data = da.map_blocks(
        _probability_block,
        dtype=np.dtype(dtype),
        chunks=da.core.normalize_chunks((*chunks, 2), full),
        meta=np.empty((0, 0, 0, 0), dtype=dtype),
        out_dtype=dtype,
    )
    return xr.DataArray(
        data,
        dims=("z", "y", "x", "c"),
        name="sample",
        attrs={"source": "<built-in sample volume>", "nickname": "sample"},
    )


def _smooth_block(block_info=None) -> np.ndarray:
    """One chunk of :func:`smooth_volume`, filled in place plane by plane (per plane only two
    1-D vectors are made), so computing a chunk needs little more than the chunk."""
    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    out = np.empty((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
    y = np.arange(y0, y1, dtype=np.float64)
    x = np.arange(x0, x1, dtype=np.float64)
    for k, z in enumerate(range(z0, z1)):
        sy = (0.25 * np.sin(y / 97.0 + z / 31.0)).astype(np.float32)
        cx = (0.5 + 0.25 * np.cos(x / 61.0 - z / 43.0)).astype(np.float32)
        np.add(sy[:, None], cx[None, :], out=out[k])
    return out


def smooth_volume(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> da.Array:
    """A ``zyx`` float32 volume of values in [0, 1] (0.5 + (sin along y + cos along x) / 4, their
    phases drifting with z), generated lazily in ``chunks`` of any layout: the memory and scale
    benchmarks' source."""
    return da.map_blocks(
        _smooth_block,
        dtype=np.float32,
        chunks=da.core.normalize_chunks(chunks, shape),
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
