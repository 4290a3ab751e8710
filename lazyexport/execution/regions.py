"""Planning an export of several regions of one source (``settings.regions``): each region's
plan, made and checked before anything is written, and the reader that lets regions share the
source chunks they overlap in (:class:`lazyexport.regions.SharedChunks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..axes import names
from ..errors import ExportError
from ..plan import MIN_MEMORY_LIMIT, ExportPlan, parse_memory_limit, read_model, read_through
from ..regions import SharedChunks, check_distinct, region_settings
from ..roi import resolve_roi
from ..settings import ExportSettings
from ..sources import open_source
from ..sources.facts import attach_facts, source_facts
from .preflight import refuse_existing
from .results import ExportResult
from .schedulers import plan_on


@dataclasses.dataclass
class RegionResults:
    """What an export of several regions wrote: an :class:`ExportResult` per region, by name (in
    the order given), and how the regions shared their reads."""

    results: dict[str, ExportResult]
    kept: list[str] = dataclasses.field(default_factory=list)  # left as they were (--resume)
    shared_units: int = 0  # source read units more than one region reads
    read_again: int = 0  # reads of those beyond the first (over the sharing limit)
    sharing: str = ""  # why nothing was shared, where nothing could be

    def __getitem__(self, name: str) -> ExportResult:
        return self.results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __str__(self) -> str:
        lines = [f"{name}: {result}" for name, result in self.results.items()]
        lines += [f"{name}: kept, its output exists (resume)" for name in self.kept]
        if self.sharing:
            lines.append(self.sharing)
        elif self.shared_units:
            how = (
                f"{self.read_again} reads beyond the first (over the sharing limit)"
                if self.read_again
                else "each read once"
            )
            lines.append(
                f"{len(self.results)} regions: {self.shared_units} source chunks read by several "
                f"regions, {how}"
            )
        return "\n".join(lines)


@dataclasses.dataclass
class RegionPlans:
    """The plans of an export of several regions, made and checked before anything is written
    (:func:`plan_regions`)."""

    names: list[str]  # [""]: the one region of settings without regions
    plans: list[ExportPlan]
    boxes: list[dict[str, tuple[int, int]]]  # each region's [start, stop) per source axis
    existing: list[str]  # regions whose output exists (left alone with resume)
    shared: SharedChunks | None
    sharing: str  # why nothing is shared, where nothing can be

    def outcome(self, done: Any) -> Any:
        """What an export of these plans gives: ``done`` (a :class:`RegionResults`, or a list
        with an item per region), or its one item for settings without regions."""
        if self.names != [""]:
            return done
        return done[""] if isinstance(done, RegionResults) else done[0]


# below this, the plans keep the whole limit and regions read for themselves
MIN_SHARING = 4 * 2**20
# more shared read units than this are not tracked (the bookkeeping would cost memory)
MAX_SHARED_UNITS = 200_000


def plan_exports(
    source: Any,
    settings: ExportSettings | None,
    scheduler: Any,
    nickname: str | None = None,
    memory_limit: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    lazy: bool = False,
) -> RegionPlans:
    """The plans of an export: one per region of ``settings.regions`` (:func:`plan_regions`),
    or the one region ``settings`` describe, unnamed (its output is checked as it is written:
    :func:`lazyexport.execution.job.check_outputs`). An export is a list of regions: this is the
    one place that decides how many."""
    if settings is not None and settings.regions:
        return plan_regions(
            source, settings, scheduler, nickname, memory_limit, overwrite, resume, lazy
        )
    plan = plan_on(scheduler, source, settings, nickname=nickname, memory_limit=memory_limit)
    return RegionPlans([""], [plan], [{}], [], None, "")


def plan_regions(
    source: Any,
    settings: ExportSettings,
    scheduler: Any,
    nickname: str | None = None,
    memory_limit: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    lazy: bool = False,
) -> RegionPlans:
    """Plan each of ``settings.regions`` for ``scheduler`` (as :func:`scheduler_session` yields
    it), and refuse, before anything is written: a region that does not fit the source, outputs
    two regions share (any of their files), and existing outputs without ``overwrite`` (with
    ``resume`` these regions are left as they are). Source chunks several regions read are
    shared where they can be (one process; not for ``lazy`` exports, whose graphs share reads
    themselves): a quarter of ``memory_limit`` holds them and the plans get the rest."""
    src = open_source(source)
    items = region_settings(settings)
    names_ = [name for name, _ in items]
    dims = names(src)
    boxes = []
    for name, each in items:
        with in_region(name):
            boxes.append(resolve_roi(each.roi, dims, src.shape))
    limit = parse_memory_limit(memory_limit)
    shared, why = (None, "") if lazy else _shared_chunks(src, boxes, scheduler, limit)
    if shared is not None:
        src = src.copy(deep=False)
        attach_facts(src, source_facts(src).replace(reader=shared))
        limit -= shared.limit
    plans = []
    for name, each in items:
        with in_region(name):
            plans.append(plan_on(scheduler, src, each, nickname=nickname, memory_limit=limit))
    outputs = [
        (name, (path if lazy else f"{path}/{p.internal}".rstrip("/")))
        for name, p in zip(names_, plans)
        for path in map(str, p.paths)
    ]
    check_distinct(outputs, settings.output)
    existing = []
    for name, p in zip(names_, plans):
        found = p.writer.existing(p.spec)
        if found and not overwrite:
            if not resume:  # (compute=False exports with resume refuse those kept)
                with in_region(name):
                    refuse_existing(p, found)
            existing.append(name)
    return RegionPlans(names_, plans, boxes, existing, shared, why)


@contextlib.contextmanager
def in_region(name: str, written: list[str] | None = None) -> Iterator[None]:
    """An error in here names the region (and the regions already written); the unnamed
    region of settings without regions adds nothing to it."""
    if not name:
        yield
        return
    try:
        yield
    except ExportError as exc:
        done = f" (written: {', '.join(written)})" if written else ""
        exc.args = (f"region {name!r}: {exc}{done}", *exc.args[1:])
        raise


def _shared_chunks(
    src: Any, boxes: list[dict[str, tuple[int, int]]], scheduler: Any, limit: int
) -> tuple[SharedChunks | None, str]:
    """The reader that shares source chunks between the regions (``boxes``: each region's
    ``[start, stop)`` per axis) within a quarter of ``limit``, where they can be shared; else
    None and why not (empty: nothing is decoded twice anyway, or nothing overlaps)."""
    reader = read_through(src)
    _, bounds = read_model(src)
    dims = names(src)
    if reader is None:
        return None, (
            "regions compute their source each for itself: a source that is a dask graph (an "
            "array, a glob of slices) has no file chunks to share"
        )
    if isinstance(reader, np.ndarray) or any(bounds[d] is None for d in dims):
        return None, ""  # in memory, or read as it lies: nothing is decoded
    if scheduler not in ("threads", "synchronous"):
        return None, (
            "regions read their source chunks each for itself: sharing them needs the threads "
            "scheduler (one process)"
        )
    room = min(limit // 4, limit - MIN_MEMORY_LIMIT)
    if room < MIN_SHARING:
        return None, "regions read their source chunks each for itself: the memory limit is small"
    edges = [bounds[d] or (0, n) for d, n in zip(dims, src.shape)]  # (None: returned above)
    regions = [tuple(slice(*box[d]) for d in dims) for box in boxes]
    shared = SharedChunks(reader, edges, src.dtype, regions, room, MAX_SHARED_UNITS)
    if shared.overlapping > MAX_SHARED_UNITS:
        return None, (
            f"regions read their source chunks each for itself: they overlap in more than "
            f"{MAX_SHARED_UNITS} chunks"
        )
    return (shared, "") if shared.shared else (None, "")
