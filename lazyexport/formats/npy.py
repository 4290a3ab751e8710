"""NumPy ``.npy``: one file, created full-size as a memory map under a temporary name.

``np.lib.format.open_memmap`` writes the header and sizes the (sparse) file; the blocks then
go into it by positioned writes at their byte offsets
(:func:`~lazyexport.formats.base.write_region`), in parallel and in any order, rather than through
the mapping itself, whose dirty pages would count as the process's memory. The file is renamed to
its final name only when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..declarations import NPY
from ..storage import remove, temp_path
from .base import Target, Writer, write_region
from .registry import register
from .spec import OutputSpec


@register
class NpyWriter(Writer):
    declaration = NPY

    def open(self, spec: OutputSpec, token: str) -> Target:
        final = spec.output
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(final, token)
        try:
            mm = np.lib.format.open_memmap(temp, mode="w+", dtype=spec.dtype, shape=spec.shape)
            offset = mm.offset
            del mm
        except BaseException:
            remove(temp)
            raise
        return NpyTarget({final: temp}, token, offset, spec.shape)


class NpyTarget(Target):
    def __init__(self, temps: dict[Path, Path], token: str, offset: int, shape: tuple[int, ...]):
        super().__init__(temps, token)
        (self.temp,) = temps.values()
        self.offset, self.shape = offset, tuple(shape)

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        fd = os.open(self.temp, os.O_WRONLY)
        try:
            return write_region(fd, self.offset, self.shape, block, location)
        finally:
            os.close(fd)
