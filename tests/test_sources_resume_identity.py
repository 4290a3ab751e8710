"""Resume and the source's identity (issue 13 item 3): a resumed export notices a source whose
pixels changed (even rewritten with its old mtime) and writes the new data, an unchanged source
still resumes, and a source whose identity is unknown is refused. Each test failed before its fix.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import tifffile
import zarr

import lazyexport as le
from helpers.zarr_nodes import read_all
from lazyexport.errors import ExportError

pytestmark = pytest.mark.usefixtures("small_blocks")


RESUME_SHAPE = (
    12,
    256,
    512,
)  # float32: 512 KiB per slice; one slice per block at 16 MiB / 2 workers


def _cancel_after(blocks: int):
    cancel = threading.Event()

    def progress(event):
        if event.blocks_done >= blocks:
            cancel.set()

    return progress, cancel


def _write_source(kind: str, path: Path, data: np.ndarray) -> str:
    """Write ``data`` as a ``kind`` source at ``path`` (or rewrite its pixels in place); return the
    spec."""
    chunks = (1, 128, 128)
    if kind in ("zarr2", "zarr3"):
        fmt: Literal[2, 3] = 2 if kind == "zarr2" else 3
        if path.exists():
            zarr.open_array(str(path), mode="r+")[...] = data
        else:
            zarr.create_array(
                store=str(path), shape=data.shape, dtype=data.dtype, chunks=chunks, zarr_format=fmt
            )[...] = data
        return str(path)
    if kind == "ome-zarr":
        if path.exists():
            zarr.open_array(str(path / "0"), mode="r+")[...] = data
        else:
            le.export(
                data,
                le.ExportSettings(
                    format="ome-zarr", output=str(path), levels=1, chunks=dict(zip("zyx", chunks))
                ),
            )
        return str(path)
    import tensorstore as ts

    spec: dict[str, Any] = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "path": "raw",
    }
    if not path.exists():
        spec.update(
            create=True,
            metadata={
                "dimensions": list(reversed(data.shape)),
                "dataType": "float32",
                "blockSize": list(reversed(chunks)),
                "compression": {"type": "gzip"},
            },
        )
    ts.open(spec).result().write(data.transpose()).result()
    return f"{path}/raw"


@pytest.mark.parametrize(
    "kind, name",
    [("zarr3", "src.zarr"), ("zarr2", "src.zarr"), ("ome-zarr", "src.ome.zarr"), ("n5", "src.n5")],
)
def test_item03_resume_after_the_source_pixels_changed_writes_the_new_data(tmp_path, kind, name):
    rng = np.random.default_rng(3)
    old = rng.random(RESUME_SHAPE, dtype=np.float32)
    new = rng.random(RESUME_SHAPE, dtype=np.float32)
    spec = _write_source(kind, tmp_path / name, old)
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"), chunks={"z": 1})
    progress, cancel = _cancel_after(4)
    with pytest.raises(ExportError, match="cancelled"):
        le.export(
            spec, settings, memory_limit="16MiB", resume=True, progress=progress, cancel=cancel
        )
    assert any(".lazyexport-r" in p.name for p in tmp_path.iterdir())  # kept for --resume

    _write_source(kind, tmp_path / name, new)  # same shape, dtype and metadata; new pixels
    events: list = []
    le.export(spec, settings, memory_limit="16MiB", resume=True, progress=events.append)
    assert events[0].blocks_done == 1  # nothing reused
    resumed = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    clean = le.export(spec, le.ExportSettings(format="zarr", output=str(tmp_path / "clean.zarr")))
    np.testing.assert_array_equal(resumed, zarr.open_array(str(clean.output), mode="r")[...])
    np.testing.assert_array_equal(resumed, new)


def test_item03_an_unchanged_source_still_resumes(tmp_path):
    spec = _write_source("zarr3", tmp_path / "src.zarr", np.ones(RESUME_SHAPE, np.float32))
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"), chunks={"z": 1})
    progress, cancel = _cancel_after(4)
    with pytest.raises(ExportError, match="cancelled"):
        le.export(
            spec, settings, memory_limit="16MiB", resume=True, progress=progress, cancel=cancel
        )
    events: list = []
    le.export(spec, settings, memory_limit="16MiB", resume=True, progress=events.append)
    assert events[0].blocks_done > 1  # finished blocks reused
    assert read_all(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")).all()


@pytest.mark.parametrize("kind", ["file", "glob"])
def test_item03_a_file_rewritten_with_its_old_mtime_is_another_source(tmp_path, kind):
    """The size (and inode) is part of a file's identity, not just the mtime (``cp -p`` keeps
    that)."""
    import os

    first = tmp_path / "a_0.tif"
    tifffile.imwrite(first, np.zeros((8, 8), np.uint8))
    spec = str(first) if kind == "file" else str(tmp_path / "a_*.tif")
    before = le.open_source(spec).data.name
    stat = first.stat()
    tifffile.imwrite(first, np.zeros((8, 8), np.uint8), description="another header, another size")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert first.stat().st_size != stat.st_size
    assert le.open_source(spec).data.name != before


def test_item03_resume_refuses_a_source_whose_identity_is_unknown(tmp_path, monkeypatch):
    from lazyexport.storage import reading

    spec = _write_source("zarr3", tmp_path / "src.zarr", np.ones((2, 16, 16), np.float32))

    def unlistable(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(reading, "file_listing", unlistable)
    settings = le.ExportSettings(format="zarr", output=str(tmp_path / "out.zarr"))
    with pytest.raises(ExportError, match="cannot tell whether the source changed") as err:
        le.export(spec, settings, resume=True)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out.zarr").exists()
    le.export(spec, settings)  # without resume it exports
    assert read_all(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")).all()
