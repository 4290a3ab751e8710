"""Resumable exports: one deterministic temporary output per plan, and a journal of its finished
blocks.

With ``resume=True`` (``--resume``), an export to a format whose writer is ``resumable`` (Zarr,
TIFF sequences) writes under ``.{name}.lazyexport-r{token}.tmp`` instead of a random name, where
``token`` hashes everything that decides the bytes written: the output paths, the format, the
settings, the source's identity (its path, shape, dtype, chunking, and the size, modification
time and inode of each of its files - every chunk file of a Zarr array or N5 dataset - listed
when the token is made: :func:`source_identity`), the resolved renormalization range, and the
output's shape, dtype and chunks. A changed plan or rewritten source data gets another token, so
stale data is never reused; a source whose files cannot be listed is refused.

Beside the temporary output, ``.{name}.lazyexport-r{token}.blocks`` is the journal
(:class:`Journal`, one class for every backend: a log of the storage layer): a header (a hash of
the block grid)
and then one line per finished block index (``i-j-k``), appended and fsynced after the block
was written; in an object store, where nothing can be appended, the journal is kept in the
run's held prefix (``blocks.header``, and one empty object ``blocks/i-j-k`` per finished block).
A resumed run skips the blocks listed; an interrupted line (a kill in the middle of an append)
is dropped. A journal whose header differs (another ``memory_limit``, or a journal of an older
lazyexport) is started afresh: every block is written again over the kept temporary output.

While a run works on a token, ``.{name}.lazyexport-r{token}.owner`` names its process: a second
run of the same plan is refused while the first lives. An interrupted commit (a kill during the
renames) left a commit record: the next ``--resume`` run finishes those renames instead of
writing anything again (see :mod:`lazyexport.storage`). What interrupted runs of other plans
left at the same outputs is removed like any orphan.

The journal is fsynced; the blocks' own files are not, so a power cut (unlike a kill) may lose
blocks the journal lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dask.base import tokenize

from .errors import ResumeError
from .formats.base import Target
from .sources.base import file_identity
from .sources.facts import source_facts
from .storage import as_path, temp_path, with_kind
from .storage.capabilities import can_rename
from .storage.held import OWNER
from .storage.paths import exists as stored
from .storage.paths import identity_text
from .storage.resolve import backend_at
from .storage.resolve import journal_path as located_journal

if TYPE_CHECKING:
    from .plan import ExportPlan

Block = tuple[int, ...]


def plan_token(plan: ExportPlan) -> str:
    """A short hash of everything that decides what an export of ``plan`` writes."""
    identity = {
        "format": plan.writer.name,
        "paths": [identity_text(p) for p in plan.paths],
        "internal": plan.internal,
        "settings": plan.settings.to_dict(),
        "source": plan.source.data.name,
        "source_files": source_identity(plan),
        "renormalize": plan.renormalize,
        "axes": plan.axes,
        "shape": plan.shape,
        "dtype": str(plan.dtype),
        "chunks": plan.chunks,
        "shards": plan.shards,
    }
    if plan.extra_steps:  # steps added to build_plan (a flip keeps the shape, not the values)
        identity["steps"] = [step_identity(step) for step in plan.extra_steps]
    text = json.dumps(identity, sort_keys=True, default=str)
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:16]


def step_identity(step: object) -> str:
    """The same text in every process for equal steps: the step's class by its import name and
    its fields (``__dask_tokenize__`` where the step defines one). A class defined in a script
    would otherwise be hashed by value, differently in each process, and a resume in a new
    process would never continue."""
    kind = f"{type(step).__module__}.{type(step).__qualname__}"
    custom = getattr(step, "__dask_tokenize__", None)
    fields = custom() if callable(custom) else getattr(step, "__dict__", repr(step))
    return tokenize(kind, fields)


class Journal:
    """The finished blocks of one resumable export, kept as a log of the storage layer
    (:meth:`lazyexport.storage.Backend.start_log`) at ``path``: a header naming the block grid,
    then one record per finished block (``i-j-k``), added after the block was written. The
    backend is the one of ``path``'s place (:func:`lazyexport.storage.resolve.backend_at`):
    beside a local output one append-only file, in an object store one empty object per block.

    Picklable (a path and a backend: an object store's client carries the storage options in
    use when the journal was made), so :meth:`record` may run on any worker thread or process;
    its repr names the path only, never an option."""

    def __init__(self, path: Path, blocks: tuple[tuple[int, ...], ...]):
        self.path = as_path(path)
        self.backend, self.key = backend_at(self.path)
        grid = json.dumps([list(b) for b in blocks])
        self.header = f"lazyexport-journal-2 {hashlib.sha256(grid.encode()).hexdigest()}"

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def load(self) -> set[Block]:
        """The blocks finished by earlier runs; the journal is rewritten to hold exactly them
        (under another header - another block grid - it starts afresh)."""
        header, records = self.backend.read_log(self.key)
        done: set[Block] = set()
        if header == self.header:
            for record in records:
                try:
                    done.add(tuple(int(i) for i in record.split("-")))
                except ValueError:
                    continue
        self.backend.start_log(self.key, self.header, map(_record, sorted(done)))
        return done

    def record(self, block: Block) -> None:
        """Note ``block`` as finished (after it was written), durably."""
        self.backend.add_to_log(self.key, _record(block))

    def files(self) -> list[Path]:
        """The local files the journal is kept in (the commit removes them with the
        temporaries); none in an object store (it goes with the held metadata)."""
        found = self.backend.file_path(self.key)
        return [] if found is None else [found]

    def remove(self) -> None:
        self.backend.delete_log(self.key)


def _record(block: Block) -> str:
    return "-".join(str(int(i)) for i in block)


def RemoteJournal(held: Path, blocks: tuple[tuple[int, ...], ...]) -> Journal:  # noqa: N802
    """The :class:`Journal` of the run whose held prefix in an object store is ``held`` (the
    name and call of the object-store journal before there was one class)."""
    return Journal(held / "blocks", blocks)


def journal_path(plan: ExportPlan, token: str) -> Path:
    """Where the journal of ``token``'s run of ``plan`` is kept (see
    :func:`lazyexport.storage.resolve.journal_path`)."""
    return located_journal(plan.output, token)


def owner_paths(plan: ExportPlan, token: str) -> list[Path]:
    """The owner records of ``token``'s run (:mod:`lazyexport.storage.owners`): an owner file in
    every directory its temporaries are in; where outputs are written in place (an object
    store), the owner key of the run's held prefix."""
    if not can_rename(plan.output):
        return [temp_path(plan.output, token) / OWNER]
    firsts: dict[Path, Path] = {}
    for path in plan.paths:
        firsts.setdefault(path.parent, path)
    return [temp_path(p, token, "owner") for p in firsts.values()]


