"""``lazyexport batch PROJECT ACTION``: the actions on a project file's datasets.

Each action reports per dataset (an export its notes too, as ``export`` prints them); one
dataset that fails does not stop the others (unless ``--fail-fast``), and the status is 1 when
any failed. ``delete-all`` removes only outputs the
project writes, after a confirmation (or ``--yes``), and never without a terminal to ask on.
"""

from __future__ import annotations

import sys

from .batch import Batch, reason
from .cli_output import BatchBars, print_cleaned, show_plans
from .errors import SettingsError
from .run import ExportResult, RegionResults, scheduler_session


def cmd_batch(args) -> int:
    batch = Batch.load(args.project)
    if args.save_settings:
        print(f"saved the project to {batch.save(args.save_settings)}", file=sys.stderr)
    return _BATCH_ACTIONS[args.action](batch, args)


def _batch_list(batch: Batch, args) -> int:
    rows = [("NICKNAME", "SOURCE", "OUTPUT", "EXISTS")]
    for row in batch.list():
        output = row.output if row.error is None else f"? ({row.error})"
        rows.append((row.nickname, row.source, output, "yes" if row.exists else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[3])
    return 0


def _batch_export(batch: Batch, args) -> int:
    nicknames = args.nicknames if args.action == "export" else batch.nicknames
    if args.plan:
        with scheduler_session(args.scheduler, args.memory_limit) as resolved:
            plans = [
                plan
                for n in nicknames
                for plan in batch.plans(n, memory_limit=args.memory_limit, scheduler=resolved)
            ]
        show_plans(plans, args.json, args.assume_throughput)
        return 0
    bars = BatchBars(not args.quiet)

    def done(nickname: str, outcome) -> None:
        bars.close()
        _print_notes(nickname, outcome)
        if isinstance(outcome, RegionResults):
            print("\n".join(f"{nickname}:{line}" for line in str(outcome).splitlines()))
        elif isinstance(outcome, ExportResult):
            print(f"{nickname}: {outcome}")
        else:
            print(f"{nickname}: FAILED: {reason(outcome)}")

    try:
        report = batch.export(
            nicknames,
            overwrite=args.overwrite,
            resume=args.resume,
            fail_fast=args.fail_fast,
            memory_limit=args.memory_limit,
            scheduler=args.scheduler,
            progress=bars,
            on_done=done,
        )
    finally:
        bars.close()
    print(report.summary())
    return 0 if report.ok else 1


def _print_notes(nickname: str, outcome) -> None:
    """The notes of a dataset's export (of each of its regions), as ``export`` prints them,
    named by the dataset (and region)."""
    if isinstance(outcome, RegionResults):
        named = [(f"{nickname}:{region}", r) for region, r in outcome.results.items()]
    elif isinstance(outcome, ExportResult):
        named = [(nickname, outcome)]
    else:  # a failure has no notes
        return
    for name, result in named:
        for note in result.notes:
            print(f"note: {name}: {note}", file=sys.stderr)


def _batch_delete(batch: Batch, args) -> int:
    planned = batch.delete_all(dry_run=True)
    for nickname, why in planned.refused.items():
        print(f"left alone: {nickname}: {why}", file=sys.stderr)
    if not planned.removed:
        print("nothing to delete")
        return 1 if planned.refused else 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise SettingsError(
                "delete-all needs confirmation and stdin is not a terminal; pass --yes"
            )
        print("delete-all would remove:")
        for item in planned.removed:
            print(f"  {item}")
        answer = input(f"Delete these {len(planned.removed)} outputs? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    report = batch.delete_all()
    for item in report.removed:
        print(f"deleted {item}")
    return 1 if report.refused else 0


def _batch_clean(batch: Batch, args) -> int:
    report = batch.clean(dry_run=args.dry_run)
    print_cleaned(report.removed, args.dry_run)
    for nickname, why in report.refused.items():
        print(f"left alone: {nickname}: {why}", file=sys.stderr)
    return 0


_BATCH_ACTIONS = {
    "list": _batch_list,
    "export-all": _batch_export,
    "export": _batch_export,
    "delete-all": _batch_delete,
    "clean": _batch_clean,
}
