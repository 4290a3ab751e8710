"""Slice sequences: one 2-D (or 2-D + channel) image file per slice along the slicing axis.

The plan picks the slicing axis (the outermost non-channel axis) and one file name per slice
from ``{slice_index}``. Each TIFF carries its axes in tifffile's JSON description, so it can
be read back labeled.

Two ways to get from blocks to slice files, chosen by the planner (``spec.staged``):

- Source chunks one slice deep (a TIFF stack, 2-D chunked data): blocks are whole slices, and
  each file is written by the one task that computed its slice.
- Source chunks several slices deep (a Zarr/HDF5 volume chunked 16 or 64 slices deep): a
  slice-shaped block would need a whole row of source chunks (64 slices of a 4096x4096 plane:
  4 GiB) held in memory, or each chunk read again for every slice it holds. Instead blocks
  follow the source's chunks and are written into a raw *staging* file (``.lazyexport-….stage``
  beside the first slice, as large as the uncompressed output); the task that completes a
  slice writes its file from there at once, and :meth:`SequenceTarget.finish` writes any
  slice no task completed (on a cluster, where workers do not see each other's counts).
  Memory stays at a few blocks; the price is the temporary disk space and one extra write
  and read of the output through the page cache.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..declarations import TIFF_SEQUENCE
from ..heap import release_memory
from ..storage import NOFOLLOW, temp_path
from ..storage.paths import matching_files
from .base import Target, Writer, pread_exact, write_region
from .registry import register
from .spec import OutputSpec


def plane_axes(axes: tuple[str, ...], slice_axis: str) -> tuple[str, ...]:
    """Axes of one written plane: channel first (if any), then the plane's spatial axes."""
    rest = [a for a in axes if a != slice_axis]
    return tuple(a for a in rest if a == "c") + tuple(a for a in rest if a != "c")


def template_files(slice_template: str, paths: tuple[Path, ...] = ()) -> list[Path]:
    """The local files of a sequence's template, whatever their slice index: ``slice_template``
    is every slice's path with "\0" where its index goes (:attr:`OutputSpec.slice_template`),
    and the same digits wherever the index repeats. None where the template is unknown, or
    does not name every one of ``paths`` (a staged upload's local copy)."""
    if not slice_template:
        return []
    parts = slice_template.split("\0")
    if len(parts) < 2:
        return []
    pattern = re.compile(
        re.escape(parts[0])
        + "".join(
            ("(?P<i>[0-9]+)" if k == 0 else "(?P=i)") + re.escape(part)
            for k, part in enumerate(parts[1:])
        )
    )
    if not all(pattern.fullmatch(str(p)) for p in paths):
        return []
    found = matching_files("*".join(glob.escape(part) for part in parts))
    return sorted(
        Path(f) for f in found if pattern.fullmatch(f) and (os.path.isfile(f) or os.path.islink(f))
    )


def stage_path(spec: OutputSpec, token: str) -> Path:
    """The staging file of a staged sequence export (beside the first slice)."""
    return temp_path(spec.paths[0], token, "stage")


class SequenceWriter(Writer):
    def write_buffers(
        self,
        block_bytes: int,
        unit_bytes: int,
        staged: bool = False,
        spec: OutputSpec | None = None,
    ) -> int:
        # a plane made contiguous and encoded; staged: the block reordered for the staging file
        # too (slice axis first, then the plane's axes), unless it is in that order already
        reordered = (
            spec is None
            or spec.slice_axis is None
            or (spec.slice_axis, *plane_axes(spec.axes, spec.slice_axis)) != tuple(spec.axes)
        )
        return 2 * unit_bytes + (block_bytes if staged and reordered else 0)

    def existing(self, spec: OutputSpec) -> list[Path]:
        """The slice files of this export that exist, then any other file of its template (a
        longer earlier export's tail): all of them are the output, replaced with it."""
        found = super().existing(spec)
        seen = set(found)
        return found + [f for f in template_files(spec.slice_template, spec.paths) if f not in seen]

    def open(self, spec: OutputSpec, token: str) -> Target:
        # one token for all slices, so they are recognisably one export
        temps = {}
        for path in spec.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps[path] = temp_path(path, token)
        target = self.target_class(
            temps,
            token,
            spec.axes,
            spec.slice_axis,
            spec.compression,
            spec.compression_level,
            spec.slice_start,
        )
        target.slice_template = spec.slice_template
        if spec.staged:
            stage = stage_path(spec, token)
            # sparse; what an interrupted run staged is kept; never through a link at its name
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW
            with os.fdopen(os.open(stage, flags, 0o644), "ab") as f:
                f.truncate(spec.nbytes)
            target.stage_in(stage, spec.shape, spec.dtype)
        return target

    target_class: type[SequenceTarget]


