"""The C heap while block tasks run (lazyexport.heap): a freed block is reused by the next task
instead of fresh pages faulted in from the kernel, and the heap is handed back afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from helpers.fresh import run_json
from lazyexport import heap

SCRIPT = """
import json, resource, sys
import lazyexport as le
import lazyexport.run
if sys.argv[3] == "off":  # the export without the heap kept
    lazyexport.run.reusing_freed_memory = __import__("contextlib").nullcontext
source = le.open_source(sys.argv[1], axes="zyx")
# output chunks wider than the source's: each source chunk is decoded into a scratch and copied
# into its block (blocks that hold chunks whole are decoded into in place, with no scratch)
chunks = {"z": 16, "y": 512, "x": 512}
settings = le.ExportSettings(format="zarr", output=sys.argv[2], chunks=chunks)
plan = le.plan(source, settings)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
le.export(source, settings)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"faults": after - before, "blocks": plan.nblocks}))
"""


def _faults(source: Path, out: Path, mode: str) -> dict:
    return run_json(SCRIPT, str(source), str(out), mode)


def test_an_export_reuses_freed_blocks_instead_of_faulting_in_fresh_pages(tmp_path):
    shape = (128, 1024, 1024)  # uint16: 256 MiB, source chunks of 2 MiB
    source = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=shape, chunks=(16, 256, 256), dtype="uint16"
    )
    noise = np.random.default_rng(0)  # 12-bit noise: compressed chunks of about 1.5 MiB
    for z in range(0, 128, 16):
        source[z : z + 16] = noise.integers(0, 4096, size=(16, 1024, 1024), dtype=np.uint16)
    kept = _faults(tmp_path / "s.zarr", tmp_path / "kept.zarr", "on")
    fresh = _faults(tmp_path / "s.zarr", tmp_path / "fresh.zarr", "off")
    nbytes = np.prod(shape) * 2
    assert kept["blocks"] >= 8
    # fresh pages for each chunk's compressed bytes read and encoded (about the volume in
    # 4 KiB pages; measured 0.92 of it), against those of the first tasks (0.06)
    assert fresh["faults"] * 4096 > 0.5 * nbytes, fresh
    assert kept["faults"] * 4096 < 0.2 * nbytes, (kept, fresh)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "kept.zarr"))[...], source[...])


class _Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def mallopt(self, option, value):
        self.calls.append(("mallopt", option, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_exports_at_once_share_the_kept_heap_and_the_last_one_hands_it_back(monkeypatch):
    libc = _Recorder()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.reusing_freed_memory():
        with heap.reusing_freed_memory():  # a second export in another thread
            assert libc.calls == [
                ("mallopt", heap._M_MMAP_THRESHOLD, heap.KEEP_BYTES),
                ("mallopt", heap._M_TRIM_THRESHOLD, heap.KEEP_BYTES),
            ]
        assert len(libc.calls) == 2  # the first is still running
    assert libc.calls[2:] == [
        *(("mallopt", option, value) for option, value in heap.AFTER.items()),
        ("malloc_trim", 0),
    ]


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with heap.reusing_freed_memory():
        heap.release_memory()
