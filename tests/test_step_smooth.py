"""The smoothing step (lazyexport.step_smooth): its settings, its regions (the halo reaches
outside the cutout, up to the source's edge), and its values: scipy.ndimage.gaussian_filter of
the whole in-memory source, then cut out, to float32 rounding, on the block path and the lazy
path alike, through the API, the command line, project files, --plan, previews, regions,
compute=False and processes."""

from __future__ import annotations

import textwrap

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy.ndimage import gaussian_filter

import lazyexport as le
from helpers import make_data, run_cli, write_zarr3
from lazyexport import ExportSettings
from lazyexport.errors import SettingsError
from lazyexport.execution.lazy import export_lazily
from lazyexport.plan import build_plan
from lazyexport.resume import plan_token
from lazyexport.run import execute
from lazyexport.step_smooth import Smooth, parse_sigma, radius

SHAPE = (21, 64, 70)
ROI = {"z": (3, 20), "y": (5, 64), "x": (2, 61)}  # starts mid-chunk (chunks 4x16x16)
SIGMA = {"z": 1.0, "y": 2.0, "x": 1.5}
RTOL = 1e-5


def smoothed(data: np.ndarray, sigma=SIGMA, roi=ROI, axes: str = "zyx") -> np.ndarray:
    """scipy's answer: the whole source smoothed in float64, then cut out."""
    whole = gaussian_filter(
        data.astype(np.float64), [sigma.get(a, 0.0) for a in axes], truncate=4.0
    )
    return whole[tuple(slice(*roi.get(a, (None, None))) for a in axes)]


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-30)
    assert float(np.abs(got.astype(np.float64) - expected).max()) <= RTOL * scale


def written(path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path), mode="r")[...])


@pytest.fixture
def source(tmp_path):
    data = make_data("uint16", SHAPE)
    return write_zarr3(tmp_path / "src.zarr", data, chunks=(4, 16, 16)), data


# ---------------------------------------------------------------------------------------------
# settings


def test_sigmas_are_normalized_in_axis_order_with_units_by_name():
    settings = ExportSettings(smooth="x=2, y=1.5um,z = 0.5 micrometer")
    assert settings.smooth == {"z": "0.5 micrometer", "y": "1.5 micrometer", "x": 2.0}
    assert settings.to_dict() == {
        "smooth": {"z": "0.5 micrometer", "y": "1.5 micrometer", "x": 2.0}
    }
    assert ExportSettings.from_dict(settings.to_dict()) == settings
    assert parse_sigma({"y": 2, "x": "3px"}) == {"y": 2.0, "x": 3.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("y2", "cannot read smooth part 'y2'"),
        ("y=-1", "must be positive"),
        ("y=0", "must be positive"),
        ("y=nan", "must be a number"),
        ("y=2parsec", "unknown unit"),
        ("c=1um", "spatial axes"),
        ({}, "smooth must map axes to sigmas"),
        ({"y": True}, "must be a number"),
    ],
)
def test_bad_sigmas_are_refused_in_one_line(value, message):
    with pytest.raises(SettingsError, match=message) as caught:
        ExportSettings(smooth=value)
    assert "\n" not in str(caught.value)


def test_equal_settings_give_the_same_plan_token(source, tmp_path):
    src, _ = source
    out = str(tmp_path / "out.zarr")
    tokens = [
        plan_token(build_plan(src.spec, ExportSettings(format="zarr", output=out, smooth=s)))
        for s in ({"y": 2, "x": 1}, "x=1,y=2", {"x": 1.0, "y": 2.0}, {"x": 1, "y": 3})
    ]
    assert tokens[0] == tokens[1] == tokens[2] != tokens[3]


def test_an_axis_the_data_lacks_is_refused(source):
    src, _ = source
    with pytest.raises(SettingsError, match="smooth names axis 't', but the data has axes 'zyx'"):
        build_plan(src.spec, ExportSettings(smooth={"t": 1}))


# ---------------------------------------------------------------------------------------------
# the step


def test_radius_is_scipys():
    assert [radius(s) for s in (0.1, 1, 1.5, 2, 4)] == [0, 4, 6, 8, 16]


