"""Zarr v3 (default) or v2 stores: one array, ``dimension_names`` (v3) or ``_ARRAY_DIMENSIONS`` (v2).

Every block handed to the target covers whole chunks, so blocks are written in parallel with
no lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from ..chunkio import ChunkFiles
from . import register
from .base import Target, Writer, remove, temp_path

_DEFAULT_LEVELS = {"zstd": 3, "blosc": 5, "gzip": 1}


def compressors(name: str, level: int | None, zarr_format: int):
    if name == "none":
        return None
    level = _DEFAULT_LEVELS[name] if level is None else level
    if zarr_format == 2:
        return {
            "zstd": lambda: numcodecs.Zstd(level=level),
            "blosc": lambda: numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE),
            "gzip": lambda: numcodecs.GZip(level=level),
        }[name]()
    return {
        "zstd": lambda: [ZstdCodec(level=level)],
        "blosc": lambda: [BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")],
        "gzip": lambda: [GzipCodec(level=level)],
    }[name]()


@register
class ZarrWriter(Writer):
    name = "zarr"
    extensions = (".zarr",)
    compressions = ("zstd", "blosc", "gzip", "none")
    chunk_bytes = 4 * 2**20
    description = "a Zarr v3 (or v2) array with dimension names"
    resumable = True
    options = ("zarr_format", "shards")

    def open(self, plan, resume_token: str | None = None) -> Target:
        final = plan.output
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(final, resume_token)
        target = ZarrTarget({final: temp}, plan.internal.strip("/"))
        if resume_token and temp.exists():
            try:
                target.array()      # an interrupted run's store: keep it
                return target
            except Exception:       # it broke while being created: start again
                remove(temp)
        fmt = plan.settings.zarr_format
        attrs = {"_ARRAY_DIMENSIONS": list(plan.axes)} if fmt == 2 else {}
        if plan.value_range is not None:
            attrs["drange"] = list(plan.value_range)
        try:
            zarr.create_array(
                store=str(temp),
                name=plan.internal.strip("/") or None,
                shape=plan.shape,
                chunks=plan.chunks,
                shards=plan.shards,
                dtype=plan.dtype,
                compressors=compressors(self.compression(plan), plan.settings.compression_level, fmt),
                fill_value=0,
                zarr_format=fmt,
                dimension_names=list(plan.axes) if fmt == 3 else None,
                attributes=attrs,
            )
        except BaseException:
            remove(temp)
            raise
        return target


class ZarrTarget(Target):
    def __init__(self, temps: dict[Path, Path], internal: str):
        super().__init__(temps)
        (self.temp,) = temps.values()
        self.internal = internal
        self._array = None
        self._files = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = state["_files"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def array(self):
        if self._array is None:
            with self._lock:
                if self._array is None:
                    self._array = zarr.open_array(store=str(self.temp), path=self.internal or None, mode="r+")
        return self._array

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        if self._files is None:
            self._files = ChunkFiles.of(self.array()) or False
        if self._files:
            self._files.write(block, location)      # the chunk files, encoded as zarr would
        else:
            self.array()[location] = block
        return block.nbytes
