"""Property tests (hypothesis): ROI normalisation, dtype conversion, renormalize + convert
end to end.

Every reference here is computed independently of lazyexport: ROIs with Python's own
``range(size)[slice(start, stop)]``, conversions element by element with Python ints and
``round()`` (which rounds half to even).
"""

from __future__ import annotations

import math
import tempfile
from typing import Literal, cast

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers.zarr_nodes import read_all
from lazyexport import ExportSettings, export
from lazyexport.errors import RoiError
from lazyexport.roi import resolve_roi
from lazyexport.transforms import compute_dtype, convert_block

INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]

# ---------------------------------------------------------------------------------------------
# (a) ROI normalisation

bound = st.one_of(st.none(), st.integers(-70, 70))


@st.composite
def shapes_and_rois(draw):
    ndim = draw(st.integers(1, 4))
    axes = "".join(draw(st.permutations("tzyxc"))[:ndim])
    shape = tuple(draw(st.lists(st.integers(0, 50), min_size=ndim, max_size=ndim)))
    roi = {}
    for axis in axes:
        if draw(st.booleans()):  # this axis is in the ROI (else: the whole axis)
            roi[axis] = (draw(bound), draw(bound))
    return axes, shape, roi


@settings(max_examples=300, deadline=None)
@given(shapes_and_rois())
def test_resolve_roi_is_python_slicing_or_an_error(case):
    axes, shape, roi = case
    expected, bad = {}, []
    for axis, size in zip(axes, shape):
        start, stop = roi.get(axis, (None, None))
        in_range = all(v is None or -size <= v <= size for v in (start, stop))
        r = range(size)[slice(start, stop)]
        if in_range and len(r) > 0:
            expected[axis] = (r.start, r.stop)
        else:
            bad.append((axis, size))
    if not bad:
        assert resolve_roi(roi, axes, shape) == expected
    else:
        with pytest.raises(RoiError) as info:
            resolve_roi(roi, axes, shape)
        message = str(info.value)
        # the message names an offending axis and its valid range
        assert any(f"'{a}'" in message and f"[0, {n})" in message for a, n in bad), message


@settings(max_examples=50, deadline=None)
@given(shapes_and_rois(), st.sampled_from("abdefg"))
def test_resolve_roi_unknown_axis_is_an_error(case, extra):
    axes, shape, roi = case
    with pytest.raises(RoiError, match=f"'{extra}'"):
        resolve_roi({**roi, extra: (0, 1)}, axes, shape)


# ---------------------------------------------------------------------------------------------
# (b) dtype conversion

SPECIAL = [
    0.0,
    -0.0,
    0.5,
    -0.5,
    1.5,
    -1.5,
    2.5,
    -2.5,
    126.5,
    127.5,
    128.5,
    -127.5,
    -128.5,
    -129.5,
    254.5,
    255.5,
    256.5,
    32766.5,
    32767.5,
    32768.5,
    -32768.5,
    65534.5,
    65535.5,
    65536.5,
    2147483646.5,
    2147483647.5,
    2.0**31,
    -(2.0**31) - 0.5,
    4294967295.5,
    2.0**32,
    2.0**53 + 2,
    2.0**63 - 1024,
    2.0**63,
    -(2.0**63),
    -(2.0**63) - 2048,
    2.0**64 - 2048,
    2.0**64,
    1e19,
    1e30,
    -1e30,
    1.7e308,
    -1.7e308,
    math.inf,
    -math.inf,
    math.nan,
]


def _as_float32(v: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(v))


def float_elements(width: int):
    s = st.one_of(
        st.floats(width=cast(Literal[16, 32, 64], width), allow_nan=True, allow_infinity=True),
        st.integers(-70000, 70000).map(lambda i: i + 0.5),  # ties
        st.integers(-(2**66), 2**66).map(float),  # huge
        st.sampled_from(SPECIAL),
    )
    if width == 32:
        s = s.map(_as_float32)
    elif width == 16:
        s = s.map(
            lambda v: (
                float(np.float16(v))
                if abs(v) < 65520 or not math.isfinite(v)
                else math.copysign(math.inf, v)
            )
        )
    return s


def reference_convert(x: np.ndarray, dtype) -> np.ndarray:
    """NaN -> 0, else round half to even, then clip to the type's range; in Python ints."""
    info = np.iinfo(dtype)
    out = []
    for v in x.ravel().tolist():
        if isinstance(v, float):
            if math.isnan(v):
                out.append(0)
                continue
            if math.isinf(v):
                out.append(int(info.max) if v > 0 else int(info.min))
                continue
            v = round(v)
        out.append(min(max(int(v), int(info.min)), int(info.max)))
    return np.array(out, dtype=dtype).reshape(x.shape)


def float_arrays(dtype: str, width: int):
    return hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=float_elements(width)
    )


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([("float64", 64), ("float32", 32)]).flatmap(lambda d: float_arrays(*d)),
    st.sampled_from(INT_DTYPES),
)
def test_convert_float_to_int_rounds_half_even_clips_and_zeroes_nan(x, dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        out = convert_block(x, dtype)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, reference_convert(x, dtype))