def test_the_halo_reaches_outside_the_cutout_up_to_the_sources_edge():
    step = Smooth("zyx", {"y": 2, "x": 1}, offset=(3, 5, 2), extent=SHAPE)
    assert step.kind == "general" and step.dtype(np.dtype("uint16")) == np.float32
    assert step.dtype(np.dtype("float64")) == np.float64
    in_shape = (17, 59, 59)
    # y: 8 each side, 5 above the cutout only; x: 4 each side, 2 before the cutout, 9 after
    region = (slice(0, 5), slice(0, 10), slice(50, 59))
    assert step.source_region(region, in_shape) == (slice(0, 5), slice(-5, 18), slice(46, 63))
    alone = Smooth("zyx", {"y": 2})  # after another step: the input is all there is
    assert alone.source_region(region, in_shape)[1] == slice(0, 18)


def test_the_step_describes_itself_and_its_working_memory():
    step = Smooth("zyx", {"z": 1, "x": 2})
    assert step.describe() == "smooth z=1,x=2 (halo z=4,x=8 pixels each side)"
    # the first pass's float32 result (the others work in it), less the result, a view of it
    # (the input less a halo of 4 in z and 8 in x each side)
    assert step.work((10, 20, 30), np.dtype("uint8")) == (10 * 20 * 30 - 2 * 20 * 14) * 4
    alone = Smooth("zyx", {"y": 1})
    assert alone.work((10, 20, 30), np.dtype("float64")) == 10 * (20 - 12) * 30 * 8


def test_the_step_equals_scipy_on_any_region():
    data = make_data("float32", (12, 40, 50), seed=2)
    step = Smooth("zyx", {"z": 1, "y": 2.5, "x": 0.7}, offset=(0, 0, 0), extent=data.shape)
    expected = gaussian_filter(data, (1, 2.5, 0.7), truncate=4.0, output=np.float32)
    before = data.copy()
    for region in [
        (slice(0, 12), slice(0, 40), slice(0, 50)),
        (slice(3, 4), slice(11, 29), slice(0, 1)),
        (slice(10, 12), slice(39, 40), slice(17, 50)),
    ]:
        piece = data[step.source_region(region, data.shape)]
        got = step.apply(piece, region, data.shape)
        np.testing.assert_array_equal(data, before)  # its input unchanged
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected[region])  # the same passes: bit for bit


def test_the_lazy_step_reads_the_surroundings_of_the_cutout():
    data = make_data("uint8", SHAPE, seed=1)
    arr = xr.DataArray(da.from_array(data, chunks=(4, 16, 16)), dims=("z", "y", "x"))
    plan = build_plan(arr, ExportSettings(roi=ROI, smooth=SIGMA))
    assert plan.dtype == np.float32 and plan.shape == (17, 59, 59)
    assert_close(plan.result.values, smoothed(data))


# ---------------------------------------------------------------------------------------------
# both paths, small blocks


@pytest.mark.parametrize("path", ["blocks", "lazy"])
def test_blocks_of_one_chunk_equal_scipy_of_the_whole_source(tmp_path, source, small_blocks, path):
    src, data = source
    out = str(tmp_path / "out.zarr")
    settings = ExportSettings(
        roi=ROI, format="zarr", output=out, chunks={"z": 4, "y": 16, "x": 16}, smooth=SIGMA
    )
    plan = build_plan(src.spec, settings, memory_limit="16MiB")
    assert plan.nblocks > 1
    if path == "blocks":
        execute(plan)
    else:
        dask.compute(export_lazily(plan), scheduler="threads")
    got = written(out)
    assert got.dtype == np.float32
    assert_close(got, smoothed(data))
    np.testing.assert_array_equal(got, plan.result.values)  # both paths agree exactly


def test_then_conversion_and_transpose(source, tmp_path):
    src, data = source
    settings = ExportSettings(
        roi=ROI, smooth={"y": 1}, dtype="uint16", axis_order="xzy", format="npy",
        output=str(tmp_path / "out.npy"),
    )  # fmt: skip
    le.export(src.spec, settings)
    got = np.load(tmp_path / "out.npy")
    expected = np.clip(np.rint(smoothed(data, {"y": 1})), 0, 65535).transpose(2, 0, 1)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1  # float32 rounding, then rint


# ---------------------------------------------------------------------------------------------
# physical units


