"""The step interface (lazyexport.steps): each built-in step's shape, dtype, region and values;
a pipeline's source region of an output block is what the block tasks read before steps
existed; and a step defined here (a flip, a 2x bin: shape-changing, not a built-in) plugs into
the pipeline and gives numpy's answer on the block path and on the lazy path."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from helpers import make_data, write_zarr3
from lazyexport import ExportSettings, open_source
from lazyexport.blocks import BlockGrid, BlockSource
from lazyexport.execution.lazy import export_lazily
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.run import execute
from lazyexport.steps import Convert, Cutout, Pipeline, Renormalize, Step, Transpose
from lazyexport.transforms import convert_block, renormalizer, transpose

# ---------------------------------------------------------------------------------------------
# steps defined here only: what issue 28's steps will be like


class Flip(Step):
    """Reverse one axis: same shape, but output region != input region."""

    def __init__(self, axes: str, axis: str):
        self.i = axes.index(axis)

    def source_region(self, out_region, in_shape):
        n, s = in_shape[self.i], out_region[self.i]
        region = list(out_region)
        region[self.i] = slice(n - s.stop, n - s.start)
        return tuple(region)

    def apply(self, block, out_region, in_shape):
        return np.flip(block, self.i)


class Bin2(Step):
    """Mean of 2 along one axis, in float64; an edge window covers only real pixels."""

    def __init__(self, axes: str, axis: str):
        self.i = axes.index(axis)

    def output_shape(self, in_shape):
        shape = list(in_shape)
        shape[self.i] = -(-in_shape[self.i] // 2)
        return tuple(shape)

    def dtype(self, in_dtype):
        return np.dtype("float64")

    def scale(self, in_shape):
        return tuple(2.0 if i == self.i else 1.0 for i in range(len(in_shape)))

    def source_region(self, out_region, in_shape):
        s = out_region[self.i]
        region = list(out_region)
        region[self.i] = slice(2 * s.start, min(2 * s.stop, in_shape[self.i]))
        return tuple(region)

    def apply(self, block, out_region, in_shape):
        return bin2(block, self.i)


def bin2(x: np.ndarray, axis: int) -> np.ndarray:
    """numpy's answer: pairs along ``axis`` averaged, a last single pixel as it is."""
    x = np.moveaxis(x.astype(np.float64), axis, 0)
    n = x.shape[0]
    pairs = x[: n - n % 2].reshape(n // 2, 2, *x.shape[1:]).mean(axis=1)
    if n % 2:
        pairs = np.concatenate([pairs, x[n - 1 :]])
    return np.moveaxis(pairs, 0, axis)


# ---------------------------------------------------------------------------------------------
# the built-in steps


def test_cutout_step():
    step = Cutout("zyx", {"z": (2, 7), "y": (0, 30), "x": (5, 40)})
    assert step.output_shape((20, 30, 40)) == (5, 30, 35)
    assert step.axes(("z", "y", "x")) == ("z", "y", "x")
    assert step.dtype(np.dtype("uint16")) == np.dtype("uint16")
    assert step.scale((20, 30, 40)) == (1.0, 1.0, 1.0)
    out = (slice(1, 3), slice(4, 10), slice(0, 35))
    assert step.source_region(out, (20, 30, 40)) == (slice(3, 5), slice(4, 10), slice(5, 40))
    block = np.arange(24).reshape(2, 3, 4)
    assert step.apply(block, out, (20, 30, 40)) is block
    data = make_data("uint16")
    arr = xr.DataArray(da.from_array(data, chunks=(8, 16, 16)), dims=("z", "y", "x"))
    np.testing.assert_array_equal(step.lazy(arr).values, data[2:7, :, 5:40])


@pytest.mark.parametrize("to", [None, "uint8", "int16"])
def test_renormalize_step(to):
    data = make_data("float32")
    step = Renormalize(data.dtype, (0.1, 0.9), (0.0, 255.0), to)
    function, out = renormalizer(data.dtype, (0.1, 0.9), (0.0, 255.0), to)
    assert step.kind == "values" and step.dtype(data.dtype) == out
    assert step.output_shape(data.shape) == data.shape
    region = (slice(0, 5), slice(3, 9), slice(0, 40))
    assert step.source_region(region, data.shape) == region
    piece = data[region].copy()
    got = step.apply(piece, region, data.shape)
    np.testing.assert_array_equal(piece, data[region])  # unchanged
    assert got.dtype == out
    np.testing.assert_array_equal(got, function(data[region]))
    lazy = step.lazy(xr.DataArray(da.from_array(data, chunks=7), dims=("z", "y", "x")))
    assert lazy.dtype == out
    np.testing.assert_array_equal(lazy.values, function(data))


def test_convert_step():
    data = make_data("float32") * 70000 - 1000
    step = Convert(data.dtype, "uint16")
    assert step.dtype(data.dtype) == np.dtype("uint16")
    region = (slice(2, 4), slice(0, 30), slice(10, 20))
    got = step.apply(data[region], region, data.shape)
    np.testing.assert_array_equal(got, convert_block(data[region], "uint16"))
    lazy = step.lazy(xr.DataArray(da.from_array(data, chunks=9), dims=("z", "y", "x")))
    np.testing.assert_array_equal(lazy.values, convert_block(data, "uint16"))


def test_transpose_step_reorders_drops_and_adds_axes():
    data = make_data("uint8", (4, 5, 1, 6))  # z y c x, c of length 1
    step = Transpose(("z", "y", "c", "x"), "txzy")  # c dropped, t added
    assert step.kind == "axes"
    assert step.axes(("z", "y", "c", "x")) == ("t", "x", "z", "y")
    assert step.output_shape(data.shape) == (1, 6, 4, 5)
    out = (slice(0, 1), slice(2, 5), slice(1, 3), slice(0, 5))
    assert step.source_region(out, data.shape) == (
        slice(1, 3),
        slice(0, 5),
        slice(0, 1),
        slice(2, 5),
    )
    got = step.apply(data[step.source_region(out, data.shape)], out, data.shape)
    expected = data[1:3, 0:5, 0, 2:5].transpose(2, 0, 1)[np.newaxis]
    np.testing.assert_array_equal(got, expected)
    assert np.shares_memory(got, data)  # a view: no copy
    arr = xr.DataArray(da.from_array(data, chunks=2), dims=("z", "y", "c", "x"))
    lazy = step.lazy(arr)
    np.testing.assert_array_equal(lazy.values, transpose(arr, "txzy").values)


def test_a_pipeline_propagates_shape_dtype_axes_and_maps_regions_back():
    shape = (20, 30, 40)
    pipe = Pipeline(shape, np.dtype("float32"), "zyx")
    pipe.add(Cutout("zyx", {"z": (3, 19), "y": (1, 30), "x": (0, 40)}))
    pipe.add(Bin2("zyx", "z")).add(Convert(np.dtype("float64"), "uint8"))
    pipe.add(Transpose(("z", "y", "x"), "xzy"))
    assert pipe.shape == (40, 8, 29) and pipe.dtype == np.dtype("uint8")
    assert pipe.axes == ("x", "z", "y")
    assert pipe.scale() == (1.0, 2.0, 1.0)
    assert not pipe.piecewise()
    out = (slice(10, 20), slice(7, 8), slice(0, 5))
    assert pipe.source_region(out) == (slice(17, 19), slice(1, 6), slice(10, 20))


# ---------------------------------------------------------------------------------------------
# the block path: a pipeline's source region is what the block tasks read, and its values
# are the lazy result's


def _old_key(plan, region):
    """The source region BlockSource read for a whole block before steps existed: the block's
    range plus the cutout's start along the source axes it keeps, one element of the others."""
    where = dict(zip(plan.axes, region))
    return tuple(
        slice(plan.roi[d][0] + where[d].start, plan.roi[d][0] + where[d].stop)
        if d in where
        else slice(plan.roi[d][0], plan.roi[d][0] + 1)
        for d in plan.source.dims
    )


@pytest.mark.parametrize(
    ("settings", "shape", "axes"),
    [
        (
            ExportSettings(roi={"z": (3, 17), "x": (5, -2)}, format="zarr", axis_order="xyz"),
            (20, 30, 40),
            "zyx",
        ),
        (
            ExportSettings(
                roi={"c": (0, 1), "y": (4, 25)},
                renormalize=((0, 1), (0, 255)),
                dtype="uint8",
                axis_order="tzyx",
                format="hdf5",
            ),
            (6, 30, 1, 40),
            "zycx",
        ),
    ],
)
def test_the_pipeline_reads_what_the_block_tasks_read_and_gives_the_lazy_results_values(
    tmp_path, settings, shape, axes
):
    data = make_data("float32", shape)
    src = write_zarr3(tmp_path / "src.zarr", data, axes=axes, chunks=(4, 8, 16, 16)[: len(shape)])
    plan = build_plan(src.spec, settings, memory_limit="64MiB")
    pipe = plan.pipeline
    assert pipe.piecewise() and pipe.shape == plan.shape and pipe.dtype == plan.dtype
    assert pipe.axes == plan.axes
    grid = BlockGrid(tuple(tuple(e) for e in plan.edges))
    regions = [grid.region(i) for i in grid.indices()]
    for region in [*regions, tuple(slice(0, n) for n in plan.shape)]:
        key = pipe.source_region(region)
        assert key == _old_key(plan, region)
        got = pipe.apply(data[key], region)
        expected = plan.result.data[region].compute(scheduler="sync")
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------
# a step defined outside the package, on both paths


def test_resume_does_not_continue_an_export_of_other_steps(tmp_path):
    """A flip keeps shape and dtype: only the steps tell its partial output from another's."""
    src = write_zarr3(tmp_path / "src.zarr", make_data("uint8"))
    settings = ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"))

    def token(*steps):
        return plan_token(build_plan(src.spec, settings, steps=steps))

    assert token() != token(Flip("zyx", "z")) != token(Flip("zyx", "y"))
    assert token(Flip("zyx", "z")) == token(Flip("zyx", "z"))  # the same steps: it resumes


def _reference(data, roi, step_on, axis):
    cut = data[tuple(slice(*roi[a]) for a in "zyx")]
    return np.flip(cut, axis) if step_on == "flip" else bin2(cut, axis)


@pytest.mark.parametrize("step_on", ["flip", "bin"])
@pytest.mark.parametrize("axis", ["z", "y"])
def test_a_new_step_plugs_into_both_paths(tmp_path, small_blocks, step_on, axis):
    data = make_data("uint16", (21, 128, 128))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16))
    roi = {"z": (3, 20), "y": (5, 128), "x": (0, 125)}  # starts mid-chunk, odd lengths
    step = (Flip if step_on == "flip" else Bin2)("zyx", axis)
    expected = _reference(data, roi, step_on, "zyx".index(axis))
    written = {}
    for path in ("blocks", "lazy"):
        out = str(tmp_path / f"{path}.zarr")
        chunks = {"z": 3, "y": 32, "x": 32}  # blocks of whole chunks, edges inside windows
        settings = ExportSettings(roi=roi, format="zarr", output=out, chunks=chunks)
        plan = build_plan(src.spec, settings, memory_limit="64MiB", steps=(step,))
        assert plan.shape == expected.shape and plan.dtype == expected.dtype
        assert plan.nblocks > 1
        if path == "blocks":
            execute(plan)
        else:
            dask.compute(export_lazily(plan), scheduler="threads")
        written[path] = zarr.open_array(str(tmp_path / f"{path}.zarr"), mode="r")[...]
        np.testing.assert_array_equal(written[path], expected)
        np.testing.assert_array_equal(plan.result.values, expected)  # the lazy result


