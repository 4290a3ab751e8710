"""N5 containers, for Fiji's N5 tools and BigDataViewer: ``out.n5`` (dataset at the root) or
``out.n5/path/to/dataset``.

N5 lists dimensions in the reverse (Fortran) order of ours: ``dimensions``, ``blockSize`` and
the ``axes`` attribute name the fastest-varying axis (x) first. Each chunk is one file, encoded
by :mod:`lazyexport.n5codec` (shared with :mod:`lazyexport.sources.n5`, which reads N5 back),
gzip-compressed by default. Blocks cover whole chunks, so chunk files are written (and
compressed) in parallel with no lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..declarations import N5
from ..errors import FormatError
from ..n5codec import ATTRIBUTES, DTYPES, chunk_file, encode_block, read_attributes
from ..storage import remove
from ..units import SPATIAL_AXES, unit_symbol
from . import container
from .base import Target
from .registry import register
from .spec import OutputSpec

N5_VERSION = "4.0.0"


def _write_attributes(node: Path, attrs: dict) -> None:
    node.mkdir(parents=True, exist_ok=True)
    merged = {**read_attributes(node), **attrs}
    (node / ATTRIBUTES).write_text(json.dumps(merged, indent=1))


@register
class N5Writer(container.ContainerWriter):
    declaration = N5
    chunk_bytes = 2**20
    layout = container.N5

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        if spec.dtype.name not in DTYPES:
            raise FormatError(
                f"N5 cannot hold {spec.dtype} data; convert to one of {', '.join(DTYPES)}"
            )
        return notes

    def open(self, spec: OutputSpec, token: str) -> Target:
        spec.output.parent.mkdir(parents=True, exist_ok=True)
        spot = container.place(spec.output, spec.internal, token)
        temp, internal = spot.temp, spot.internal
        compression = spec.compression
        level = spec.compression_level if spec.compression_level is not None else 1
        attrs: dict[str, Any] = {
            "dimensions": list(reversed(spec.shape)),
            "blockSize": list(reversed(spec.chunks)),
            "dataType": spec.dtype.name,
            "compression": {"type": "gzip", "level": level, "useZlib": False}
            if compression == "gzip"
            else {"type": "raw"},
            "axes": list(reversed(spec.axes)),
        }
        pixel_size, unit = spec.pixel_size, spec.unit
        if pixel_size:  # both conventions: n5-viewer's pixelResolution, and resolution + units
            sizes = [pixel_size.get(a, 1.0) for a in reversed(spec.axes)]
            # pixelResolution has one unit for all axes: only when it and every spatial size are
            # known
            if unit and all(a in pixel_size for a in spec.axes if a in SPATIAL_AXES):
                attrs["pixelResolution"] = {"unit": unit_symbol(unit), "dimensions": sizes}
            attrs["resolution"] = sizes
            if unit:  # "" for the axes whose size is not known
                attrs["units"] = [
                    unit_symbol(unit) if a in pixel_size else "" for a in reversed(spec.axes)
                ]
        if spec.value_range is not None:
            attrs["drange"] = list(spec.value_range)
        store = spot.store
        try:
            if store is None:
                _write_attributes(temp, {"n5": N5_VERSION})
            _write_attributes(temp / internal if internal else temp, attrs)
        except BaseException:
            remove(temp)
            raise
        return N5Target({spot.final: temp}, token, internal, spec.chunks, compression, level, store)


class N5Target(Target):
    """``store``: the existing container the temporary dataset is moved into on commit (None:
    the temporary is the whole container)."""

    def __init__(
        self,
        temps: dict[Path, Path],
        token: str,
        internal: str,
        chunks: tuple[int, ...],
        compression: str,
        level: int,
        store: Path | None = None,
    ):
        super().__init__(temps, token)
        (temp,) = temps.values()
        self.into, self.node = store, internal
        self.dataset = temp / internal if internal else temp
        self.chunk_shape = tuple(chunks)
        self.compression, self.level = compression, level

    def prepare_commit(self) -> None:
        container.settle(self, self.node)
        if self.into is not None:  # the root says "n5"; groups on the way are directories
            if "n5" not in read_attributes(self.into):
                _write_attributes(self.into, {"n5": N5_VERSION})
            next(iter(self.temps)).parent.mkdir(parents=True, exist_ok=True)

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        starts = [s.start for s in location]
        ranges = [range(0, n, c) for n, c in zip(block.shape, self.chunk_shape)]
        for corner in np.ndindex(*(len(r) for r in ranges)):
            inner = tuple(
                slice(r[i], r[i] + c) for r, i, c in zip(ranges, corner, self.chunk_shape)
            )
            grid = tuple((s + sl.start) // c for s, sl, c in zip(starts, inner, self.chunk_shape))
            path = chunk_file(self.dataset, grid)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_block(block[inner], self.compression, self.level))
        return block.nbytes
