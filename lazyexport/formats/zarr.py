"""Zarr v3 (default) or v2 stores: one array, ``dimension_names`` (v3) or ``_ARRAY_DIMENSIONS``
(v2).

Compressions (:func:`compressors`, one table for zarr and ome-zarr): zstd, blosc (zstd inside
blosc, byte shuffle), blosc-bitshuffle (the same with bit shuffle: smaller for smooth integer
images), gzip, none; the same codec on Zarr v2 (numcodecs) and v3 (zarr.codecs).

Every block handed to the target covers whole chunks, so blocks are written in parallel with
no lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from .. import remote
from ..chunkio import ChunkFiles, layout_refusal
from ..declarations import ZARR
from ..errors import FormatError
from ..storage import paths, remove
from ..storage.capabilities import can_rename
from . import container
from .base import Target
from .registry import register
from .spec import OutputSpec, ZarrFormat

_DEFAULT_LEVELS = {"zstd": 3, "blosc": 5, "blosc-bitshuffle": 5, "gzip": 1}
# blosc's shuffle per compression name: v3's name, v2's (numcodecs) constant
_SHUFFLE: dict[str, tuple[Literal["shuffle", "bitshuffle"], int]] = {
    "blosc": ("shuffle", numcodecs.Blosc.SHUFFLE),
    "blosc-bitshuffle": ("bitshuffle", numcodecs.Blosc.BITSHUFFLE),
}


def compressors(name: str, level: int | None, zarr_format: ZarrFormat):
    """The codec(s) of the compression ``name`` (one the format declares:
    :data:`~lazyexport.declarations.ZARR_COMPRESSIONS`) at ``level`` (None: its default) for
    ``create_array``'s ``compressors`` on Zarr ``zarr_format``."""
    if name == "none":
        return None
    level = _DEFAULT_LEVELS[name] if level is None else level
    if name in _SHUFFLE:
        v3, v2 = _SHUFFLE[name]
        if zarr_format == 2:
            return numcodecs.Blosc(cname="zstd", clevel=level, shuffle=v2)
        return [BloscCodec(cname="zstd", clevel=level, shuffle=v3)]
    if zarr_format == 2:
        return {
            "zstd": lambda: numcodecs.Zstd(level=level),
            "gzip": lambda: numcodecs.GZip(level=level),
        }[name]()
    return {
        "zstd": lambda: [ZstdCodec(level=level)],
        "gzip": lambda: [GzipCodec(level=level)],
    }[name]()


@register
class ZarrWriter(container.ContainerWriter):
    declaration = ZARR
    chunk_bytes = 4 * 2**20
    # without a shards setting on Zarr v3: shards of whole chunks up to this many bytes
    # (lazyexport.plan_chunks.default_shards); None: no shards
    shard_bytes: int | None = None
    volume_chunks = False  # planner's chunks near-cubic for volumes (plan_chunks.planner_chunks)

    layout = container.ZARR

    def encodes_in_place(self, spec: OutputSpec) -> bool:
        # a local output's chunk files are written by ChunkFiles (ZarrTarget.direct), which
        # encodes a contiguous chunk without a copy; a shard is assembled from its inner chunks
        return spec.shards is None and can_rename(spec.output)

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        notes = super().check(spec)
        if container.in_existing(spec.output, spec.internal):
            found = container.zarr_format_of(spec.output)
            if found is not None and found != spec.zarr_format:
                raise FormatError(
                    f"{spec.output} is a Zarr v{found} store; write into it with "
                    f"zarr_format={found} (--zarr-format {found})"
                )
        return notes

    def open(self, spec: OutputSpec, token: str) -> Target:
        spot = container.place(spec.output, spec.internal, token)
        fmt = spec.zarr_format
        target = ZarrTarget({spot.final: spot.temp}, token, spot.internal, spot.store, fmt)
        if container.exists(spot.temp):
            try:
                target.array()  # an interrupted --resume run's array: keep it
                return target
            except Exception as exc:  # it broke while being created (at a URL: not held yet)
                if target.remote and remote.is_storage_error(exc):
                    raise  # the store did not answer: keep what an interrupted run wrote
                if not target.remote:
                    remove(spot.temp)
        attrs: dict[str, Any] = {"_ARRAY_DIMENSIONS": list(spec.axes)} if fmt == 2 else {}
        if spec.value_range is not None:
            attrs["drange"] = list(spec.value_range)
        try:
            zarr.create_array(
                store=target.zarr_store(),
                name=spot.internal or None,
                shape=spec.shape,
                chunks=spec.chunks,
                shards=spec.shards,
                dtype=spec.dtype,
                compressors=compressors(spec.compression, spec.compression_level, fmt),
                fill_value=0,
                zarr_format=fmt,
                dimension_names=list(spec.axes) if fmt == 3 else None,
                attributes=attrs,
            )
            target.direct()  # the layout the plan counts on, checked before any block
        except BaseException:
            target.abort()
            raise
        return target


