"""The ``lazyexport`` command: a thin layer over the public API.

Mistakes a user can fix (bad ROI, unknown axis or placeholder, existing output, ...) print one
``error: ...`` line and exit with status 2; Ctrl-C exits with 130 and SIGTERM with 143 (128 + 15),
both after removing the temporary output (kept only with ``--resume``); existing outputs stay as
they were.

Start-up is quick: a command imports what it runs when it runs (the sources, the planner, the
writers: numpy, dask, xarray, zarr, h5py, tifffile), and each command's options are declared
when that command is parsed (:class:`~lazyexport.cli_options.Parser`), so ``--help``,
``--version``, ``formats`` and the errors of the command line import none of them
(``tests/test_startup_imports.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, interrupt
from .cli_options import Parser, add_export_options, add_run_options, add_scene
from .cli_output import redacted_output
from .errors import ExportError
from .interrupt import Terminated, exit_status, raise_interrupt

if TYPE_CHECKING:
    from .plan import ExportPlan
    from .settings import ExportSettings


def _run_export(
    source,
    settings: ExportSettings,
    *,
    nickname=None,
    overwrite=False,
    resume=False,
    memory_limit=None,
    scheduler=None,
    quiet=False,
    label=None,
):
    from .cli_output import RegionBars
    from .execution.fronts import run_jobs
    from .run import export_notes

    bars = RegionBars(not quiet, label)

    def start(name: str, plan: ExportPlan) -> None:
        for note in export_notes(plan, resume):
            print(f"note: {f'{name}: ' if name else ''}{note}", file=sys.stderr)
        bars.start(name, plan)

    try:
        return run_jobs(
            source, settings, nickname=nickname, overwrite=overwrite, resume=resume,
            memory_limit=memory_limit, scheduler=scheduler, progress=bars, before=start,
        )  # fmt: skip
    finally:
        bars.close()


def cmd_info(args) -> int:
    from .describe import describe  # (from the metadata alone where it can: no dask or xarray)

    print(describe(args.source, axes=args.axes, scene=args.scene))
    return 0


def cmd_export(args) -> int:
    from .batch import Batch, Dataset
    from .cli_output import show_plans
    from .cli_settings import settings_from_args, source_arg
    from .execution.fronts import plan_jobs
    from .run import scheduler_session
    from .sources import open_source

    args.source = source_arg(args)
    source = open_source(args.source, axes=args.axes, scene=args.scene)
    settings = settings_from_args(args, source)
    if args.save_settings:
        dataset = Dataset(args.source, args.nickname or "", args.axes, scene=args.scene)
        project = Batch(settings, [dataset])
        saved = project.save(args.save_settings)
        print(
            f"saved the settings as a one-dataset project {saved}; rerun with "
            f"'lazyexport batch {saved} export-all'",
            file=sys.stderr,
        )
    if args.plan:  # as the export plans them: the checks, the shared reads
        with scheduler_session(args.scheduler, args.memory_limit) as resolved:
            plans = plan_jobs(
                source, settings, resolved, nickname=args.nickname, memory_limit=args.memory_limit
            ).plans
        show_plans(plans, args.json, args.assume_throughput)
        return 0
    result = _run_export(
        source,
        settings,
        nickname=args.nickname,
        overwrite=args.overwrite,
        resume=args.resume,
        memory_limit=args.memory_limit,
        scheduler=args.scheduler,
        quiet=args.quiet,
    )
    print(result)
    return 0


def cmd_preview(args) -> int:
    from .axes import names
    from .cli_settings import parse_axis_numbers, settings_from_args, source_arg
    from .errors import NotExportedError, SettingsError
    from .plan import build_plan
    from .preview import preview_plan, render_png
    from .sources import open_source

    args.source = source_arg(args)
    source = open_source(args.source, axes=args.axes, scene=args.scene)
    settings = settings_from_args(args, source)
    if settings.regions:
        raise SettingsError(
            "preview shows one cutout: give --roi once (not several, not --regions)"
        )
    at = parse_axis_numbers(args.at, "--at", "axis=index, e.g. z=10,t=0") if args.at else None
    plan = build_plan(source, settings, nickname=args.nickname, memory_limit=args.memory_limit)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    planes: dict = preview_plan(plan, at, ("raw", "live"))
    try:
        planes.update(preview_plan(plan, at, ("disk",)))
    except NotExportedError as exc:
        print(f"note: {exc}", file=sys.stderr)
        planes["disk"] = "not exported yet"
    path = render_png(planes, args.png, same_range=args.same_range, channel=args.channel)
    live = planes["live"]
    fixed = ", ".join(f"{a}={int(v)}" for a, v in live.coords.items() if a not in live.dims)
    print(
        f"wrote {path}: raw, live preview and exported planes {''.join(names(live))} "
        f"{live.shape}" + (f" at {fixed}" if fixed else "")
    )
    return 0


def cmd_clean(args) -> int:
    from .cli_output import print_cleaned
    from .storage.names import clean_named

    done, kept = clean_named(args.path, dry_run=args.dry_run)  # a URL is cleaned in its store
    print_cleaned(done, args.dry_run)
    for item in kept:
        print(f"left alone: {item}", file=sys.stderr)
    return 0


def cmd_formats(args) -> int:
    from .format_table import rows, table

    print("\n".join(table(rows())))
    return 0


def cmd_demo(args) -> int:
    """Export the sample to ``--output-dir``, or to a temporary directory removed at the end
    (however the demo ends)."""
    if args.output_dir:
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _run_demo(out_dir, args)
        print(f"\nOutputs are in {out_dir}")
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lazyexport-demo-") as temp:
        _run_demo(Path(temp), args)
    print(
        "\nThe outputs were written to a temporary directory, now removed (--output-dir keeps them)"
    )
    return 0


def _run_demo(out_dir: Path, args) -> None:
    from .demo import sample_volume
    from .describe import describe
    from .settings import ExportSettings
    from .sources import open_exported

    volume = sample_volume()
    print("Source (a lazily generated two-channel probability map; nothing is in memory yet):")
    print(describe(volume))
    print()
    common: dict[str, Any] = dict(
        roi={"z": (16, 144)}, renormalize=((0.0, 1.0), (0, 255)), dtype="uint8", axis_order="czyx"
    )
    jobs = [
        ("hdf5", f"{out_dir}/{{nickname}}_{{roi}}.h5/exported_data"),
        ("zarr", f"{out_dir}/{{nickname}}_{{roi}}.zarr"),
        ("tiff-sequence", f"{out_dir}/{{nickname}}_slices/z{{slice_index}}.tif"),
    ]
    print("Export: z in [16, 144), renormalize [0, 1] -> [0, 255], uint8, axis order czyx")
    for fmt, output in jobs:
        settings = ExportSettings(format=fmt, output=output, **common)
        result = _run_export(
            volume, settings, overwrite=args.overwrite, quiet=args.quiet, label=fmt
        )
        back = open_exported(result)
        plane = back.isel(z=40).values
        expected = execute_reference_plane(volume, 16 + 40)
        status = "read back OK" if (plane == expected).all() else "READ BACK DIFFERS"
        print(f"  {result}  [{status}]")


def execute_reference_plane(volume, z: int):
    """Plane ``z`` of the demo export computed directly with numpy, to check the read-back."""
    import numpy as np

    plane = volume.isel(z=z).values.astype("float32") * np.float32(255)
    return np.clip(np.rint(plane), 0, 255).astype("uint8").transpose(2, 0, 1)


def cmd_batch(args) -> int:
    from .cli_batch import cmd_batch as run

    return run(args)


def _source_options(p: argparse.ArgumentParser, sources: str) -> None:
    """The source of ``export`` and ``preview`` and the options that say how to read it."""
    p.add_argument("source", nargs="?", help=sources)
    p.add_argument("--raw_data", help="ilastik's name for SOURCE")
    p.add_argument("--axes", "--input_axes", help="axis tags overriding the file's, e.g. zyxc")
    add_scene(p)


def _info(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("--axes", help="axis tags overriding the file's, e.g. zyxc")
    add_scene(p)


def _export(p: argparse.ArgumentParser) -> None:
    _source_options(
        p,
        "file.h5/dataset, store.zarr[/path], store.n5[/path], file.tif, file.npy, a glob "
        "of slices, or a URL (s3://, gs://, az://, https://)",
    )
    add_export_options(p)


def _preview(p: argparse.ArgumentParser) -> None:
    _source_options(
        p, "file.h5/dataset, store.zarr[/path], file.tif, file.npy, a glob of slices or a URL"
    )
    p.add_argument(
        "--at",
        help="where the plane lies, in source coordinates, e.g. z=10 (the plane spans the last "
        "two free non-channel output axes; other axes default to the middle of the ROI)",
    )
    p.add_argument("--png", required=True, help="the picture to write, e.g. preview.png")
    p.add_argument(
        "--same-range", action="store_true", help="one display range for all three panels"
    )
    p.add_argument(
        "--channel",
        type=int,
        help="show this channel only (default: up to 3 channels as a composite)",
    )
    add_export_options(p)


def _batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="the project file (TOML; see docs/batch.md)")
    p.add_argument(
        "--save-settings",
        metavar="FILE.toml",
        help="save the project (sources made relative to FILE)",
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    actions.add_parser(
        "list", help="nickname, source, output location, and whether the output exists"
    )
    for action, text in (
        ("export-all", "export every dataset"),
        ("export", "export the datasets named"),
    ):
        a = actions.add_parser(action, help=text)
        if action == "export":
            a.add_argument("nicknames", nargs="+", metavar="NICKNAME")
        a.add_argument(
            "--fail-fast", action="store_true", help="stop at the first dataset that fails"
        )
        add_run_options(a)
    a = actions.add_parser("delete-all", help="remove every output the project writes (asks first)")
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a = actions.add_parser(
        "clean", help="remove what killed exports left beside the project's outputs"
    )
    a.add_argument("--dry-run", action="store_true", help="only list what would be removed")


def _clean(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an output (file, store or first slice), or a directory of outputs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")


def _formats(p: argparse.ArgumentParser) -> None:
    pass


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", help="where to write (default: a new temporary directory)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs of an earlier demo in --output-dir",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


# command -> (its help, what declares its arguments, what runs it)
_COMMANDS = {
    "info": ("describe a source (or an exported file) without reading pixels", _info, cmd_info),
    "export": ("export one source", _export, cmd_export),
    "preview": (
        "draw a plane of the raw, live and exported data side by side into a PNG",
        _preview,
        cmd_preview,
    ),
    "batch": (
        "many datasets from a project file: list, export, export-all, delete-all",
        _batch,
        cmd_batch,
    ),
    "clean": (
        "remove what killed exports left beside an output (hidden temporaries no running "
        "export owns); an interrupted commit is finished",
        _clean,
        cmd_clean,
    ),
    "formats": ("list the output formats", _formats, cmd_formats),
    "demo": ("export a built-in sample volume to every core format", _demo, cmd_demo),
}


def _declared(declare):
    """``declare``, then the option every command has: it may name URLs."""

    def build(p: argparse.ArgumentParser) -> None:
        declare(p)
        p.add_argument(
            "--storage-option",
            action="append",
            metavar="KEY=VALUE",
            help="an object-store option (repeatable), e.g. endpoint=http://localhost:9000, "
            "region=eu-west-1, max_retries=5 (see docs/storage.md)",
        )

    return build


def make_parser() -> argparse.ArgumentParser:
    """The command line; each command's arguments are declared when it is parsed (see the
    module docs)."""
    parser = Parser(
        prog="lazyexport", description="Export image volumes larger than memory, chunk by chunk."
    )
    parser.add_argument("--version", action="version", version=f"lazyexport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (text, declare, command) in _COMMANDS.items():
        sub.add_parser(name, help=text, build=_declared(declare)).set_defaults(func=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status (0, 1 for a failure, 2 for bad input, 130 or 143 when
    interrupted). A Ctrl-C or SIGTERM that Python ignored is not printed, it ends the command.
    Nothing it prints shows a URL's user-info (:func:`lazyexport.errors.redact`)."""
    with interrupt.quiet_lost(), redacted_output():
        return _command(argv)


