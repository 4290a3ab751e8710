"""The two calls every front end (the command line, a batch project) makes to export: plan the
jobs (:func:`plan_jobs`) and run them (:func:`run_jobs`), whatever the settings hold.

An export is a list of regions: one unnamed region for settings without ``regions``, one per
named region with them. :func:`lazyexport.execution.regions.plan_exports` is the one place that
decides how many; the front ends never ask ``settings.regions`` themselves.

Invariants: the front ends plan as an export plans (the same checks, the same shared reads);
plans made to be shown refuse no existing output; a run gives what :func:`lazyexport.export`
gives (an :class:`ExportResult` for settings without regions, a :class:`RegionResults` with
them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..plan import ExportPlan
from ..run import run_plans, scheduler_session
from ..settings import ExportSettings
from .regions import RegionPlans, RegionResults, plan_exports
from .results import ExportResult, NamedProgress

# called with a region's name ("" for the one region of settings without regions) and its plan
# as the region starts
Before = Callable[[str, ExportPlan], None]


def plan_jobs(
    source: Any,
    settings: ExportSettings | None,
    scheduler: Any = None,
    *,
    nickname: str | None = None,
    memory_limit: Any = None,
) -> RegionPlans:
    """The plans an export of ``source`` with ``settings`` makes on ``scheduler`` (a name, or
    what :func:`~lazyexport.run.scheduler_session` yields): ``.plans`` has one per region, in the
    order of ``.names`` (``[""]`` without regions). Nothing is written and existing outputs are
    not refused."""
    return plan_exports(
        source, settings, scheduler or "threads", nickname, memory_limit, overwrite=True
    )


def run_jobs(
    source: Any,
    settings: ExportSettings | None,
    *,
    nickname: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    memory_limit: Any = None,
    scheduler: Any = None,
    progress: NamedProgress | None = None,
    cancel: threading.Event | None = None,
    before: Before | None = None,
) -> ExportResult | RegionResults:
    """Plan and export ``source`` with ``settings`` (parameters as for
    :func:`lazyexport.export`); ``progress(name, event)`` and ``before(name, plan)`` name the
    region ("" for settings without regions)."""
    with scheduler_session(scheduler, memory_limit) as resolved:
        jobs = plan_exports(source, settings, resolved, nickname, memory_limit, overwrite, resume)
        done = run_plans(jobs, overwrite, progress, resolved, cancel, resume, before)
        return jobs.outcome(done)
