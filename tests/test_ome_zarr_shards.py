"""Sharded OME-Zarr 0.5: the default shard rule (a level's files stay few), explicit and no
shards, shard-aligned pyramid levels, and every level read back by independent readers."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import zarr

import lazyexport as le
from helpers.binning import reference
from lazyexport.chunkio import ChunkFiles
from lazyexport.cli import main
from lazyexport.formats.ome_zarr import SHARD_BYTES, OmeZarrWriter, level_shards, pyramid
from lazyexport.plan import build_plan
from lazyexport.plan_chunks import grown_shards, shard_files

# the issue's job, scaled down 8x per axis: 2 GiB of uint16 (1024^3) in 64^3 chunks -> 4 MiB
# (128^3) in 8^3 chunks, the default shard size scaled by the same 8^3
SIDE, CHUNK, SCALE = 128, 8, 8**3


@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (1000, 1100, 900), (512, 2048, 1024)])
def test_default_rule_keeps_every_level_of_the_issues_job_under_100_files(shape):
    chunks = (64, 64, 64)
    assert math.prod(shape) * 2 >= 2**30  # a 2 GiB-class uint16 volume (not written)
    shards = grown_shards(("z", "y", "x"), chunks, shape, 2, SHARD_BYTES)
    assert math.prod(shards) * 2 <= SHARD_BYTES
    assert all(s % c == 0 for s, c in zip(shards, chunks))
    counts = []
    for level in pyramid(("z", "y", "x"), shape, {}, 3):
        lchunks = tuple(min(c, n) for c, n in zip(chunks, level.shape))
        halved = level.factors if level.path == "1" else None  # (level 1: a level-0 shard's)
        lshards = level_shards(shards, lchunks, level.shape, halved)
        assert lshards is not None and all(s % c == 0 for s, c in zip(lshards, lchunks))
        counts.append(shard_files(level.shape, lshards))
    assert max(counts) <= 100, counts
    if shape == (1024, 1024, 1024):
        assert shards == (256, 256, 256) and counts == [64, 64, 1]


def test_shards_grow_near_cubic_and_stop_at_the_array():
    assert grown_shards(("z", "y", "x"), (64, 64, 64), (100, 4096, 4096), 2, SHARD_BYTES) == (
        128,
        256,
        512,
    )
    assert grown_shards(("c", "y", "x"), (3, 64, 64), (3, 100, 90), 1, SHARD_BYTES) == (3, 128, 128)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A smooth uint16 volume in a Zarr store (its own chunks the output's)."""
    z, y, x = np.ogrid[:SIDE, :SIDE, :SIDE]
    data = (z * 97 + y * 31 + x * 7 + (x * y) % 13).astype(np.uint16)
    path = tmp_path_factory.mktemp("src") / "ramp.zarr"
    zarr.create_array(str(path), shape=data.shape, chunks=(32,) * 3, dtype="uint16")[...] = data
    return path, data


@pytest.fixture(scope="module")
def want(ramp) -> list[np.ndarray]:
    """Each level as an independent mean (helpers.binning) of the level below."""
    out = [ramp[1]]
    for _ in range(2):
        out.append(reference(out[-1], (2, 2, 2), "mean"))
    return out


def export(src: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "export",
            str(src),
            "--format",
            "ome-zarr",
            "--output",
            str(out),
            "--chunks",
            f"z={CHUNK},y={CHUNK},x={CHUNK}",
            "--levels",
            "3",
            "--memory-limit",
            "256MiB",
            *extra,
        ]
    )


def level_files(out: Path) -> list[int]:
    return [sum(1 for p in (out / str(k)).rglob("*") if p.is_file()) for k in range(3)]


@pytest.fixture(scope="module")
def sharded(ramp, tmp_path_factory) -> Path:
    """The issue's job scaled down: the default rule at 1/64 of its bytes (as the volume)."""
    src, _ = ramp
    out = tmp_path_factory.mktemp("out") / "job.ome.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OmeZarrWriter, "shard_bytes", SHARD_BYTES // SCALE)
        assert export(src, out) == 0
    return out