def commit_record(plan: ExportPlan, token: str) -> Path | None:
    """The record of an interrupted commit of ``token``'s run, if there is one (beside the
    first temporary: see :func:`lazyexport.storage.commit_renames`; only commits that rename
    keep one)."""
    first = plan.paths[0]
    if not can_rename(first):
        return None
    found = [with_kind(temp_path(p, token), "commit") for p in (first, first.resolve())]
    return next((p for p in found if p.exists()), None)


def _temps(plan: ExportPlan, token: str) -> list[Path]:
    return [temp_path(p, token) for p in plan.paths]


def source_identity(plan: ExportPlan) -> str | None:
    """The identity of a file source's data: size, modification time and inode of each of its
    files (for a Zarr array or an N5 dataset: every chunk file), listed now, so pixels rewritten
    since an interrupted run make another plan. None for data in memory (its dask name says it).
    Raises ResumeError where the files cannot be listed: nobody can tell whether they changed."""
    paths = source_facts(plan.source).identity_paths
    if paths is None:
        return None
    identity = file_identity(*paths)
    if identity is None:
        raise ResumeError(
            f"cannot tell whether the source changed since an interrupted export: the files of "
            f"{plan.source.attrs.get('source')} cannot be listed; export without resume"
        )
    return identity


def open_resumable(plan: ExportPlan, token: str) -> tuple[Target, Journal, set[Block]]:
    """Open ``plan``'s writer on its deterministic temporary output, keeping what an interrupted
    run wrote there; return the target, the journal and the blocks already finished."""
    journal = Journal(journal_path(plan, token), plan.blocks)
    if not any(stored(p) for p in _temps(plan, token)):  # a journal of nothing kept
        journal.remove()
    target = plan.writer.open(plan.spec, token)
    return target, journal, journal.load()
