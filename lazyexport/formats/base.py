"""The one extension point: a Writer (one per output format) and the Target it opens.

The planner decides the output (its files, shape, chunks, ...) and describes it to the writer
in an :class:`~lazyexport.formats.spec.OutputSpec`; the runner owns scheduling, progress,
memory budgets and atomicity. A writer only refuses at planning time what its format cannot
hold, creates its files under temporary names, writes the blocks it is handed, and renames on
commit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..declarations import FORMAT_OPTIONS as FORMAT_OPTIONS  # (still named here)
from ..declarations import Capabilities, Format, Option
from ..errors import OutputExistsError
from ..storage import commit_renames, paths, remove
from .layout import ArrayLayout
from .spec import OutputSpec

#: What a format's declaration (:class:`~lazyexport.declarations.Format`) gives its writer.
DECLARED = ("name", "extensions", "description", "capabilities", "options")


class Target:
    """An output being written. Picklable: ``write`` may run on other threads or processes.

    Subclasses list every temporary path they create in ``self.temps`` (final path -> temporary
    path) so that :meth:`abort` and :meth:`commit` treat them alike; ``token`` is the export
    run's (see :mod:`lazyexport.storage`).
    """

    def __init__(self, temps: dict[Path, Path], token: str):
        self.temps = temps
        self.token = token
        self.scratch: list[Path] = []  # working files, removed after the commit (and on abort)
        # earlier outputs that this one replaces without a rename of its own (a longer
        # sequence's tail), removed by the commit (recorded with it), kept on abort
        self.retired: list[Path] = []

    def write(self, block: np.ndarray, location: tuple[slice, ...]) -> int:
        """Write ``block`` at ``location`` (output coordinates); return the bytes written."""
        raise NotImplementedError

    def encode(self, block: np.ndarray, location: tuple[slice, ...]) -> Any:
        """Single-writer formats (``Capabilities.single_writer``): process-based schedulers run
        this (the CPU-heavy part) on the workers and hand what it returns to :meth:`store` in the
        process that runs the export; ``write`` is ``store(encode(...))``. Prepare ``block`` for
        :meth:`store` without touching the output."""
        raise NotImplementedError

    def store(self, encoded: Any) -> int:
        """Single-writer targets: write what :meth:`encode` returned; return the (uncompressed)
        bytes."""
        raise NotImplementedError

    # set by the runner before the commit: :meth:`finish` calls it with the pixels each piece
    # of its finishing work read (see :meth:`finishing_work`)
    report: Callable[[int], Any] | None = None

    def finishing_work(self) -> int:
        """Pixels :meth:`finish` reads to make more than the blocks written (an OME-Zarr
        pyramid's coarser levels): progress counts them as work before the commit (0 by
        default)."""
        return 0

    def finish(self) -> None:
        """Complete metadata and close files before the rename (nothing by default)."""

    def commit(self) -> list[Path]:
        """Finish, then move every temporary output to its final name (one recorded step: see
        :func:`lazyexport.storage.commit_renames`); return the final paths."""
        self.finish()
        self.prepare_commit()
        renames = [(temp, final) for final, temp in self.temps.items()]
        commit_renames(renames, then_remove=[*self.retired, *self.scratch])
        return list(self.temps)

    def prepare_commit(self) -> None:
        """Decide where the outputs go now that they are complete, and make the final names'
        parents ready for the renames (nothing by default)."""

    def abort(self) -> None:
        """Remove everything this target created; existing outputs stay as they were."""
        self.close()
        for temp in [*self.temps.values(), *self.scratch]:
            remove(temp)

    def close(self) -> None:
        """Release open handles (nothing by default)."""


class Writer:
    """Base of every output format. Register subclasses with
    :func:`lazyexport.formats.registry.register`.

    A writer takes what it declares from its format's declaration: a class that names one
    (``declaration = HDF5``, an entry of :mod:`lazyexport.declarations`) gets that entry's own
    ``name``, ``extensions``, ``description``, ``capabilities`` and ``options``. A class that sets
    those attributes itself instead (a plugin's format, or a variant of a writer) gets a
    declaration made from them, so every registered writer has exactly one; a class that does
    both is refused (TypeError)."""

    declaration: ClassVar[Format]
    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()  # the first is appended to templates without one
    capabilities: ClassVar[Capabilities] = Capabilities()
    chunk_bytes: ClassVar[int] = 4 * 2**20  # the planner sizes output chunks to about this
    description: ClassVar[str] = ""
    # the options only this format (and formats that share them) reads: the settings, command
    # line and project files accept them, the writer reads them in ``spec.options``
    options: ClassVar[tuple[Option, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        again = [key for key in DECLARED if key in own]
        if "declaration" in own and again:
            raise TypeError(
                f"{cls.__name__} sets {', '.join(again)}, which its declaration gives: "
                "change it there"
            )
        if "declaration" not in own:
            if not again or not hasattr(cls, "name"):
                return
            cls.declaration = Format(
                cls.name, tuple(cls.extensions), cls.description, cls.capabilities, cls.options
            )
        declaration = cls.declaration
        for key in DECLARED:
            setattr(cls, key, getattr(declaration, key))

    def axis_order(
        self, axes: tuple[str, ...], sizes: dict[str, int], explicit: str | None
    ) -> str | None:
        """The axis order the format must store, if it has one (None: any order).

        ``axes`` is the result's order, ``explicit`` the order the user asked for (or None).
        Raise :class:`~lazyexport.errors.FormatError` where the user's order cannot be stored.
        """
        return None

    def stored_axes(self, spec: OutputSpec) -> tuple[str, ...]:
        """The axis order the output stores for ``spec`` (default: ``spec.axes``). Where it
        differs, the planner reorders the result to it, with a note giving
        :meth:`stored_reason`, so that the result's axes are the file's."""
        return tuple(spec.axes)

    def stored_reason(self, spec: OutputSpec) -> str:
        """Why :meth:`stored_axes` is not ``spec.axes``, for the plan's note."""
        return "the format's own order"

    def compression(self, requested: str | None) -> str:
        """The codec of an export that asks for ``requested`` (None: the format's default)."""
        return requested or self.capabilities.compressions[0]

    def arrays(self, spec: OutputSpec) -> tuple[ArrayLayout, ...]:
        """The arrays the output holds where they are more than the planned one (an OME-Zarr
        pyramid's levels), for the plan and the result to list; none by default."""
        return ()

    def check(self, spec: OutputSpec) -> tuple[str, ...]:
        """Refuse, at planning time, an output this format cannot write (raise
        :class:`~lazyexport.errors.FormatError`); return notes for the plan (none by default).
        ``spec.chunks`` is not decided yet (empty). Subclasses call it: it refuses an output
        place that holds what this format does not write (:meth:`refuse_foreign`)."""
        self.refuse_foreign(spec)
        return ()

    def refuse_foreign(self, spec: OutputSpec) -> None:
        """Refuse (in one line) an output place that holds what this format does not write
        (:meth:`foreign`): an export, ``--overwrite`` too, and a delete leave it alone."""
        found = self.foreign(spec)
        if found is not None:
            path, what = found
            raise OutputExistsError(
                f"{path} is {what}, so lazyexport did not write it: it is neither replaced nor "
                "deleted; choose another output"
            )

    def foreign(self, spec: OutputSpec) -> tuple[Path, str] | None:
        """The first local place of ``spec``'s output that holds what this format does not
        write, and what it is: by default a directory with something in it where a file goes."""
        for path in spec.paths:
            if paths.occupied_directory(path):
                return path, f"a directory where the {self.name} file goes"
        return None

    def dataset(self, spec: OutputSpec) -> str:
        """The path of the exported array inside its container file ("" where the file is the
        array)."""
        return spec.dataset

    def existing(self, spec: OutputSpec) -> list[Path]:
        """The outputs of ``spec`` that exist already (and would be replaced)."""
        return [p for p in spec.paths if paths.file_exists(p)]  # at a URL: objects

    def adds_to_existing(self, spec: OutputSpec) -> bool:
        """Whether an export into an existing output file adds to it, keeping what else it
        holds (HDF5: a dataset beside others), rather than replacing it whole. An output at a
        URL that does is fetched into the staging directory first, and the file uploaded with
        the others' data kept (default: False, the file is replaced)."""
        return False

    def open(self, spec: OutputSpec, token: str) -> Target:
        """Create the output under the temporary names of the run ``token``
        (:func:`lazyexport.storage.temp_path`). Writers that are ``resumable`` keep what exists
        under those names (an interrupted ``--resume`` export of the same output)."""
        raise NotImplementedError

    def delete(self, spec: OutputSpec, dry_run: bool = False) -> list[str]:
        """Remove what an export of ``spec`` wrote (its final outputs that exist, nothing else);
        return what was (or, with ``dry_run``, would be) removed."""
        self.refuse_foreign(spec)
        found = self.existing(spec)
        if not dry_run:
            for path in found:
                paths.remove_file(path)
        return [str(p) for p in found]

    def write_buffers(
        self,
        block_bytes: int,
        unit_bytes: int,
        staged: bool = False,
        spec: OutputSpec | None = None,
    ) -> int:
        """Bytes this format holds on top of a block while it writes it, for the planner's cost
        model: by default a chunk (or shard) made contiguous and its encoded bytes. ``unit_bytes``
        is one output chunk or shard (sequences: one plane); ``staged``: a staged sequence;
        ``spec``: the output as planned so far (None: assume the most)."""
        return 2 * unit_bytes

    def encodes_in_place(self, spec: OutputSpec) -> bool:
        """Whether this format encodes an output chunk that is one contiguous run of its block
        straight from the block (the others after a copy), for the planner's cost model: it
        then prefers blocks that hold whole chunks contiguously, at as many tasks (a format
        that writes a block's rows into a file wants the opposite). False by default."""
        return False

    def block_work(self, spec: OutputSpec, block: tuple[int, ...]) -> int:
        """Bytes a block task holds on top of its block of shape ``block`` (output axes) to
        make more of the output from it once it is written (an OME-Zarr's level 1 in the same
        pass), for the planner's cost model (as :meth:`write_buffers`, not at once with
        them): 0 by default."""
        return 0

    def block_steps(self, spec: OutputSpec) -> tuple[int, ...]:
        """Per output axis, lengths whose multiples the writer wants blocks to start at, where
        it makes more of the output in the block tasks (an OME-Zarr's level 1): the planner
        tries such blocks first. () by default: any whole chunks (or shards)."""
        return ()

    def chunk_objects(self, spec: OutputSpec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The arrays the output stores one file (an object at a URL) per chunk or shard of, in
        the order they are written, as (shape, chunk or shard shape) each; an array after the
        first is built from the one before it (a pyramid level). Empty where each of the
        output's paths is one file (for the planner's cost of an export at a URL)."""
        if not self.capabilities.object_store:
            return []
        listed = self.arrays(spec)
        if listed:
            return [(a.shape, a.shards or a.chunks) for a in listed]
        return [(tuple(spec.shape), tuple(spec.shards or spec.chunks))]


def write_region(
    fd: int, offset: int, shape: tuple[int, ...], block: np.ndarray, location: tuple[slice, ...]
) -> int:
    """Write ``block`` at ``location`` into a C-ordered array of ``shape`` stored from byte
    ``offset`` of the open file ``fd``; return the bytes written.

    Positioned writes (``os.pwrite``), one per contiguous run, rather than assignment through a
    memory map: dirty pages of a shared mapping count to the process's resident memory until
    the kernel writes them back, so a large output would look (and be charged) as if held in RAM.
    Safe to call from many threads at once for disjoint regions.
    """
    block = np.ascontiguousarray(block)
    ndim = block.ndim
    k = ndim  # axes k.. are covered whole, so axis k-1 and everything inside it is one run
    while k > 0 and block.shape[k - 1] == shape[k - 1]:
        k -= 1
    outer = max(k - 1, 0)
    strides = [int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(ndim)]
    starts = [s.start or 0 for s in location]
    base = sum(starts[i] * strides[i] for i in range(outer, ndim))
    runs = block.reshape(block.shape[:outer] + (-1,))
    for index in np.ndindex(*block.shape[:outer]):
        pos = base + sum((starts[i] + index[i]) * strides[i] for i in range(outer))
        view = runs[index].data.cast("B")
        at = offset + pos * block.itemsize
        while view:
            done = os.pwrite(fd, view, at)
            view, at = view[done:], at + done
    return block.nbytes


_READ_MAX = 2**30  # bytes per pread call (Linux caps one call below 2 GiB)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes from ``offset`` of the open file ``fd`` (a temporary file lazyexport
    wrote)."""
    parts = []
    while size > 0:
        part = os.pread(fd, min(size, _READ_MAX), offset)
        if not part:
            raise OSError(f"unexpected end of the temporary file at byte {offset}")
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return b"".join(parts) if len(parts) != 1 else parts[0]