def test_default_sharded_job_writes_few_files_per_level(sharded, ramp, tmp_path):
    files = level_files(sharded)
    assert files == [64 + 1, 64 + 1, 1 + 1]  # shards + the level's zarr.json
    # level 1's shards cover a level-0 shard's region (made in the same pass as level 0)
    for k, shards in enumerate([(32,) * 3, (16,) * 3, (32,) * 3]):
        arr = zarr.open_array(str(sharded / str(k)), mode="r")
        assert arr.shards == shards and arr.chunks == (CHUNK,) * 3
    # the same job unsharded: one file per chunk
    assert export(ramp[0], tmp_path / "plain.ome.zarr", "--shards", "none") == 0
    assert level_files(tmp_path / "plain.ome.zarr") == [4096 + 1, 512 + 1, 64 + 1]
    assert zarr.open_array(str(tmp_path / "plain.ome.zarr/0"), mode="r").shards is None


def test_every_level_reads_back_equal_with_zarr_and_zarrs(sharded, want):
    for k, expected in enumerate(want):
        np.testing.assert_array_equal(
            zarr.open_array(str(sharded / str(k)), mode="r")[...], expected
        )
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        for k, expected in enumerate(want):
            arr = zarr.open_array(str(sharded / str(k)), mode="r")
            assert type(arr.async_array.codec_pipeline).__name__ == "ZarrsCodecPipeline"
            np.testing.assert_array_equal(arr[...], expected)


def test_every_level_reads_back_equal_with_tensorstore(sharded, want):
    import tensorstore as ts

    for k, expected in enumerate(want):
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(sharded / str(k))}}
        np.testing.assert_array_equal(ts.open(spec).result().read().result(), expected)


def test_every_level_reads_back_equal_with_ome_zarr_py(sharded, want):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node, *_) = Reader(parse_url(str(sharded)))()
    assert len(node.data) == 3
    for data, expected in zip(node.data, want):
        np.testing.assert_array_equal(np.asarray(data), expected)


def test_every_level_reads_back_equal_with_ngff_zarr(sharded, want):
    import ngff_zarr

    multiscales = ngff_zarr.from_ngff_zarr(str(sharded))
    assert len(multiscales.images) == 3
    for image, expected in zip(multiscales.images, want):
        np.testing.assert_array_equal(np.asarray(image.data), expected)


def test_every_level_reads_back_equal_with_bioio_ome_zarr(sharded, want):
    from bioio_ome_zarr import Reader

    reader = Reader(str(sharded))
    assert len(reader.resolution_levels) == 3
    for k, expected in enumerate(want):
        reader.set_resolution_level(k)
        np.testing.assert_array_equal(np.asarray(reader.data).reshape(expected.shape), expected)


def test_sharded_output_is_valid_ome_zarr_0_5(sharded):
    from ome_zarr_models.v05.image import Image

    model = Image.from_zarr(zarr.open_group(str(sharded), mode="r"))
    assert [d.path for d in model.ome_attributes.multiscales[0].datasets] == ["0", "1", "2"]


def test_explicit_shards_apply_to_every_level_clipped(ramp, want, tmp_path):
    out = tmp_path / "explicit.ome.zarr"
    assert export(ramp[0], out, "--shards", "z=16,y=64,x=128") == 0
    shards = [zarr.open_array(str(out / str(k)), mode="r").shards for k in range(3)]
    # level 1's: halved, in whole chunks (the region of a level-0 shard); level 2's clipped
    assert shards == [(16, 64, 128), (8, 32, 64), (16, 32, 32)]
    for k, expected in enumerate(want):
        np.testing.assert_array_equal(zarr.open_array(str(out / str(k)), mode="r")[...], expected)