def make_parent_groups(store: Path, node: Path, zarr_format: ZarrFormat) -> None:
    """Create the root and the groups leading to ``node`` in ``store`` where missing."""
    root = zarr.open_group(store=paths.zarr_location(store), mode="a", zarr_format=zarr_format)
    parent = node.parent.relative_to(store).as_posix()
    if parent != ".":
        root.require_group(parent)


class ZarrTarget(Target):
    """``internal``: the array's path inside the temporary store; ``store``: the existing store
    the temporary node is moved into on commit (None: the temporary is the whole store)."""

    def __init__(
        self,
        temps: dict[Path, Path],
        token: str,
        internal: str,
        store: Path | None = None,
        zarr_format: ZarrFormat = 3,
    ):
        super().__init__(temps, token)
        (self.temp,) = temps.values()
        self.internal = internal
        self.into, self.zarr_format = store, zarr_format
        self._array: zarr.Array | None = None
        self._files: ChunkFiles | Literal[False] | None = None
        self.storage_options = remote.current_options()  # for the workers that write blocks
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = state["_files"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def array(self) -> zarr.Array:
        if self._array is None:
            with self._lock:
                if self._array is None:
                    self._array = zarr.open_array(
                        store=self.zarr_store(), path=self.internal, mode="r+"
                    )
        return self._array

    def direct(self) -> ChunkFiles | Literal[False]:
        """The chunk files blocks are written into (False: through zarr, at a URL).

        A local output is one lazyexport created, in a layout :class:`ChunkFiles` takes, and the
        plan counts on it: each block is whole chunks (or a whole shard, assembled and written
        once). A layout it does not take is an error here, never a quiet switch to zarr's own
        pipeline, which the plan's memory model does not describe."""
        if self.remote:
            return False
        arr = self.array()
        files = ChunkFiles.of(arr)
        if files is None:
            raise FormatError(
                f"the Zarr array lazyexport created at {next(iter(self.temps))} is not in a "
                f"layout its chunk writer takes ({layout_refusal(arr)}, zarr {zarr.__version__}); "
                f"this is a bug in lazyexport, please report it"
            )
        return files

    @property
    def remote(self) -> bool:
        """Whether the output goes to an object store: chunks are written in their final place,
        the metadata held beside it (``temp``) until the commit (see :mod:`lazyexport.remote`)."""
        return not can_rename(self.temp)

    def zarr_store(self) -> Any:
        """What zarr opens: the temporary store's directory, or the held-metadata object store."""
        if self.remote:
            return remote.held_store(next(iter(self.temps)), self.temp, values=self.storage_options)
        return str(self.temp)

    @property
    def node(self) -> str:
        """The output node's path inside a temporary that is a whole store."""
        return self.internal

    def prepare_commit(self) -> None:
        if not self.remote:
            container.settle(self, self.node)
        if self.into is not None:
            make_parent_groups(self.into, next(iter(self.temps)), self.zarr_format)

    def commit(self) -> list[Path]:
        if self.remote:  # the chunks are in place: the metadata makes the output visible
            self.finish()
            self.prepare_commit()
            ((final, held),) = self.temps.items()
            remote.publish(final, held)
            if self.into is not None and container.consolidated(self.into):
                where = remote.zarr_store(self.into, read_only=False, values=self.storage_options)
                zarr.consolidate_metadata(where)  # its listing must name the new node
            return [final]
        paths = super().commit()
        if self.into is not None and container.consolidated(self.into):
            zarr.consolidate_metadata(str(self.into))  # its listing must name the new node
        return paths

    def abort(self) -> None:
        if not self.remote:
            return super().abort()
        ((final, held),) = self.temps.items()
        remote.delete_prefix(final)  # chunks written (the output did not exist, or was removed)
        remote.delete_prefix(held)

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        if self._files is None:
            self._files = self.direct()
        if self._files:
            self._files.write(block, location)  # the chunk files, encoded as zarr would
        else:
            self.array()[location] = block
        return block.nbytes
