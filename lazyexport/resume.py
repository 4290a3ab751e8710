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

Beside the temporary output, ``.{name}.lazyexport-r{token}.blocks`` is the journal: a JSON
header (the block grid) and then one line per finished block index, appended and fsynced after
the block was written. A resumed run skips the blocks listed; an interrupted line (a kill in the
middle of an append) is dropped. A journal whose block grid differs (another ``memory_limit``)
is started afresh: every block is written again over the kept temporary output.

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
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dask.base import tokenize

from . import remote
from .errors import ResumeError
from .formats.base import Target
from .sources.base import file_identity
from .sources.facts import source_facts
from .storage import NOFOLLOW, as_path, remove, temp_path, with_kind, write_durably
from .storage.paths import identity_text

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
        identity["steps"] = [tokenize(step) for step in plan.extra_steps]
    text = json.dumps(identity, sort_keys=True, default=str)
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Journal:
    """The finished blocks of one resumable export. Picklable (a path and a header), so
    :meth:`record` may run on any worker thread; appends of one short line do not interleave."""

    def __init__(self, path: Path, blocks: tuple[tuple[int, ...], ...]):
        self.path = as_path(path)  # (RemoteJournal: a URL)
        self.header = json.dumps({"lazyexport-journal": 1, "blocks": [list(b) for b in blocks]})

    def load(self) -> set[Block]:
        """The blocks finished by earlier runs; the journal is rewritten to hold exactly them."""
        done: set[Block] = set()
        if self.path.exists():
            lines = self.path.read_text().split("\n")
            if lines[0] == self.header:
                for line in lines[1:-1]:  # the last part is "" or an interrupted line
                    try:
                        done.add(tuple(int(i) for i in json.loads(line)))
                    except (ValueError, TypeError):
                        continue
        write_durably(
            self.path,
            "".join(
                f"{line}\n" for line in [self.header, *map(json.dumps, map(list, sorted(done)))]
            ),
        )
        return done

    def record(self, block: Block) -> None:
        # never through a link planted at the journal's (predictable) name
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
        try:
            os.write(fd, (json.dumps([int(i) for i in block]) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self) -> None:
        remove(self.path)


class RemoteJournal(Journal):
    """:class:`Journal` of an export to an object store, kept in the store beside the output
    (an object cannot be appended to): ``blocks.json`` holds the header, and each finished block
    is an empty object ``blocks/<i>-<j>-...`` - written after the block, so a listing names
    exactly the finished ones. Picklable (a URL, a header and the storage options)."""

    def __init__(self, url: Path, blocks: tuple[tuple[int, ...], ...]):
        super().__init__(url, blocks)
        self.values = remote.current_options()

    def load(self) -> set[Block]:
        url, values = self.path, self.values
        header = url / "blocks.json"
        if not (
            remote.exists_object(header, values)
            and remote.get_bytes(header, values) == self.header.encode()
        ):
            remote.delete_prefix(url / "blocks", values=values)
            remote.put_bytes(header, self.header.encode(), values)
            return set()
        done = set()
        for key in remote.list_keys(url / "blocks", values):
            try:
                done.add(tuple(int(i) for i in key.split("-")))
            except ValueError:
                continue
        return done

    def record(self, block: Block) -> None:
        name = "-".join(str(int(i)) for i in block)
        remote.put_bytes(self.path / "blocks" / name, b"", self.values)

    def remove(self) -> None:
        remote.delete_prefix(self.path / "blocks", values=self.values)
        remote.delete_prefix(self.path / "blocks.json", values=self.values)


def journal_path(plan: ExportPlan, token: str) -> Path:
    return temp_path(plan.output, token, "blocks")


def owner_paths(plan: ExportPlan, token: str) -> list[Path]:
    """The owner files of ``token``'s run: one in every directory its temporaries are in."""
    firsts: dict[Path, Path] = {}
    for path in plan.paths:
        firsts.setdefault(path.parent, path)
    return [temp_path(p, token, "owner") for p in firsts.values()]


def commit_record(plan: ExportPlan, token: str) -> Path | None:
    """The record of an interrupted commit of ``token``'s run, if there is one (beside the
    first temporary: see :func:`lazyexport.storage.commit_renames`)."""
    first = plan.paths[0]
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
    if not any(p.exists() for p in _temps(plan, token)):
        journal.remove()
    target = plan.writer.open(plan.spec, token)
    return target, journal, journal.load()