def test_pyramid_levels_are_written_one_whole_shard_at_a_time(ramp, want, tmp_path, monkeypatch):
    """With a pyramid budget smaller than a shard, a level's shard is assembled from pieces and
    written once: every write into level 2 is exactly one whole shard; level 1, made by the
    blocks in the same pass as level 0, is written in whole shards, each once."""
    writes: list[tuple[str, tuple[slice, ...]]] = []
    original = zarr.Array.__setitem__
    direct = ChunkFiles.write

    def recorded(self, selection, value):
        writes.append((self.path, selection))
        return original(self, selection, value)

    def recorded_direct(self, block, location):
        writes.append((self.root.name, location))
        return direct(self, block, location)

    monkeypatch.setattr(zarr.Array, "__setitem__", recorded)
    monkeypatch.setattr(ChunkFiles, "write", recorded_direct)
    out = tmp_path / "aligned.ome.zarr"
    assert export(ramp[0], out, "--shards", "z=32,y=32,x=32", "--memory-limit", "16MiB") == 0
    for k in (1, 2):
        arr = zarr.open_array(str(out / str(k)), mode="r")
        assert arr.shards is not None
        mine = [sel for path, sel in writes if path.endswith(str(k))]
        if k == 2:
            assert len(mine) == shard_files(arr.shape, arr.shards)  # one write per shard
        covered: list[tuple[int, ...]] = []
        for sel in mine:
            for s, shard, n in zip(sel, arr.shards, arr.shape):
                assert s.start % shard == 0 and (s.stop % shard == 0 or s.stop == n)
            covered += product(*(range(s.start, s.stop, u) for s, u in zip(sel, arr.shards)))
        assert sorted(covered) == sorted(set(covered))  # no shard written twice
        assert len(covered) == shard_files(arr.shape, arr.shards)
    for k, expected in enumerate(want):
        np.testing.assert_array_equal(zarr.open_array(str(out / str(k)), mode="r")[...], expected)


def test_zarr_v2_cannot_shard(ramp, tmp_path, capsys):
    code = export(ramp[0], tmp_path / "v2.ome.zarr", "--zarr-format", "2", "--shards", "auto")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: shards need zarr_format 3; Zarr v2 has no sharding"]
    # without --shards: OME-NGFF 0.4 on Zarr v2, unsharded
    assert export(ramp[0], tmp_path / "v2.ome.zarr", "--zarr-format", "2") == 0
    arr = zarr.open_array(str(tmp_path / "v2.ome.zarr/0"), mode="r")
    assert arr.metadata.zarr_format == 2 and arr.chunks == (CHUNK,) * 3


def test_plan_names_the_default_shards_and_none_turns_them_off(ramp, tmp_path):
    source = le.open_source(str(ramp[0]))
    settings = le.ExportSettings(format="ome-zarr", output=str(tmp_path / "p.ome.zarr"))
    plan = build_plan(source, settings.replace(chunks={"z": 16, "y": 16, "x": 16}))
    assert plan.shards == (128, 128, 128)  # up to 32 MiB: here the whole (4 MiB) volume
    assert any("shards of (128, 128, 128) (4.00 MiB each, 1 file at" in n for n in plan.notes)
    # 100 chunks or fewer are few files already: not sharded (each shard would be one task)
    few = build_plan(source, settings.replace(chunks={"z": 32, "y": 32, "x": 32}))  # 64
    assert few.chunks == (32, 32, 32) and few.shards is None
    many = build_plan(source, settings.replace(chunks={"z": 16, "y": 32, "x": 32}))  # 128
    assert many.shards is not None
    plain = build_plan(source, settings.replace(chunks={"z": 16, "y": 16, "x": 16}, shards="none"))
    assert plain.shards is None and not any("shards of" in n for n in plain.notes)
    assert build_plan(source, settings.replace(format="zarr", output=None)).shards is None
