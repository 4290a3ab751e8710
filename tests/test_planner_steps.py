"""The planner counts what an output block really reads through any step of the pipeline
(lazyexport.plan_chunks.PipelineReach, asked of Pipeline.source_region), not only a bin's: a
halo around the block, an axis a step removes (read whole), and nothing changes without such
steps. The steps here are defined by the test, as a user's would be."""

from __future__ import annotations

import numpy as np
import xarray as xr
import zarr

from helpers import make_data, write_zarr3
from lazyexport import ExportSettings
from lazyexport.plan import build_plan
from lazyexport.run import execute
from lazyexport.steps import Axes, Region, Shape, Step


class Halo(Step):
    """Each pixel: the maximum of its neighbours up to ``h`` pixels away along ``axis``."""

    kind = "general"

    def __init__(self, axes: str, axis: str, h: int):
        self.i, self.h = axes.index(axis), h

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        s, n = out_region[self.i], in_shape[self.i]
        grown = slice(max(s.start - self.h, 0), min(s.stop + self.h, n))
        return tuple(grown if k == self.i else r for k, r in enumerate(out_region))

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        s = out_region[self.i]
        lo = s.start - max(s.start - self.h, 0)
        moved = np.moveaxis(block, self.i, 0)
        out = np.stack(
            [
                moved[max(j - self.h, 0) : j + self.h + 1].max(axis=0)
                for j in range(lo, lo + s.stop - s.start)
            ]
        )
        return np.moveaxis(out, 0, self.i)


class SumOver(Step):
    """The sum over ``axis``, which the output no longer has."""

    kind = "general"

    def __init__(self, axes: str, axis: str):
        self.in_axes, self.i = tuple(axes), axes.index(axis)

    def axes(self, in_axes: Axes) -> Axes:
        return tuple(a for k, a in enumerate(in_axes) if k != self.i)

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(n for k, n in enumerate(in_shape) if k != self.i)

    def source_region(self, out_region: Region, in_shape: Shape) -> Region:
        found = list(out_region)
        found.insert(self.i, slice(0, in_shape[self.i]))
        return tuple(found)

    def apply(self, block: np.ndarray, out_region: Region, in_shape: Shape) -> np.ndarray:
        return block.sum(axis=self.i, dtype=block.dtype)

    def lazy(self, arr: xr.DataArray) -> xr.DataArray:
        return arr.sum(self.in_axes[self.i], dtype=arr.dtype)


def test_a_halo_is_read_by_both_blocks_beside_it(tmp_path):
    data = make_data("uint16", (64, 128, 128))
    src = write_zarr3(tmp_path / "s.zarr", data, chunks=(8, 64, 64))
    settings = ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"), chunks={"z": 8})
    plain = build_plan(src.spec, settings, memory_limit="16MiB")
    halo = build_plan(src.spec, settings, memory_limit="16MiB", steps=(Halo("zyx", "z", 3),))
    assert plain.priced.amplification == 1.0 and halo.nblocks > 1
    # each block reads 3 planes more on each side that has a neighbour: whole chunks of 8
    depth = halo.block[0]
    assert halo.priced.amplification > 1.0
    assert halo.priced.piece_bytes >= (depth + 3) * 128 * 128 * 2
    step = [s for s in halo.summary()["steps"] if s["reads_per_pixel"] is not None]
    # (the block in the middle: a neighbour on each side where there are three blocks or more)
    assert step and step[0]["reads_per_pixel"] in ((depth + 6) / depth, (depth + 3) / depth)
    execute(halo)  # and the blocks give the values of the whole volume's
    expected = np.stack([data[max(j - 3, 0) : j + 4].max(axis=0) for j in range(64)])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr"))[:], expected)


def test_an_axis_a_step_removes_is_read_whole(tmp_path):
    data = make_data("uint16", (4, 32, 64, 64))
    src = write_zarr3(tmp_path / "s.zarr", data, axes="czyx", chunks=(1, 16, 32, 32))
    settings = ExportSettings(format="zarr", output=str(tmp_path / "o.zarr"), roi={"c": (1, 4)})
    plan = build_plan(src.spec, settings, memory_limit="16MiB", steps=(SumOver("czyx", "c"),))
    assert plan.axes == ("z", "y", "x")
    # every block reads the three channels of the cutout, once
    assert plan.priced.needed == 3 * 32 * 64 * 64 * 2
    assert plan.priced.decoded == plan.priced.needed
    assert plan.priced.piece_bytes == 3 * plan.priced.out
    execute(plan)
    got = zarr.open_array(str(tmp_path / "o.zarr"))[:]
    np.testing.assert_array_equal(got, data[1:4].sum(axis=0, dtype="uint16"))
