"""The report of what a conversion to an integer type did (values clipped below and above the
type's range, NaN written as 0, infinities) matches numpy's counts, on every scheduler, in the
result object and on the command line."""

from __future__ import annotations

import re

import numpy as np
import pytest

import lazyexport as le
from helpers import make_data
from lazyexport import cli
from lazyexport.settings import ExportSettings


def _floats() -> np.ndarray:
    data = (make_data("float32", (8, 30, 40), seed=5) * 900 - 300).astype("float32")
    data.flat[::53] = np.nan
    data.flat[7::101] = np.inf
    data.flat[9::211] = -np.inf
    return data


def _expected(x: np.ndarray, lo: int, hi: int) -> tuple[int, int, int, int]:
    with np.errstate(invalid="ignore"):
        r = np.rint(x.astype("float64"))
        return (
            int(np.count_nonzero(r < lo)),
            int(np.count_nonzero(r > hi)),
            int(np.count_nonzero(np.isnan(x))),
            int(np.count_nonzero(np.isinf(x))),
        )


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_clipped_values_nan_and_inf_are_counted_as_numpy_counts_them(tmp_path, scheduler):
    data = _floats()
    np.save(tmp_path / "f.npy", data)
    roi = {"z": (1, 7)}
    result = le.export(
        str(tmp_path / "f.npy"),
        ExportSettings(roi=roi, dtype="uint8", format="npy", output=str(tmp_path / "o.npy")),
        scheduler=scheduler,
    )
    c = result.conversions
    got = (c.clipped_below, c.clipped_above, c.nan, c.inf)
    assert got == _expected(data[1:7], 0, 255)
    assert all(got) and not c.partial
    assert f"{c.clipped_below} clipped to 0" in result.report
    assert f"{c.nan} NaN written as 0" in str(result)


def test_renormalized_and_integer_sources_are_counted_too(tmp_path):
    ints = make_data("int16", (6, 20, 20), seed=1)
    np.save(tmp_path / "i.npy", ints)
    out = le.export(
        str(tmp_path / "i.npy"),
        ExportSettings(dtype="uint8", format="npy", output=str(tmp_path / "a.npy")),
    )
    assert (out.conversions.clipped_below, out.conversions.clipped_above) == (
        int(np.count_nonzero(ints < 0)),
        int(np.count_nonzero(ints > 255)),
    )
    floats = _floats()
    np.save(tmp_path / "f.npy", floats)
    out = le.export(
        str(tmp_path / "f.npy"),
        ExportSettings(
            renormalize=((0, 300), (0, 255)), dtype="uint8", format="npy",
            output=str(tmp_path / "b.npy"),
        ),
    )  # fmt: skip
    y = (floats.astype("float32") - 0) * np.float32(255) / np.float32(300)
    assert (out.conversions.clipped_below, out.conversions.clipped_above) == _expected(y, 0, 255)[
        :2
    ]
    plain = le.export(
        str(tmp_path / "i.npy"), ExportSettings(format="npy", output=str(tmp_path / "c.npy"))
    )
    assert plain.conversions is None and plain.report == ""


def test_the_command_line_prints_the_report(tmp_path, capsys):
    np.save(tmp_path / "f.npy", _floats())
    status = cli.main(
        ["export", str(tmp_path / "f.npy"), "--dtype", "uint8", "--format", "npy",
         "--output", str(tmp_path / "o.npy"), "-q"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0 and "converted to uint8: " in out and "NaN written as 0" in out, out
    status = cli.main(
        ["export", str(tmp_path / "f.npy"), "--renormalize", "p1,p99:0,255", "--dtype", "uint8",
         "--format", "npy", "--output", str(tmp_path / "p.npy"), "--plan"]
    )  # fmt: skip
    out = capsys.readouterr().out
    # the bins wholly outside the range the percentiles found: at least, and close to, 1 %
    finite = np.count_nonzero(np.isfinite(_floats()))
    found = re.search(r"at least (\d+) values \(.*?\) below and at least (\d+) values", out)
    assert found, out
    below, above = (int(n) for n in found.groups())
    assert (
        0.009 * finite <= below <= 0.01 * finite + 1
        and 0.009 * finite <= above <= 0.01 * finite + 1
    )