def _command(argv: list[str] | None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from . import remote  # (the storage layer: not for --help and --version)

    in_main_thread = threading.current_thread() is threading.main_thread()  # signals need it
    previous = (
        {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
        if in_main_thread
        else {}
    )
    chosen: dict[str, str] = {}
    try:
        chosen = dict(remote.parse_option(o) for o in getattr(args, "storage_option", None) or [])
        if getattr(args, "nickname", None) is not None:
            from .settings import check_nickname

            check_nickname(args.nickname)
        with remote.options(chosen):
            status = args.func(args)
        interrupt.check()  # a signal whose KeyboardInterrupt Python lost (see lazyexport.interrupt)
        return status
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        interrupt.taken()
        terminated = isinstance(exc, Terminated)
        kept = (
            "kept for --resume (zarr, tiff-sequence)"
            if getattr(args, "resume", False)
            else "removed"
        )
        print(
            f"error: {'terminated' if terminated else 'interrupted'}; temporary output {kept}",
            file=sys.stderr,
        )
        return exit_status(exc)
    except BrokenPipeError:  # the reader of stdout left (``| head``): as any Unix tool, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no flush error at exit)
        return 128 + signal.SIGPIPE
    except Exception as exc:  # an unexpected failure: one line, the traceback on request
        if remote.is_storage_error(exc):  # a request that failed for good (after the retries)
            print(f"error: {remote.describe(exc, 'the object store', 'use')}", file=sys.stderr)
            return 2
        if args.debug or os.environ.get("LAZYEXPORT_DEBUG"):
            import traceback

            traceback.print_exc()
        shown = remote.without_values(str(exc), remote.normalize_options(chosen))
        print(
            f"error: export failed: {type(exc).__name__}: {shown} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
