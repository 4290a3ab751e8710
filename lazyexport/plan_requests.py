"""The cost of an export at URLs, before it runs: the requests an object store counts (and
bills), the bytes moved, the objects created, and a duration for a throughput per worker.

Only the parts at a URL count: a source read through an object store, an output written to one.
What the plan decides is counted exactly: one GET per source read unit decoded (a block edge
inside a read unit makes two blocks fetch it, as :attr:`lazyexport.cost.Costs.decoded` counts);
one PUT per chunk (or shard) of each array a chunked store writes (:meth:`Writer.chunk_objects`),
a shard fetched before it is written, a pyramid level read back to build the next; a file that
is staged and uploaded is one PUT, or one per :data:`PART_BYTES` part of a larger file (a
multipart upload, begun and completed by two POSTs), and a slice of a sequence is uploaded under
a temporary name and copied into place (two PUTs). Metadata, listings and the commit take a few
requests more, counted from what the formats do (the ``*_META_*`` constants, measured against an
S3 server); HEAD, POST and DELETE requests are not counted.

Invariants: nothing here reads or writes anything (the plan and the location's capabilities
only); bytes are counted as stored without compression (what compression saves is not known
before the data are read: an upper bound); every chunk is counted as written (a chunk that is
all fill value and left out makes the count an upper bound too). The duration divides what
the workers move by ``throughput`` x workers, and adds the upload of staged files, which the
exporting process makes alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dask.utils import format_bytes, parse_bytes

from .errors import SettingsError
from .plan import ExportPlan
from .sources.facts import source_facts
from .storage.capabilities import holds_files

PART_BYTES = 5 * 2**20  # files larger than this upload in parts of this size
DEFAULT_THROUGHPUT = "200MB/s"  # what one worker moves to and from the store, by default
# requests for metadata, listings and the commit: a chunked store's first array, each array
# after it, an output staged and uploaded, a source's metadata
STORE_META_GETS, STORE_META_PUTS = 20, 3
ARRAY_META_GETS, ARRAY_META_PUTS = 6, 3
STAGED_META_GETS = 2
SOURCE_META_GETS = 4


@dataclasses.dataclass(frozen=True)
class Transfer:
    """The requests, bytes and objects of one export at URLs, and its projected duration."""

    gets: int
    puts: int
    read: int  # bytes fetched
    written: int  # bytes put
    objects: int  # objects created
    seconds: float
    throughput: int  # bytes per second per worker
    workers: int

    def summary(self) -> dict[str, Any]:
        """As plain data (``requests`` in ``--plan --json``)."""
        return {
            "get_requests": self.gets,
            "put_requests": self.puts,
            "bytes_read": self.read,
            "bytes_written": self.written,
            "objects_created": self.objects,
            "throughput_per_worker": self.throughput,
            "workers": self.workers,
            "projected_seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        return (
            f"  requests   {self.gets} GET and {self.puts} PUT, {format_bytes(self.read)} read "
            f"and {format_bytes(self.written)} written, {self.objects} objects created; about "
            f"{_duration(self.seconds)} at {self.throughput / 1e6:g} MB/s per worker x "
            f"{self.workers} worker{'s' * (self.workers != 1)} (uncompressed: an upper bound)"
        )


def parse_throughput(value: Any) -> int:
    """Bytes per second from ``200MB/s`` (``/s`` optional) or a number; SettingsError else."""
    text = str(DEFAULT_THROUGHPUT if value is None else value).strip()
    try:
        found = int(parse_bytes(text.removesuffix("/s").removesuffix("ps")))
    except (ValueError, TypeError):
        found = 0
    if found <= 0:
        raise SettingsError(f"cannot read throughput {value!r}; write e.g. 200MB/s or 1GB/s")
    return found


def transfer(plan: ExportPlan, throughput: Any = None) -> Transfer | None:
    """The cost of ``plan`` at URLs (None where neither its source nor its output is at one),
    at ``throughput`` per worker (text as :func:`parse_throughput` reads it)."""
    rate = parse_throughput(throughput)
    source = plan.source.attrs.get("source")
    remote_source = isinstance(source, str) and not holds_files(source)
    remote_output = not holds_files(plan.output)
    if not (remote_source or remote_output):
        return None
    gets = puts = read = written = objects = 0
    if remote_source:
        gets, read = _source_reads(plan)
    spread = read
    staged = 0
    if remote_output:
        arrays = plan.writer.chunk_objects(plan.spec)
        back = [a.reads_back for a in plan.writer.arrays(plan.spec)[1:]] or [True] * len(arrays)
        out = _chunked(plan, arrays, back) if arrays else _staged(plan)
        gets, puts, read = gets + out[0], out[1], read + out[2]
        written, objects = out[3], out[4]
        spread += out[2] + (written if arrays else 0)
        staged = 0 if arrays else written
    workers = plan.cluster.count if plan.cluster else 1
    seconds = spread / (rate * workers) + staged / rate
    return Transfer(gets, puts, read, written, objects, seconds, rate, workers)


def _source_reads(plan: ExportPlan) -> tuple[int, int]:
    """GETs and bytes of the source: each read unit decoded is fetched (sharded: each shard's
    index once more)."""
    c = plan.priced
    facts = source_facts(plan.source)
    itemsize = plan.source.dtype.itemsize
    unit = math.prod((facts.chunks or {}).values()) * itemsize if facts.chunks else 0
    gets = math.ceil(c.decoded / unit) if unit else c.tasks
    if facts.shards:
        gets += math.ceil(c.needed / (math.prod(facts.shards.values()) * itemsize))
    return gets + SOURCE_META_GETS, c.decoded


def _chunked(plan: ExportPlan, arrays, back: list[bool]) -> tuple[int, int, int, int, int]:
    """(GETs, PUTs, bytes read, bytes written, objects) of a chunked store: one object per chunk
    or shard of each array; a shard fetched before it is written; each array after the first
    built from the one before, read back where ``back`` says so (else made in the same pass, by
    the block tasks, which open it once more and write it as the first array: a shard fetched
    before it is written)."""
    itemsize = plan.dtype.itemsize
    counts = [math.prod(math.ceil(n / max(u, 1)) for n, u in zip(s, unit)) for s, unit in arrays]
    sizes = [math.prod(s) * itemsize for s, _ in arrays]
    extra = len(arrays) - 1
    read = [i for i, again in enumerate(back[:extra]) if again]  # the arrays read back
    same = [i + 1 for i, again in enumerate(back[:extra]) if not again]  # made by the tasks
    gets = STORE_META_GETS + (extra + len(same)) * ARRAY_META_GETS + sum(counts[i] for i in read)
    if plan.shards:
        gets += counts[0] + sum(counts[i] for i in same)
    puts = STORE_META_PUTS + extra * ARRAY_META_PUTS + sum(counts)
    objects = sum(counts) + len(arrays) + (len(arrays) > 1)  # and the arrays' and group's metadata
    return gets, puts, sum(sizes[i] for i in read), sum(sizes), objects


def _staged(plan: ExportPlan) -> tuple[int, int, int, int, int]:
    """(GETs, PUTs, bytes read, bytes written, objects) of files staged and uploaded: each
    whole, or in parts; a slice of a sequence under a temporary name, then copied."""
    files = max(len(plan.paths), 1)
    size = math.ceil(plan.nbytes / files)
    if plan.writer.capabilities.sequence:  # and its commit record read back
        return STAGED_META_GETS + 1, files * 2, 0, plan.nbytes, files
    per_file = math.ceil(size / PART_BYTES) if size > PART_BYTES else 1
    return STAGED_META_GETS, files * per_file, 0, plan.nbytes, files


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
