"""Renormalizing from percentiles of the data: the bounds match numpy.percentile on the cutout
(exactly for integers up to 16 bits, within the documented bin width otherwise), and the export
writes what renormalizing by those numbers writes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import lazyexport as le
from conftest import make_data
from lazyexport import cli
from lazyexport.errors import SettingsError
from lazyexport.percentiles import BINS, percentiles
from lazyexport.plan import build_plan
from lazyexport.settings import ExportSettings

CUT = {"z": (1, 9), "y": (3, 27)}


def _source(dtype: str, seed: int = 2) -> np.ndarray:
    data = make_data(dtype, (10, 30, 40), seed=seed)
    if np.dtype(dtype).kind == "f":
        data = (data * 1000 - 200).astype(dtype)
        data.flat[::97] = 5000  # hot pixels: what percentiles are for
    return data


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("qs", [(0.1, 99.9), (0, 100), (2.5, 50), (33.3, 66.6)])
def test_percentiles_of_small_integers_are_exact(dtype, qs):
    data = _source(dtype)
    got, error = percentiles(da.from_array(data, chunks=(3, 7, 11)), qs)
    assert error == 0
    np.testing.assert_allclose(got, np.percentile(data, qs), rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint64"])
def test_percentiles_of_other_data_are_within_one_bin(dtype):
    data = _source(dtype)
    qs = (0.1, 1, 50, 99, 99.9)
    got, error = percentiles(da.from_array(data, chunks=(3, 7, 11)), qs)
    span = float(data.max()) - float(data.min())
    assert 0 < error <= span / BINS * (1 + 1e-9)
    np.testing.assert_allclose(got, np.percentile(data, qs), rtol=0, atol=error)


def test_nans_and_infinities_are_left_out():
    data = _source("float32")
    data[0, :5, :5] = np.nan
    data[1, :3, :3] = np.inf
    got, error = percentiles(da.from_array(data, chunks=5), (1, 99))
    finite = data[np.isfinite(data)]
    np.testing.assert_allclose(got, np.percentile(finite, (1, 99)), rtol=0, atol=error)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_an_export_by_percentiles_writes_what_the_computed_range_writes(tmp_path, dtype):
    data = _source(dtype)
    np.save(tmp_path / "v.npy", data)
    settings = ExportSettings(
        roi=CUT, renormalize=(("p0.5", "p99.5"), (0, 255)), dtype="uint8", format="npy",
        output=str(tmp_path / "p.npy"),
    )  # fmt: skip
    plan = build_plan(str(tmp_path / "v.npy"), settings)
    (lo, hi), _ = plan.renormalize
    cut = data[1:9, 3:27]
    expected = np.percentile(cut, (0.5, 99.5))
    tolerance = 0 if dtype == "uint16" else (float(cut.max()) - float(cut.min())) / BINS
    np.testing.assert_allclose((lo, hi), expected, rtol=0, atol=tolerance + 1e-9)
    note = next(n for n in plan.notes if "p0.5" in n)
    assert ("(exact)" in note) == (dtype == "uint16"), note
    le.export(str(tmp_path / "v.npy"), settings)
    by_numbers = ExportSettings(
        roi=CUT, renormalize=((lo, hi), (0, 255)), dtype="uint8", format="npy",
        output=str(tmp_path / "n.npy"),
    )  # fmt: skip
    le.export(str(tmp_path / "v.npy"), by_numbers)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), np.load(tmp_path / "n.npy"))
    clipped = np.load(tmp_path / "p.npy")
    assert clipped.min() == 0 and clipped.max() == 255


def test_the_command_line_and_project_files_take_percentiles(tmp_path, capsys):
    data = _source("uint16")
    np.save(tmp_path / "v.npy", data)
    status = cli.main(
        ["export", str(tmp_path / "v.npy"), "--renormalize", "p1,99:0,1", "--dtype", "float32",
         "--format", "npy", "--output", str(tmp_path / "o.npy"), "--plan"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0 and "p1 = " in out and "(exact)" in out, out
    settings = ExportSettings(renormalize=(("p1", 99), (0, 1)))
    assert settings.renormalize == (("p1", 99.0), (0.0, 1.0))
    assert ExportSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    "bounds,says",
    [
        (("p101", "p99"), "outside p0..p100"),
        (("px", 1), "not a percentile"),
        (("p5", "p5"), "empty"),
    ],
)
def test_bad_percentiles_are_refused(bounds, says):
    with pytest.raises(SettingsError, match=says):
        ExportSettings(renormalize=(bounds, (0, 1)))


def test_percentiles_of_constant_data_are_refused(tmp_path):
    np.save(tmp_path / "c.npy", np.full((4, 8, 8), 7, dtype="uint16"))
    with pytest.raises(SettingsError, match="empty input range"):
        build_plan(str(tmp_path / "c.npy"), ExportSettings(renormalize=(("p1", "p99"), (0, 1))))
