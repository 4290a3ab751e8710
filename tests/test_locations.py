"""Locations (issue #26 items 2, 8, 9, 21): a URL is a type of its own, made once from text in
one spelling; "does the output hold the source?" gets the same answer for every spelling of one
location (scheme aliases and case, ``//``, ``.``, ``..``, symlinks); ``..`` in a container path
is resolved or refused at planning time; bucket-only and ``file://`` URLs are handled in one line.

Sources and outputs on S3 live on moto's server on loopback; what is left in the bucket is
listed with boto3, not lazyexport.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path, PurePath

import h5py
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazyexport as le
from helpers import make_data, run_cli, snapshot, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport import location, remote
from lazyexport.remote import UrlPath
from lazyexport.sources import split_path
from lazyexport.template import split_container

SHAPE = (4, 16, 16)


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("bkt") as server:
        yield server


@pytest.fixture
def prefix(request) -> str:
    return key_prefix(request.node.name)


def _one_error_line(done, *expected: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _store_with_raw(directory: Path) -> tuple[Path, np.ndarray]:
    """``directory/store.zarr``: a group holding the array ``raw``."""
    data = make_data("uint16", SHAPE)
    store = directory / "store.zarr"
    zarr.create_group(str(store))
    zarr.create_array(str(store), name="raw", data=data, chunks=(2, 8, 8))
    return store, data


# -- item 21: a URL is not a path -----------------------------------------------------------------


def test_a_url_is_a_location_of_its_own_not_a_pathlib_path():
    url = remote.as_path("S3A://Bkt//a/./x/../b.zarr/raw/")
    assert isinstance(url, UrlPath) and not isinstance(url, PurePath)
    assert str(url) == "s3a://Bkt/a/b.zarr/raw"  # one spelling; the alias the user chose kept
    assert url == UrlPath("s3://bkt/a/b.zarr/raw") and hash(url) == hash(
        UrlPath("s3://bkt/a/b.zarr/raw")
    )
    assert url.root == "s3a://Bkt" and url.key == "a/b.zarr/raw" and url.scheme == "s3a"
    assert str(url.parent) == "s3a://Bkt/a/b.zarr" and url.parent.name == "b.zarr"
    assert url.parent.suffix == ".zarr" and url.name == "raw" and url.suffix == ""
    assert str(url.with_name("other")) == "s3a://Bkt/a/b.zarr/other"
    assert str(url.parent / "c" / "d.json") == "s3a://Bkt/a/b.zarr/raw/c/d.json".replace("raw/", "")
    assert str(url / "c/../d") == "s3a://Bkt/a/b.zarr/raw/d"
    assert [str(p) for p in url.parents][-1] == "s3a://Bkt" and url.parents[-1].key == ""
    assert pickle.loads(pickle.dumps(url)) == url
    for call in (os.fspath, Path, open):
        with pytest.raises(TypeError):
            call(url)  # never a local file name, whichever call forgot to ask
    with pytest.raises(TypeError):
        url / "s3://other/x"
    assert UrlPath("gcs://b/k") == UrlPath("gs://b/k") and UrlPath("abfs://b/k") == UrlPath(
        "az://b/k"
    )
    assert UrlPath("s3://b/k") != UrlPath("gs://b/k") and UrlPath("s3://b/k") != UrlPath("s3://b/K")


def test_urls_work_on_every_python_version_the_package_claims():
    """pathlib calls ``root`` from ``parts`` in 3.12+: a PurePosixPath posing as a URL recursed."""
    url = remote.as_path("s3://bkt/d.zarr/raw")
    assert url.parts == ("s3:", "bkt", "d.zarr", "raw") and sys.version_info >= (3, 11)
    assert split_path("s3://bkt/d.zarr/raw") == (UrlPath("s3://bkt/d.zarr"), "raw")
    assert split_container("s3://bkt/o.zarr/a/../b", [".zarr"]) == ("s3://bkt/o.zarr", "b")


# -- item 2: spellings of one location ------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "s3a://bkt/{p}/d.zarr",
        "S3://bkt/{p}/d.zarr",
        "s3://bkt//{p}/./d.zarr",
        "s3://bkt/{p}/x/../d.zarr",
    ],
)
def test_another_spelling_of_a_url_does_not_get_past_the_holds_the_source_check(
    s3, prefix, tmp_path, spelling
):
    source = write_zarr3(tmp_path / "src.zarr", make_data("uint16", SHAPE), chunks=(2, 8, 8))
    s3.upload_tree(source.file, "bkt", f"{prefix}/d.zarr/raw")
    before = s3.keys("bkt", prefix)
    output = spelling.format(p=prefix)
    done = run_cli(
        "export",
        f"s3://bkt/{prefix}/d.zarr/raw",
        "--output",
        output,
        "--format",
        "zarr",
        "--overwrite",
    )
    _one_error_line(done, "holds the source")
    assert s3.keys("bkt", prefix) == before  # the source is still there, nothing was written
    np.testing.assert_array_equal(
        le.open_source(f"s3://bkt/{prefix}/d.zarr/raw").values, source.data
    )


def test_a_symlinked_or_dotted_local_spelling_does_not_get_past_it_either(tmp_path):
    store, data = _store_with_raw(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = snapshot(tmp_path / "real")
    for output in (tmp_path / "link" / "store.zarr", f"{tmp_path}/link/../real//store.zarr/"):
        done = run_cli(
            "export", f"{store}/raw", "--output", output, "--format", "zarr", "--overwrite"
        )
        _one_error_line(done, "holds the source")
    assert snapshot(tmp_path / "real") == before
    np.testing.assert_array_equal(zarr.open_array(str(store / "raw"))[...], data)


# -- item 8: '..' in a container path or a URL ----------------------------------------------------


@pytest.mark.slow
def test_dot_dot_inside_a_container_is_resolved_or_refused_at_planning_time(tmp_path):
    store, data = _store_with_raw(tmp_path)
    before = snapshot(tmp_path)
    for output, says in (
        (f"{store}/a/..", "holds the source"),  # the store itself
        (f"{store}/x/../raw", "is the source itself"),
        (f"{store}/..", "'..' goes above"),
        (f"{store}/a/../../b", "'..' goes above"),
    ):
        done = run_cli(
            "export", f"{store}/raw", "--output", output, "--format", "zarr", "--overwrite"
        )
        _one_error_line(done, says)
        assert snapshot(tmp_path) == before  # no stray group, no .commit/.tmp left
    done = run_cli("export", f"{store}/x/../raw", "--output", tmp_path / "o.npy")
    assert done.returncode == 0, done.stderr  # a source's '..' resolved as well
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), data)
    h5 = tmp_path / "f.h5"
    with h5py.File(h5, "w") as f:
        f["exp"] = data
    done = run_cli("export", f"{h5}/exp", "--output", f"{h5}/a/../exp2", "--format", "hdf5")
    assert done.returncode == 0, done.stderr
    with h5py.File(h5) as f:
        names: list[str] = []
        f.visit(names.append)
    assert sorted(names) == ["exp", "exp2"]  # no group 'a', no dataset named '..'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5", "o.npy", "store.zarr"]


def test_dot_dot_in_a_url_is_resolved_and_refused_above_the_bucket(s3, prefix, tmp_path):
    source = write_zarr3(tmp_path / "src.zarr", make_data("uint16", SHAPE), chunks=(2, 8, 8))
    done = run_cli(
        "export", source.file, "--output", f"s3://bkt/{prefix}/x/../keep.zarr", "--format", "zarr"
    )
    assert done.returncode == 0, done.stderr
    assert s3.keys("bkt", prefix) and all(
        k.startswith(f"{prefix}/keep.zarr/") for k in s3.keys("bkt", prefix)
    )
    for output in (f"s3://bkt/../{prefix}/o.zarr", f"s3://bkt/{prefix}/o.zarr/../../../x.zarr"):
        _one_error_line(
            run_cli("export", source.file, "--output", output), "'..' goes above the bucket"
        )
    _one_error_line(run_cli("info", "s3://bkt/../x.zarr"), "'..' goes above the bucket")


# -- item 9: a bucket alone, no bucket, file:// ---------------------------------------------------


@pytest.mark.slow
def test_a_bucket_alone_or_no_bucket_is_one_line_and_file_urls_are_local_paths(s3, tmp_path):
    source = write_zarr3(tmp_path / "src.zarr", make_data("uint16", SHAPE), chunks=(2, 8, 8))
    before = s3.keys("bkt")
    for output, says in (
        ("s3://bkt", "names a bucket, not an output in it"),
        ("s3://bkt/", "names a bucket, not an output in it"),
        ("s3:///o.zarr", "names no bucket"),
        ("s3://", "names no bucket"),
        ("s3://bkt/sub/", "ends with '/'"),
        ("file://somehost/o.zarr", "no host"),
    ):
        _one_error_line(
            run_cli("export", source.file, "--output", output, "--format", "zarr"), says
        )
    assert s3.keys("bkt") == before  # no key named '.zarr'
    _one_error_line(run_cli("info", "s3:///d.zarr"), "names no bucket")
    work = tmp_path / "cwd"
    work.mkdir()
    done = run_cli(
        "export",
        f"file://{source.file}",
        "--output",
        f"file://{tmp_path}/o.zarr",
        "--format",
        "zarr",
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert not list(work.iterdir())  # no directory named 'file:'
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr"))[...], source.data)
    _one_error_line(
        run_cli(
            "export", f"file://{source.file}", "--output", f"file://localhost{tmp_path}/o.zarr"
        ),
        "exists already",
    )


# -- the property: every spelling gives the same answer -------------------------------------------

_ALIASES = {"s3": ("s3", "s3a"), "gs": ("gs", "gcs"), "az": ("az", "azure", "abfs")}


@st.composite
def _url_spelling(draw, scheme: str, bucket: str, segments: list[str]) -> str:
    """Another spelling of ``scheme://bucket/segments``: an alias in any case, '//', './' and
    'x/../' inserted anywhere, a trailing '/'."""
    name = draw(st.sampled_from(_ALIASES[scheme]))
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    spelled = []
    for segment in segments:
        spelled += draw(st.lists(st.sampled_from(["", ".", "zz/.."]), max_size=2))
        spelled.append(segment)
    trail = draw(st.sampled_from(["", "/", "/.", "/q/.."]))
    return f"{name}://{bucket}/" + "/".join(spelled) + trail


@st.composite
def _local_spelling(draw, root: Path, segments: list[str]) -> str:
    """Another spelling of ``root/segments``: through the symlink ``root/../link``, with '//',
    './' and 'zz/..' inserted, and before the first segment 'store.zarr/..' (another store)."""
    base = draw(st.sampled_from([str(root), f"{root.parent}/link", f"{root}/../real"]))
    spelled = []
    for i, segment in enumerate(segments):
        inserts = ["", ".", "zz/..", "store.zarr/.."] if i == 0 else ["", ".", "zz/.."]
        spelled += draw(st.lists(st.sampled_from(inserts), max_size=2))
        spelled.append(segment)
    return base + "/" + "/".join(spelled) + draw(st.sampled_from(["", "/", "/."]))


# (output segments, source segments, the output holds the source?)
CASES = [
    (["d.zarr"], ["d.zarr", "raw"], True),
    (["d.zarr", "raw"], ["d.zarr", "raw"], True),
    (["d.zarr", "raw", "inner"], ["d.zarr", "raw"], False),
    (["d.zarr", "other"], ["d.zarr", "raw"], False),
    (["e.zarr"], ["d.zarr", "raw"], False),
]


def _holds(output: str, source: str) -> bool:
    """The planner's question, from text as the command line gives it."""
    out_file, out_inner = split_container(output, [".zarr"])
    src_file, src_inner = split_path(source)
    return location.holds((remote.as_path(out_file), out_inner), (src_file, src_inner))


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), scheme=st.sampled_from(sorted(_ALIASES)), data=st.data())
def test_every_spelling_of_a_url_gives_the_same_answer(case, scheme, data):
    out, src, expected = case
    output = data.draw(_url_spelling(scheme, "bkt", out))
    source = data.draw(_url_spelling(scheme, "BKT", src))
    assert _holds(output, source) is expected, (output, source)


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory) -> Path:
    """``real/d.zarr/raw``, ``real/e.zarr``, ``real/store.zarr``, and ``link`` -> ``real``."""
    top = tmp_path_factory.mktemp("spellings")
    real = top / "real"
    for name in ("d.zarr", "e.zarr", "store.zarr"):
        zarr.create_group(str(real / name))
    zarr.create_array(str(real / "d.zarr"), name="raw", shape=(2, 2), dtype="u1")
    (top / "link").symlink_to(real)
    return real


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=st.sampled_from(CASES), data=st.data())
def test_every_spelling_of_a_local_path_gives_the_same_answer(local_tree, case, data):
    out, src, expected = case
    output = data.draw(_local_spelling(local_tree, out))
    source = data.draw(_local_spelling(local_tree, src))
    assert _holds(output, source) is expected, (output, source)
    assert _holds(output, "s3://bkt/" + "/".join(src)) is False  # a path is never a URL
