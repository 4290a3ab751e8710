"""Resumable exports: one deterministic temporary output per plan, and a journal of its finished blocks.

With ``resume=True`` (``--resume``), an export to a format whose writer is ``resumable`` (Zarr,
TIFF sequences) writes under ``.{name}.lazyexport-r{token}.tmp`` instead of a random name, where
``token`` hashes everything that decides the bytes written: the output paths, the format, the
settings, the source's identity (its path, shape, dtype, chunking, and the size, modification
time and inode of each of its files - every chunk file of a Zarr array or N5 dataset - as in its
dask name), the resolved renormalization range, and the output's shape, dtype and chunks. A
changed plan or rewritten source data gets another token, so stale data is never reused; a
source whose files cannot be listed is refused.

Beside the temporary output, ``.{name}.lazyexport-r{token}.blocks`` is the journal: a JSON
header (the block grid) and then one line per finished block index, appended and fsynced after
the block was written. A resumed run skips the blocks listed; an interrupted line (a kill in the
middle of an append) is dropped. A journal whose block grid differs (another ``memory_limit``)
is started afresh: every block is written again over the kept temporary output. A resumed run
removes what interrupted runs of other (older) plans left at the same outputs.

The journal is fsynced; the blocks' own files are not, so a power cut (unlike a kill) may lose
blocks the journal lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ResumeError
from .formats.base import Target, remove, temp_path
from .formats.sequence import stage_path

if TYPE_CHECKING:
    from .plan import ExportPlan

Block = tuple[int, ...]


def plan_token(plan: ExportPlan) -> str:
    """A short hash of everything that decides what an export of ``plan`` writes."""
    identity = {
        "format": plan.writer.name,
        "paths": [os.path.abspath(p) for p in plan.paths],
        "internal": plan.internal,
        "settings": plan.settings.to_dict(),
        "source": plan.source.data.name,
        "renormalize": plan.renormalize,
        "axes": plan.axes,
        "shape": plan.shape,
        "dtype": str(plan.dtype),
        "chunks": plan.chunks,
        "shards": plan.shards,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Journal:
    """The finished blocks of one resumable export. Picklable (a path and a header), so
    :meth:`record` may run on any worker thread; appends of one short line do not interleave."""

    def __init__(self, path: Path, blocks: tuple[tuple[int, ...], ...]):
        self.path = Path(path)
        self.header = json.dumps({"lazyexport-journal": 1, "blocks": [list(b) for b in blocks]})

    def load(self) -> set[Block]:
        """The blocks finished by earlier runs; the journal is rewritten to hold exactly them."""
        done: set[Block] = set()
        if self.path.exists():
            lines = self.path.read_text().split("\n")
            if lines[0] == self.header:
                for line in lines[1:-1]:     # the last part is "" or an interrupted line
                    try:
                        done.add(tuple(int(i) for i in json.loads(line)))
                    except (ValueError, TypeError):
                        continue
        temp = self.path.with_name(self.path.name + ".new")
        temp.write_text("".join(f"{line}\n" for line in [self.header, *map(json.dumps, map(list, sorted(done)))]))
        os.replace(temp, self.path)
        return done

    def record(self, block: Block) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps([int(i) for i in block]) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self) -> None:
        remove(self.path)


def journal_path(plan: ExportPlan, token: str) -> Path:
    return plan.output.with_name(f".{plan.output.name}.lazyexport-{token}.blocks")


def open_resumable(plan: ExportPlan) -> tuple[Target, Journal, set[Block]]:
    """Open ``plan``'s writer on its deterministic temporary output, keeping what an interrupted
    run wrote there; return the target, the journal and the blocks already finished."""
    if "lazyexport_identity" in plan.source.encoding and plan.source.encoding["lazyexport_identity"] is None:
        raise ResumeError(f"cannot tell whether the source changed since an interrupted export: the files of "
                          f"{plan.source.attrs.get('source')} cannot be listed; export without resume")
    token = plan_token(plan)
    journal = Journal(journal_path(plan, token), plan.blocks)
    _remove_stale(plan, token)
    started = any(temp_path(p, token).exists() for p in plan.paths)
    if not started:
        journal.remove()
    target = plan.writer.open(plan, resume_token=token)
    return target, journal, journal.load()


_RESUME_NAME = re.compile(r"(\..+\.lazyexport-)(r[0-9a-f]{16})\.(tmp|blocks|stage)")


def _remove_stale(plan: ExportPlan, token: str) -> None:
    """Remove what interrupted resumable exports of an earlier, different plan left at the
    same outputs: their data can never be reused."""
    prefixes = {f".{p.name}.lazyexport-" for p in plan.paths}
    for parent in {p.parent for p in plan.paths}:
        if not parent.is_dir():
            continue
        for entry in parent.iterdir():
            match = _RESUME_NAME.fullmatch(entry.name)
            if match and match[1] in prefixes and match[2] != token:
                remove(entry)


def leftovers(plan: ExportPlan) -> list[Path]:
    """What an interrupted resumable export of ``plan`` left: its temporary outputs and journal."""
    token = plan_token(plan)
    found = [temp_path(p, token) for p in plan.paths] + [journal_path(plan, token), stage_path(plan, token)]
    return [p for p in found if p.exists()]
