"""What the writers and front ends ask of an output's location, answered by the storage layer
alike for a local path and a URL: the capabilities (:mod:`lazyexport.storage.capabilities`)
and the operations (:mod:`lazyexport.storage.paths`) that replaced their own ``is_url`` checks.

Local answers are checked on real files (links, dangling links, directories in the way);
URL answers against S3 (moto's server on loopback), objects written with lazyexport's own
object requests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

import pytest

import lazyexport as le
from helpers import make_data, write_zarr3
from helpers.objstore import key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.storage import capabilities, paths
from lazyexport.storage.urls import StorageError, UrlPath


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("lzxloc") as server:
        yield server


@pytest.fixture
def base(s3, request) -> UrlPath:
    """A key prefix of the test's own in the bucket."""
    return UrlPath(f"s3://lzxloc/{key_prefix(request.node.name)}")


# -- capabilities: answered from the location alone --------------------------------------------


@pytest.mark.parametrize("where", ["out.zarr", "/abs/out.h5", Path("rel/out.h5")])
def test_a_local_path_can_do_what_a_file_system_does(where):
    assert capabilities.can_rename(where)
    assert not capabilities.replaced_whole(where)
    assert not capabilities.removed_by_prefix(where)
    assert capabilities.opened_by_name(where)
    assert not capabilities.read_only(where)
    assert capabilities.bucket_root(where) is None


@pytest.mark.parametrize("where", ["s3://b/out.zarr", UrlPath("gs://b/x/out.h5"), "az://c/o.h5"])
def test_an_object_store_has_no_rename_and_replaces_objects_whole(where):
    assert not capabilities.can_rename(where)
    assert capabilities.replaced_whole(where)
    assert capabilities.removed_by_prefix(where)
    assert not capabilities.opened_by_name(where)
    assert not capabilities.read_only(where)
    assert capabilities.bucket_root(where) is None


def test_http_is_read_only_and_a_bucket_alone_names_no_output():
    assert capabilities.read_only("https://host/data/out.zarr")
    assert capabilities.read_only(UrlPath("http://host/x.h5"))
    assert capabilities.bucket_root("s3://bkt") == "s3://bkt"
    assert capabilities.bucket_root("s3://bkt/") == "s3://bkt"
    assert capabilities.bucket_root(UrlPath("gcs://bkt")) == "gcs://bkt"
    assert capabilities.bucket_root("s3://bkt/k") is None


# -- operations on local files ------------------------------------------------------------------


def test_a_dangling_link_exists_but_is_not_present(tmp_path):
    link = tmp_path / "gone.zarr"
    link.symlink_to(tmp_path / "nowhere")
    assert paths.exists(link) and paths.node_exists(link)
    assert not paths.present(link)
    assert not paths.store_exists(link)
    assert paths.file_in_the_way(link)  # where a store directory goes


def test_a_file_is_in_the_way_of_a_store_and_a_directory_is_not(tmp_path):
    (tmp_path / "f.zarr").write_text("x")
    (tmp_path / "d.zarr").mkdir()
    (tmp_path / "l.zarr").symlink_to(tmp_path / "d.zarr")
    assert paths.file_in_the_way(tmp_path / "f.zarr")
    assert not paths.file_in_the_way(tmp_path / "d.zarr")
    assert not paths.file_in_the_way(tmp_path / "l.zarr")
    assert not paths.file_in_the_way(tmp_path / "none.zarr")
    assert paths.store_exists(tmp_path / "d.zarr") and paths.store_exists(tmp_path / "l.zarr")
    assert not paths.store_exists(tmp_path / "f.zarr")


def test_an_occupied_directory_is_reached_through_a_link_only_when_asked(tmp_path):
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    (full / "a").write_text("x")
    (tmp_path / "link").symlink_to(full)
    assert paths.occupied_directory(full)
    assert not paths.occupied_directory(empty)
    assert not paths.occupied_directory(tmp_path / "link")
    assert paths.occupied_directory(tmp_path / "link", follow_links=True)
    assert not paths.occupied_directory(full / "a", follow_links=True)  # a file


def test_json_is_read_or_none(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps({"node_type": "array"}))
    (tmp_path / "bad.json").write_text("{not json")
    assert paths.read_json(tmp_path / "good.json") == {"node_type": "array"}
    assert paths.read_json(tmp_path / "bad.json") is None
    assert paths.read_json(tmp_path / "missing.json") is None
    assert paths.read_json(tmp_path) is None  # a directory


def test_files_are_matched_locally_and_never_at_a_url(tmp_path, monkeypatch):
    (tmp_path / "s_1.tif").write_text("x")
    (tmp_path / "s_2.tif").write_text("x")
    assert sorted(paths.matching_files(str(tmp_path / "s_*.tif"))) == [
        str(tmp_path / "s_1.tif"),
        str(tmp_path / "s_2.tif"),
    ]
    # a local directory spelled like a URL is not what a URL names
    monkeypatch.chdir(tmp_path)
    os.makedirs("s3:/b", exist_ok=True)
    Path("s3:/b/s_1.tif").write_text("x")
    assert paths.matching_files("s3:/b/s_*.tif") == ["s3:/b/s_1.tif"]
    assert paths.matching_files("s3://b/s_*.tif") == []


def test_a_written_location_keeps_a_local_path_as_written_and_cleans_a_url():
    assert paths.written_location("a/../b/out.zarr/x") == PurePath("a/../b/out.zarr/x")
    assert paths.written_location("file:///abs/out.h5") == PurePath("/abs/out.h5")
    url = paths.written_location("s3://b/a/../out.zarr/x")
    assert isinstance(url, UrlPath) and str(url) == "s3://b/out.zarr/x"
    with pytest.raises(StorageError, match="unknown URL scheme"):
        paths.written_location("ftp://host/out.h5")


# -- operations at a URL ------------------------------------------------------------------------


def test_at_a_url_only_metadata_makes_a_node(base):
    store = base / "out.zarr"
    remote.put_bytes(store / "c" / "0", b"chunk")  # an export under way: chunks alone
    assert paths.exists(store)
    assert not paths.node_exists(store) and not paths.store_exists(store)
    remote.put_bytes(store / "zarr.json", json.dumps({"node_type": "group"}).encode())
    assert paths.node_exists(store) and paths.store_exists(store)
    assert paths.read_json(store / "zarr.json") == {"node_type": "group"}


def test_at_a_url_nothing_is_a_file_or_directory_in_the_way(base):
    obj = base / "thing.zarr"
    remote.put_bytes(obj, b"an object")
    remote.put_bytes(obj / "below", b"and a key below it")
    assert paths.present(obj) and paths.exists(obj)
    assert not paths.file_in_the_way(obj)
    assert not paths.occupied_directory(obj, follow_links=True)
    assert not paths.present(base / "missing")
    assert paths.read_json(obj) is None  # not JSON
    assert paths.read_json(base / "missing.json") is None


def test_a_url_output_of_a_directory_format_is_refused_and_a_local_one_is_not(tmp_path):
    source = write_zarr3(tmp_path / "src.zarr", make_data("uint8", (2, 8, 8))).file
    with pytest.raises(le.ExportError, match="cannot be written to a URL"):
        le.plan(str(source), le.ExportSettings(format="n5", output="s3://b/out.n5"))
    local = tmp_path / "out.n5"
    assert le.plan(str(source), le.ExportSettings(format="n5", output=str(local))).output == local
