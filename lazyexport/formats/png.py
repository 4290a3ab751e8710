"""PNG slice sequences: one PNG per slice, written with Pillow.

PNG holds 8-bit gray, gray+alpha, RGB and RGBA, and 16-bit gray (Pillow writes no 16-bit
color), so anything else is refused at planning time, naming the dtype and channel count.
The exported axes go into a ``lazyexport`` text chunk, as JSON, so a glob of the slices reads
back in the exported order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..declarations import PNG_SEQUENCE
from ..errors import FormatError
from .registry import register
from .sequence import SequenceTarget, SequenceWriter
from .spec import OutputSpec

CHANNELS = {"uint8": (1, 2, 3, 4), "uint16": (1,)}
TEXT_KEY = "lazyexport"


class PngSequenceTarget(SequenceTarget):
    def write_plane(self, path: Path, plane: np.ndarray, index: int) -> None:
        from PIL import Image, PngImagePlugin

        axes = self.plane_axes()  # channel first, then the plane (and any length-1 axes)
        stored = [a for a in axes if a != "c"][-2:]
        if "c" in axes and plane.shape[axes.index("c")] > 1:
            stored.append("c")
        order = [a for a in axes if a in stored]
        image = plane.reshape([plane.shape[axes.index(a)] for a in order])  # drops length-1 axes
        image = image.transpose([order.index(a) for a in stored])  # channel last, as PNG stores it
        info = PngImagePlugin.PngInfo()
        info.add_text(TEXT_KEY, json.dumps(self.slice_metadata(index, "".join(stored))))
        level = 6 if self.level is None else self.level
        Image.fromarray(np.ascontiguousarray(image)).save(
            path, format="PNG", pnginfo=info, compress_level=level
        )


@register
class PngSequenceWriter(SequenceWriter):
    declaration = PNG_SEQUENCE
    target_class = PngSequenceTarget

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        channels = spec.sizes.get("c", 1)
        if channels not in CHANNELS.get(spec.dtype.name, ()):
            allowed = "; ".join(
                f"{d} with {', '.join(map(str, n))} channel(s)" for d, n in CHANNELS.items()
            )
            raise FormatError(
                f"PNG cannot hold {spec.dtype} data with {channels} channel(s): it holds "
                f"{allowed}; convert the data type or cut the channels with the ROI"
            )
        return notes