def test_a_new_step_then_conversion_and_transpose_on_the_block_path(tmp_path, small_blocks):
    data = make_data("float32", (9, 40, 33))
    src = write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16))
    settings = ExportSettings(
        roi={"y": (3, 40)},
        renormalize=((0, 1), (0, 255)),
        dtype="uint8",
        axis_order="xzy",
        format="zarr",
    )
    plan = build_plan(src.spec, settings, memory_limit="64MiB", steps=[Bin2("zyx", "y")])
    function, _ = renormalizer(np.dtype("float64"), (0, 1), (0, 255), "uint8")
    expected = function(bin2(data[:, 3:], 1)).transpose(2, 0, 1)
    assert plan.axes == ("x", "z", "y") and plan.shape == expected.shape
    source = BlockSource(plan)
    grid = BlockGrid(tuple(tuple(e) for e in plan.edges))
    got = np.empty(plan.shape, plan.dtype)
    for index in grid.indices():
        region = grid.region(index)
        got[region] = source.compute(region)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(plan.result.values, expected)


class Recorded:
    """A numpy array that records the regions read from it."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_the_lazy_path_of_a_new_step_reads_only_the_cutout():
    data = make_data("uint8", (16, 32, 32))
    recorded = Recorded(data)
    arr = xr.DataArray(da.from_array(recorded, chunks=(4, 8, 8)), dims=("z", "y", "x"))
    pipe = Pipeline(data.shape, data.dtype, "zyx")
    pipe.add(Cutout("zyx", {"z": (4, 8)})).add(Bin2("zyx", "y"))
    lazy = pipe.lazy(arr)
    assert lazy.dims == ("z", "y", "x") and lazy.shape == (4, 16, 32)
    np.testing.assert_array_equal(lazy.values, bin2(data[4:8], 1))
    reads = [k for k in recorded.reads if k[0].stop > k[0].start]  # (dask's meta: empty)
    assert len(reads) == 16 and all(k[0] == slice(4, 8) for k in reads)  # z chunk 4:8, once
    assert open_source(lazy).shape == (4, 16, 32)  # a plain DataArray: a source again