@settings(max_examples=80, deadline=None)
@given(float_arrays("float16", 16), st.sampled_from(INT_DTYPES))
def test_convert_float16_to_int(x, dtype):
    """float16 is a numpy numeric dtype a source can have (docs/usage.md): same rules."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = convert_block(x, dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, reference_convert(x, dtype))


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(INT_DTYPES).flatmap(
        lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=1, max_dims=2, max_side=8))
    ),
    st.sampled_from(INT_DTYPES),
)
def test_convert_int_to_int_clips(x, dtype):
    out = convert_block(x, dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, reference_convert(x, dtype))


def test_convert_examples():
    x = np.array([np.nan, -np.inf, np.inf, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 300.0, -3.0])
    np.testing.assert_array_equal(
        convert_block(x, "uint8"), [0, 0, 255, 0, 0, 2, 2, 254, 255, 255, 0]
    )
    np.testing.assert_array_equal(
        convert_block(np.array([-1, 70000, 200], dtype=np.int32), "uint16"), [0, 65535, 200]
    )


# ---------------------------------------------------------------------------------------------
# (c) renormalize, then convert, through the public export

SOURCE_DTYPES = ["float32", "float64", "uint8", "uint16", "int16"]
TARGET_DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "float32"]


def source_elements(dtype: str):
    if dtype == "float32":
        return st.floats(-1e4, 1e4, width=32) | st.sampled_from(
            [math.nan, math.inf, -math.inf, 0.5, 2.5]
        )
    if dtype == "float64":
        return st.floats(-1e4, 1e4) | st.sampled_from([math.nan, 0.5, -1.5])
    return None  # hypothesis' default: the dtype's whole range


@st.composite
def renormalize_cases(draw):
    src_dtype = draw(st.sampled_from(SOURCE_DTYPES))
    x = draw(
        hnp.arrays(
            src_dtype,
            hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=7),
            elements=source_elements(src_dtype),
        )
    )
    ends = st.integers(-1000, 70000)
    in_min, in_max = draw(ends), draw(ends)
    if in_min == in_max:
        in_max += 1
    out_min, out_max = draw(st.integers(-300, 70000)), draw(st.integers(-300, 70000))
    return x, (in_min, in_max), (out_min, out_max), draw(st.sampled_from(TARGET_DTYPES))


def reference_renormalize_convert(x, in_range, out_range, dtype):
    f = compute_dtype(x.dtype).type
    (in_min, in_max), (out_min, out_max) = in_range, out_range
    y = (x.astype(f) - f(in_min)) * f(out_max - out_min) / f(in_max - in_min) + f(out_min)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return y.astype(dtype)
    info = np.iinfo(dtype)  # at most 32 bits here: float64 holds the bounds exactly
    r = np.rint(y).astype(np.float64)
    r[np.isnan(r)] = 0
    return np.clip(r, float(info.min), float(info.max)).astype(dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(renormalize_cases())
def test_export_renormalize_convert_matches_numpy(case):
    x, in_range, out_range, dtype = case
    with tempfile.TemporaryDirectory() as d, np.errstate(invalid="ignore", over="ignore"):
        result = export(
            x,
            ExportSettings(
                renormalize=(in_range, out_range),
                dtype=dtype,
                format="zarr",
                output=f"{d}/out.zarr",
            ),
        )
        written = read_all(zarr.open(str(result.output), mode="r"))
        expected = reference_renormalize_convert(x, in_range, out_range, dtype)
    assert written.dtype == np.dtype(dtype)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(written, expected, rtol=1e-6, equal_nan=True)
    else:
        np.testing.assert_array_equal(written, expected)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([("float64", 64), ("float32", 32)]).flatmap(lambda d: float_arrays(*d)),
    st.sampled_from(INT_DTYPES),
)
def test_conversion_counts_are_those_of_the_reference(x, dtype):
    """What is clipped and mapped is counted the same whether the block is inside the type's
    range (the two-reduction path) or not."""
    from lazyexport.transforms import counted

    with np.errstate(invalid="ignore", over="ignore"):
        info, r = np.iinfo(dtype), np.rint(x)
        hi = x.dtype.type(info.max)
        if int(hi) > info.max:
            hi = np.nextafter(hi, x.dtype.type(-np.inf))
        expected = [
            np.count_nonzero(r < x.dtype.type(info.min)),
            np.count_nonzero(r > hi),
            np.count_nonzero(np.isnan(r)),
            np.count_nonzero(np.isinf(r)),
        ]
        with counted() as counts:
            out = convert_block(x, dtype)
    assert counts.tolist() == expected
    np.testing.assert_array_equal(out, reference_convert(x, dtype))


def test_a_block_at_the_edges_of_the_range_takes_the_reductions_path():
    from lazyexport.transforms import counted

    x = np.array([-0.4, 0.0, 127.5, 254.6, 255.4], dtype=np.float32)  # rounds to 0 ... 255
    with counted() as counts:
        out = convert_block(x, "uint8")
    assert out.tolist() == [0, 0, 128, 255, 255] and counts.tolist() == [0, 0, 0, 0]
    x[0] = -0.6  # rounds to -1: clipped, and counted
    with counted() as counts:
        out = convert_block(x, "uint8")
    assert out.tolist() == [0, 0, 128, 255, 255] and counts.tolist() == [1, 0, 0, 0]