def test_sigma_in_micrometers_uses_the_pixel_size(source):
    src, data = source
    settings = ExportSettings(roi=ROI, smooth={"x": "1um", "y": "500nm"})
    sized = settings.replace(pixel_size={"x": 0.5, "y": 0.25})
    assert_close(build_plan(src.spec, sized).result.values, smoothed(data, {"x": 2, "y": 2}))
    with pytest.raises(SettingsError, match="smooth gives axis 'y' a sigma in nanometer, but"):
        build_plan(src.spec, settings)


def test_sigma_as_a_length_uses_the_sources_own_pixel_sizes_and_unit():
    data = make_data("float32", (10, 30, 40), seed=4)
    sizes = {"pixel_size": {"y": 0.5, "x": 0.5}, "unit": "nanometer"}
    arr = xr.DataArray(data, dims=("z", "y", "x"), attrs=sizes)
    got = build_plan(arr, ExportSettings(smooth={"x": "0.001um"})).result.values
    assert_close(got, smoothed(data, {"x": 2}, {}))


# ---------------------------------------------------------------------------------------------
# everywhere an export runs


def test_cli_export_and_plan(source, tmp_path):
    src, data = source
    out = tmp_path / "cli.zarr"
    roi = "z=3:20,y=5:64,x=2:61"
    args = (src.spec, "--roi", roi, "--smooth", "z=1,y=2,x=1.5", "--format", "zarr")
    shown = run_cli("export", *args, "--output", out, "--plan")
    assert shown.returncode == 0, shown.stderr
    assert "float32" in shown.stdout and not out.exists()
    assert "-> smooth z=1,y=2,x=1.5 (halo z=4,y=8,x=6 pixels each side)" in shown.stdout
    run = run_cli("export", *args, "--output", out)
    assert run.returncode == 0, run.stderr
    assert_close(written(out), smoothed(data))
    bad = run_cli("export", *args[:3], "--smooth", "y=-1", "--output", out)
    assert bad.returncode != 0 and "must be positive" in bad.stderr


def test_project_file(source, tmp_path):
    src, data = source
    project = tmp_path / "project.toml"
    project.write_text(
        textwrap.dedent(f"""\
        [settings]
        format = "zarr"
        output = "{tmp_path}/{{nickname}}.zarr"
        roi = {{ z = [3, 20], y = [5, 64], x = [2, 61] }}
        smooth = {{ z = 1, y = 2, x = 1.5 }}

        [[datasets]]
        source = "{src.spec}"
        nickname = "a"
        """)
    )
    report = le.Batch.load(project).export(["a"])
    assert report.ok, report.summary()
    assert_close(written(tmp_path / "a.zarr"), smoothed(data))


def test_preview_live_plane():
    data = make_data("float32", (12, 30, 40), seed=5)
    settings = ExportSettings(roi={"z": (2, 11)}, smooth={"z": 2, "x": 1})
    arr = xr.DataArray(data, dims=("z", "y", "x"))
    planes = le.preview(arr, settings, at={"z": 3}, layers=("live",))
    expected = smoothed(data, {"z": 2, "x": 1}, {"z": (3, 4)})[0]
    assert_close(planes["live"].values, expected)


def test_regions(source, tmp_path):
    src, data = source
    regions = {"a": {"z": (0, 5)}, "b": {"z": (9, 21), "x": (20, 40)}}
    settings = ExportSettings(
        regions=regions, format="zarr", smooth={"z": 2},
        output=str(tmp_path / "{nickname}_{region}.zarr"),
    )  # fmt: skip
    le.export(src.spec, settings)
    for name, roi in regions.items():
        got = written(tmp_path / f"src_{name}.zarr")
        assert_close(got, smoothed(data, {"z": 2}, roi))


@pytest.mark.parametrize("how", ["compute=False", "processes"])
def test_compute_false_and_processes(source, tmp_path, small_blocks, how):
    src, data = source
    out = str(tmp_path / "out.zarr")
    settings = ExportSettings(roi=ROI, format="zarr", output=out, smooth=SIGMA)
    if how == "processes":
        le.export(src.spec, settings, scheduler="processes", memory_limit="64MiB")
    else:
        dask.compute(le.export(src.spec, settings, compute=False))
    assert_close(written(out), smoothed(data))
