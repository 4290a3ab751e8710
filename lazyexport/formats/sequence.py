"""Slice sequences: one 2-D (or 2-D + channel) image file per slice along the slicing axis.

The plan picks the slicing axis (the outermost non-channel axis) and one file name per slice
from ``{slice_index}``. Blocks are whole slices, so each file is written once, by one task.
Each TIFF carries its axes in tifffile's JSON description, so it can be read back labeled.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import tifffile

from . import register
from .base import Target, Writer, temp_path


class SequenceWriter(Writer):
    is_sequence = True
    resumable = True

    def chunks(self, plan) -> tuple[int, ...]:
        return tuple(1 if a == plan.slice_axis else s for a, s in zip(plan.axes, plan.shape))

    def open(self, plan, resume_token: str | None = None) -> Target:
        # one token for all slices, so they are recognisably one export
        token = resume_token or uuid.uuid4().hex[:10]
        temps = {}
        for path in plan.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps[path] = temp_path(path, token)
        return self.target_class(temps, plan.axes, plan.slice_axis, self.compression(plan),
                                 plan.settings.compression_level, plan.slice_start)

    target_class: type[SequenceTarget]


class SequenceTarget(Target):
    """Writes each slice of a block to its own file; subclasses implement :meth:`write_plane`."""

    def __init__(self, temps, axes, slice_axis, compression, level, slice_start):
        super().__init__(temps)
        self.files = list(temps.values())        # temporary file of slice i (output index)
        self.axes = tuple(axes)
        self.slice_pos = self.axes.index(slice_axis)
        self.compression = compression
        self.level = level
        self.slice_start = slice_start

    def plane_axes(self) -> tuple[str, ...]:
        """Axes of one written plane: channel first (if any), then the plane's spatial axes."""
        rest = [a for a in self.axes if a != self.axes[self.slice_pos]]
        return tuple(a for a in rest if a == "c") + tuple(a for a in rest if a != "c")

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        rest = [a for a in self.axes if a != self.axes[self.slice_pos]]
        order = [rest.index(a) for a in self.plane_axes()]
        first = location[self.slice_pos].start
        for k in range(block.shape[self.slice_pos]):
            plane = np.take(block, k, axis=self.slice_pos).transpose(order)
            self.write_plane(self.files[first + k], np.ascontiguousarray(plane), first + k)
        return block.nbytes

    def write_plane(self, path: Path, plane: np.ndarray, index: int) -> None:
        raise NotImplementedError

    def slice_metadata(self, index: int, plane_axes: str) -> dict:
        """What each slice file records so that it reads back labeled: the exported axes, the
        axes of the stored plane, the slicing axis and this slice's source index."""
        return {"lazyexport_axes": "".join(self.axes), "lazyexport_plane": plane_axes,
                "lazyexport_slice_axis": self.axes[self.slice_pos],
                "lazyexport_slice_index": self.slice_start + index}


class TiffSequenceTarget(SequenceTarget):
    def write_plane(self, path: Path, plane: np.ndarray, index: int) -> None:
        # channel and any length-1 axes stay as leading page axes; tifffile's code for the
        # two spatial axes is always YX, our own letters go in the description
        axes = self.plane_axes()
        codes = "".join("C" if a == "c" else "Q" for a in axes[:-2]) + "YX"
        compression = None if self.compression == "none" else self.compression
        args = {"compressionargs": {"level": self.level}} if compression and self.level is not None else {}
        tifffile.imwrite(
            path, plane, photometric="minisblack", compression=compression,
            metadata={"axes": codes, **self.slice_metadata(index, "".join(axes))},
            **args,
        )


@register
class TiffSequenceWriter(SequenceWriter):
    name = "tiff-sequence"
    extensions = (".tif", ".tiff")
    compressions = ("none", "zlib", "lzma")
    description = "one TIFF per slice along the outermost non-channel axis"
    target_class = TiffSequenceTarget
