"""The reading side of the storage layer (:mod:`lazyexport.storage.reading`): each operation a
source reader needs gives for a URL what it gives for a local path, and what it works out
without a request asks nothing.

The S3 half uses moto's server on loopback (``objstore.s3_bucket``); the same tree is written
locally and uploaded, and both answers are compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport.remote import UrlPath, as_path
from lazyexport.sources.base import release_files
from lazyexport.storage import capabilities, reading

TREE = {
    "attributes.json": b'{"n5": "4.0.0"}',
    "a/attributes.json": b'{"dimensions": [2]}',
    "a/0/0": b"block",
    "b/c/attributes.json": b'{"dimensions": [3]}',
    "b/7/attributes.json": b'{"dimensions": [4]}',  # inside a chunk directory: not entered
}


def _write_tree(root: Path) -> Path:
    for key, data in TREE.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lzr") as server:
        yield server


@pytest.fixture
def both(s3, tmp_path, request) -> tuple[Path, UrlPath]:
    """The same tree at a local directory and below a URL."""
    local = _write_tree(tmp_path / "tree.n5")
    prefix = key_prefix(request.node.name)
    s3.upload_tree(local, "lzr", prefix)
    return local, UrlPath(f"s3://lzr/{prefix}")


def test_a_url_and_a_path_give_the_same_answers(both):
    local, url = both
    for where in (local, url):
        assert (
            reading.read_bytes(reading.below(where, "a/attributes.json"))
            == TREE["a/attributes.json"]
        )
        assert reading.read_bytes(reading.below(where, "nothing.json")) is None
        assert sorted(reading.folders_with(where, "attributes.json", skip=str.isdigit)) == [
            "",
            "a",
            "b/c",
        ]
        assert reading.is_container(where)
        assert reading.stamp(reading.below(where, "a/0/0")) is not None
        assert reading.stamp(reading.below(where, "a/0/missing")) is None
    local_keys = sorted(k for k, *_ in reading.contents(local)[1])
    url_keys = sorted(k.removeprefix(url.key + "/") for k, *_ in reading.contents(url)[1])
    assert local_keys == url_keys == sorted(TREE)


def test_what_needs_no_request_asks_none(monkeypatch):
    def no_request(*args, **kwargs):
        raise AssertionError("a request was made")

    from lazyexport.storage import objects

    monkeypatch.setattr(objects, "store", no_request)
    url = "s3://bkt/dir//x/../scan.ome.zarr/0"
    assert reading.source_text(url) == "s3://bkt/dir/scan.ome.zarr/0"
    assert reading.name_of(url) == "0"
    assert reading.folder_of(url) == "s3://bkt/dir/scan.ome.zarr"
    assert reading.absolute(url) == url and reading.resolved_text(url) == url
    assert reading.below(as_path(url), "") == as_path(url)
    assert str(reading.below(url, "a/b")) == "s3://bkt/dir/scan.ome.zarr/0/a/b"
    assert [str(h) for h, _ in reading.prefixes(as_path(url))] == [
        "s3://bkt/dir",
        "s3://bkt/dir/scan.ome.zarr",
        "s3://bkt/dir/scan.ome.zarr/0",
    ]
    assert not reading.listed_file(url) and not reading.listed_dir(url)
    assert reading.is_container(url)
    assert reading.options_for(url) is not None
    assert reading.handle_key(url) is None
    assert not reading.can_glob("s3://bkt/slice_*.tif")
    assert not capabilities.opened_by_name(as_path(url))


def test_a_local_path_is_named_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert reading.absolute("a.h5") == os.path.join(str(tmp_path), "a.h5")
    assert reading.resolved_text("link/a.h5") == str(tmp_path.resolve() / "real" / "a.h5")
    assert reading.folder_of("link/a.h5") == str(tmp_path.resolve() / "real")
    assert reading.source_text(Path("link/a.h5")) == "link/a.h5"
    assert reading.handle_key("link/a.h5") == reading.handle_key(tmp_path / "real" / "a.h5")
    assert reading.options_for("a.h5") is None
    assert reading.open_file("a.h5") == "a.h5"
    assert reading.can_glob("slice_*.tif") and capabilities.opened_by_name("a.h5")
    assert reading.location_text(Path("a.h5")) == "a.h5"
    assert reading.location_text(UrlPath("s3://b/k")) == "s3://b/k"
    assert reading.location_text(np.zeros(2)) is None
    assert not reading.is_container(tmp_path / "none")


def test_a_source_opened_through_a_link_is_let_go_by_its_real_name(tmp_path):
    data = make_data("uint16", (4, 8, 8))
    source = write_zarr3(tmp_path / "src.zarr", data, chunks=(2, 8, 8))
    (tmp_path / "link.zarr").symlink_to(source.file)
    opened = le.open_source(str(tmp_path / "link.zarr"))
    assert np.array_equal(opened.values, data)
    release_files([source.file])  # nothing held open by a Zarr store: no error either way
    release_files(["s3://bkt/src.zarr"])  # a URL holds no handle


def test_an_unreadable_local_tree_leaves_the_identity_unknown(tmp_path, monkeypatch):
    from lazyexport.sources.base import file_identity

    _write_tree(tmp_path / "t.n5")
    assert file_identity(tmp_path / "t.n5") is not None

    def unlistable(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(reading, "file_listing", unlistable)
    assert file_identity(tmp_path / "t.n5") is None