class SequenceTarget(Target):
    """Writes each slice of a block to its own file; subclasses implement :meth:`write_plane`."""

    def __init__(self, temps, token, axes, slice_axis, compression, level, slice_start):
        super().__init__(temps, token)
        self.files = list(temps.values())  # temporary file of slice i (output index)
        self.axes = tuple(axes)
        self.slice_pos = self.axes.index(slice_axis)
        self.compression = compression
        self.level = level
        self.slice_start = slice_start
        self.stage: Path | None = None
        self.slice_template = ""  # see OutputSpec.slice_template

    def stage_in(self, stage: Path, shape: tuple[int, ...], dtype) -> None:
        """Assemble slices in the raw file ``stage``, stored slice by slice (slice axis first,
        then :meth:`plane_axes`), so one slice is one contiguous read."""
        self.stage = stage
        # kept until the commit is done: an interrupted one can be redone
        self.scratch.append(stage)
        self.perm = (self.slice_pos, *[self.axes.index(a) for a in self.plane_axes()])
        self.stage_shape = tuple(shape[i] for i in self.perm)
        self.dtype = np.dtype(dtype)
        self.plane_size = math.prod(self.stage_shape[1:])
        self._init_counts()

    def _init_counts(self) -> None:
        self._missing: dict[int, int] = {}  # slice -> elements not yet staged (this process)
        self._written: set[int] = set()  # slices whose file this process wrote
        self._count_lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_missing", "_written", "_count_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.stage is not None:
            self._init_counts()

    def plane_axes(self) -> tuple[str, ...]:
        """Axes of one written plane: :func:`plane_axes`."""
        return plane_axes(tuple(self.axes), self.axes[self.slice_pos])

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        if self.stage is not None:
            return self._stage_block(block, location)
        rest = [a for a in self.axes if a != self.axes[self.slice_pos]]
        order = [rest.index(a) for a in self.plane_axes()]
        first = location[self.slice_pos].start
        for k in range(block.shape[self.slice_pos]):
            plane = np.take(block, k, axis=self.slice_pos).transpose(order)
            self.write_plane(self.files[first + k], np.ascontiguousarray(plane), first + k)
        return block.nbytes

    def _open_stage(self, flags: int) -> int:
        if self.stage is None:
            raise RuntimeError("the slices of this sequence are not staged")
        return os.open(self.stage, flags)

    def _stage_block(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        fd = self._open_stage(os.O_WRONLY)
        try:
            write_region(
                fd,
                0,
                self.stage_shape,
                block.transpose(self.perm),
                tuple(location[i] for i in self.perm),
            )
        finally:
            os.close(fd)
        first = location[self.slice_pos].start
        per_slice = block.size // max(block.shape[self.slice_pos], 1)
        complete = []
        with self._count_lock:
            for k in range(first, first + block.shape[self.slice_pos]):
                left = self._missing.get(k, self.plane_size) - per_slice
                self._missing[k] = left
                if left == 0:
                    complete.append(k)
        if complete:  # this block completed these slices: write them now,
            release_memory()  # with the heap the block phase freed handed back first
        for k in complete:
            self._write_staged(k)
        return block.nbytes

    def _write_staged(self, index: int) -> None:
        fd = self._open_stage(os.O_RDONLY)
        try:
            raw = pread_exact(
                fd,
                self.plane_size * self.dtype.itemsize,
                index * self.plane_size * self.dtype.itemsize,
            )
        finally:
            os.close(fd)
        plane = np.frombuffer(raw, dtype=self.dtype).reshape(self.stage_shape[1:])
        self.write_plane(self.files[index], plane, index)
        with self._count_lock:
            self._written.add(index)

    def finish(self) -> None:
        """Staged: write the slices no block task completed (all of them after a resume or on
        a cluster), a few at a time. The staging file goes only once the commit is done, so an
        interrupted commit can always be finished or redone."""
        if self.stage is None:
            return
        left = [k for k in range(len(self.files)) if k not in self._written]
        release_memory()
        if left:
            with ThreadPoolExecutor(min(os.cpu_count() or 1, 4)) as pool:
                list(pool.map(self._write_staged, left))

    def prepare_commit(self) -> None:
        """Files of the template that this export does not write (an earlier, longer export's
        tail) go with the commit."""
        finals = set(self.temps)
        self.retired = [
            f for f in template_files(self.slice_template, tuple(finals)) if f not in finals
        ]

    def write_plane(self, path: Path, plane: np.ndarray, index: int) -> None:
        raise NotImplementedError

    def slice_metadata(self, index: int, plane_axes: str) -> dict:
        """What each slice file records so that it reads back labeled: the exported axes, the
        axes of the stored plane, the slicing axis and this slice's source index."""
        return {
            "lazyexport_axes": "".join(self.axes),
            "lazyexport_plane": plane_axes,
            "lazyexport_slice_axis": self.axes[self.slice_pos],
            "lazyexport_slice_index": self.slice_start + index,
        }


class TiffSequenceTarget(SequenceTarget):
    def plane_axes(self) -> tuple[str, ...]:
        """Axes of one written plane, in the exported order (:meth:`TiffSequenceWriter.stored_axes`
        puts a channel axis first or last): a channel first is a leading page axis, a channel
        last the pixels' samples."""
        return tuple(a for a in self.axes if a != self.axes[self.slice_pos])

    def write_plane(self, path: Path, plane: np.ndarray, index: int) -> None:
        import json

        # any length-1 axes stay as leading page axes; tifffile's code for the two spatial axes
        # is always YX, our own letters go in the description
        axes = self.plane_axes()
        samples = plane.shape[-1] if axes[-1] == "c" else 0
        page = axes[:-1] if samples else axes
        codes = "".join("C" if a == "c" else "Q" for a in page[:-2]) + "YX" + "C" * bool(samples)
        compression = None if self.compression == "none" else self.compression
        args: dict[str, Any] = (
            {"compressionargs": {"level": self.level}}
            if compression and self.level is not None
            else {}
        )
        if samples > 1:
            args["planarconfig"] = "contig"
        # the description written here keeps a length-1 axis tifffile would take for samples
        meta = {
            "shape": list(plane.shape),
            "axes": codes,
            **self.slice_metadata(index, "".join(axes)),
        }
        tifffile.imwrite(
            path,
            plane[..., 0] if samples == 1 else plane,
            photometric="minisblack",
            compression=compression,
            description=json.dumps(meta),
            metadata=None,
            **args,
        )


@register
class TiffSequenceWriter(SequenceWriter):
    declaration = TIFF_SEQUENCE
    target_class = TiffSequenceTarget

    def stored_axes(self, spec: OutputSpec) -> tuple[str, ...]:
        """The exported order, except a channel axis between a slice's plane axes, which goes
        before them (a channel axis first in a slice is a page axis, last its samples)."""
        axes = tuple(spec.axes)
        if spec.slice_axis is None or "c" not in axes:
            return axes
        plane = [a for a in axes if a != spec.slice_axis]
        if plane[0] == "c" or plane[-1] == "c":
            return axes
        rest = [a for a in axes if a != "c"]
        at = rest.index(next(a for a in plane if a != "c"))
        return (*rest[:at], "c", *rest[at:])

    def stored_reason(self, spec: OutputSpec) -> str:
        return "a slice's channels are its first axis (pages) or its last (samples)"
