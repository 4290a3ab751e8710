"""The ``lazyexport`` command: a thin layer over the public API.

Mistakes a user can fix (bad ROI, unknown axis or placeholder, existing output, ...) print one
``error: ...`` line and exit with status 2; Ctrl-C exits with 130 and SIGTERM with 143 (128 + 15),
both after removing the temporary output (kept only with ``--resume``); existing outputs stay as
they were.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from . import __version__, ilastik, interrupt, remote
from .axes import names
from .batch import Batch, Dataset, reason
from .describe import describe
from .errors import ExportError, NotExportedError, SettingsError, redact
from .formats import format_for, formats, get_writer
from .interrupt import Terminated, exit_status, raise_interrupt
from .plan import ExportPlan, build_plan
from .preview import preview_plan, render_png
from .regions import read_regions
from .roi import parse_roi_text
from .run import (
    ExportResult,
    Progress,
    RegionResults,
    execute,
    export_notes,
    export_regions,
    plan_on,
    plan_regions,
    scheduler_session,
)
from .settings import DOWNSAMPLE_METHODS, TIFF_FLAVORS, ExportSettings, check_nickname
from .sources import open_exported, open_source
from .storage import clean_path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other user error
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _parse_renormalize(text: str):
    """``in_min,in_max:out_min,out_max``; ``:out_min,out_max`` takes the input range from the
    data, and ``p0.1,p99.9:0,255`` percentiles of it."""
    left, sep, right = text.partition(":")
    if not sep:
        raise SettingsError(
            f"cannot read --renormalize {text!r}; write in_min,in_max:out_min,out_max (e.g. "
            "0,1:0,255)"
        )

    def pair(part: str, side: str):
        values = part.split(",")
        if len(values) != 2:
            raise SettingsError(
                f"cannot read --renormalize {text!r}; each side needs two numbers, e.g. 0,1:0,255"
            )
        try:
            return tuple(
                v.strip() if v.strip().lower().startswith("p") and side == "in" else float(v)
                for v in values
            )
        except ValueError:
            raise SettingsError(
                f"cannot read --renormalize {text!r}: {part!r} is not two numbers"
            ) from None

    return (pair(left, "in") if left.strip() else None, pair(right, "out"))


def _parse_axis_numbers(text: str, option: str, example: str) -> dict[str, int]:
    """``z=32,y=256``: a whole number per axis, for --chunks and --at."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise SettingsError(f"cannot read {option} part {part!r}; write {example}")
        if axis.strip() in values:
            raise SettingsError(f"{option} gives axis {axis.strip()!r} twice")
        values[axis.strip()] = int(value)
    return values


def _parse_chunks(text: str) -> dict[str, int]:
    return _parse_axis_numbers(text, "--chunks", "axis=length, e.g. z=32,y=256")


def _parse_shards(text: str) -> dict[str, int] | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _parse_axis_numbers(text, "--shards", "auto or axis=length, e.g. z=64,y=1024,x=1024")


def _source_arg(args) -> str:
    """SOURCE, or ilastik's ``--raw_data``."""
    if args.source and args.raw_data:
        raise SettingsError("give the source once: as SOURCE or as --raw_data, not both")
    if not (args.source or args.raw_data):
        raise SettingsError("the following arguments are required: source")
    return args.source or args.raw_data


def _settings_from_args(args, source=None) -> ExportSettings:
    """The export settings the options ask for; ilastik's flags that depend on the source (the
    cutout by position and shape, the type) are resolved against ``source`` (opened lazily).
    What ilastik's flags did beyond that (a cutout clipped, a flag ignored) is noted on stderr."""
    notes: list[str] = []
    explicit = {
        name: getattr(args, name)
        for name in ("zarr_format", "tiff_flavor")
        if getattr(args, name) is not None
    }
    fmt, compression, levels = args.format, args.compression, args.levels
    if args.ilastik_format is not None:
        if args.format is not None:
            raise SettingsError("give --format or ilastik's --output_format, not both")
        fmt, implied = ilastik.output_format(args.ilastik_format)
        compression = compression or implied.get("compression")
        levels = levels if levels is not None else implied.get("levels")
    output = args.output
    if fmt is None and output:  # the format the output's extension names (out.zarr: zarr)
        fmt = format_for(output)
    if args.output_internal_path and (fmt or "hdf5") in ("hdf5", "n5"):
        if not output:
            raise SettingsError("--output_internal_path needs --output_filename_format")
        output = f"{output.rstrip('/')}/{args.output_internal_path.strip('/')}"
    elif args.output_internal_path:
        notes.append(
            f"--output_internal_path applies to hdf5 and n5 only, as in ilastik: not to {fmt}"
        )
    roi: dict[str, Any] | None = None
    regions: dict[str, Any] | None = None
    if args.regions and args.roi:
        raise SettingsError("give --roi or --regions, not both")
    if args.regions:
        regions = read_regions(args.regions)
    elif args.roi and len(args.roi) > 1:
        regions = {f"region{i}": parse_roi_text(text) for i, text in enumerate(args.roi, 1)}
    elif args.roi:
        roi = parse_roi_text(args.roi[0])
    dtype = args.dtype
    renormalize = _parse_renormalize(args.renormalize) if args.renormalize else None
    if args.cutout_subregion is not None or args.export_drange is not None:
        if (roi or regions) is not None and args.cutout_subregion is not None:
            raise SettingsError("give --roi or ilastik's --cutout_subregion, not both")
        if renormalize is not None and args.export_drange is not None:
            raise SettingsError("give --renormalize or ilastik's --export_drange, not both")
        if args.cutout_subregion is not None:
            roi = ilastik.cutout_roi(args.cutout_subregion, names(source), source.shape, notes)
        if args.export_drange is not None:
            renormalize = ilastik.renormalize(args.export_drange, args.pipeline_result_drange)
            # ilastik writes the source's type unless --export_dtype names another
            dtype = dtype or (str(source.dtype) if source is not None else None)
    settings = ExportSettings(
        roi=roi,
        regions=regions,
        renormalize=renormalize,
        dtype=dtype,
        axis_order=args.axis_order,
        format=fmt or "hdf5",
        output=output,
        compression=compression,
        compression_level=args.compression_level,
        chunks=_parse_chunks(args.chunks) if args.chunks else None,
        result_type=args.result_type,
        pixel_size=args.pixel_size,
        unit=args.unit,
        levels=levels,
        downsample=args.downsample,
        shards=_parse_shards(args.shards) if args.shards is not None else None,
        **explicit,
    )
    settings.check_given(tuple(explicit))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return settings


class _Bar:
    """A tqdm progress bar on stderr, only when it is a terminal: bytes written, rate, ETA, and
    blocks (chunks) done / total."""

    def __init__(self, enabled: bool, label: str):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=None, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=True
            )

    def __call__(self, event: Progress) -> None:
        if self.bar is None:
            return
        self.bar.total = event.bytes_total
        self.bar.n = event.bytes_done
        self.bar.set_postfix_str(f"{event.blocks_done}/{event.blocks_total} blocks", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _BatchBars:
    """One progress bar line per dataset of a batch (a new bar when the nickname changes)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.nickname: str | None = None
        self.bar = _Bar(False, "")

    def __call__(self, nickname: str, event: Progress) -> None:
        if nickname != self.nickname:
            self.close()
            self.nickname, self.bar = nickname, _Bar(self.enabled, nickname)
        self.bar(event)

    def close(self) -> None:
        self.bar.close()
        self.nickname, self.bar = None, _Bar(False, "")


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
    if settings.regions:
        bars = _BatchBars(not quiet)

        def notes(name: str, plan: ExportPlan) -> None:
            for note in export_notes(plan, resume):
                print(f"note: {name}: {note}", file=sys.stderr)

        try:
            return export_regions(
                source, settings, nickname=nickname, overwrite=overwrite, resume=resume,
                memory_limit=memory_limit, scheduler=scheduler, progress=bars, before=notes,
            )  # fmt: skip
        finally:
            bars.close()
    with scheduler_session(scheduler, memory_limit) as resolved:
        plan = plan_on(resolved, source, settings, nickname=nickname, memory_limit=memory_limit)
        for note in export_notes(plan, resume):
            print(f"note: {note}", file=sys.stderr)
        bar = _Bar(not quiet, label or plan.nickname)
        try:
            return execute(
                plan, overwrite=overwrite, progress=bar, scheduler=resolved, resume=resume
            )
        finally:
            bar.close()


def cmd_info(args) -> int:
    print(describe(open_source(args.source, axes=args.axes, scene=args.scene)))
    return 0


def cmd_export(args) -> int:
    args.source = _source_arg(args)
    source = open_source(args.source, axes=args.axes, scene=args.scene)
    settings = _settings_from_args(args, source)
    if args.save_settings:
        dataset = Dataset(args.source, args.nickname or "", args.axes, scene=args.scene)
        project = Batch(settings, [dataset])
        saved = project.save(args.save_settings)
        print(
            f"saved the settings as a one-dataset project {saved}; rerun with "
            f"'lazyexport batch {saved} export-all'",
            file=sys.stderr,
        )
    if args.plan:
        with scheduler_session(args.scheduler, args.memory_limit) as resolved:
            if settings.regions:  # as the export plans them: the checks, the shared reads
                plans = plan_regions(
                    source, settings, resolved, args.nickname, args.memory_limit, overwrite=True
                ).plans
            else:
                plans = [
                    plan_on(
                        resolved, source, settings, nickname=args.nickname,
                        memory_limit=args.memory_limit,
                    )
                ]  # fmt: skip
        _show_plans(plans, args.json)
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
    args.source = _source_arg(args)
    source = open_source(args.source, axes=args.axes, scene=args.scene)
    settings = _settings_from_args(args, source)
    if settings.regions:
        raise SettingsError(
            "preview shows one cutout: give --roi once (not several, not --regions)"
        )
    at = _parse_axis_numbers(args.at, "--at", "axis=index, e.g. z=10,t=0") if args.at else None
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
        _show_plans(plans, args.json)
        return 0
    bars = _BatchBars(not args.quiet)

    def done(nickname: str, outcome) -> None:
        bars.close()
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
    _print_cleaned(report.removed, args.dry_run)
    for nickname, why in report.refused.items():
        print(f"left alone: {nickname}: {why}", file=sys.stderr)
    return 0


def _print_cleaned(removed: list[str], dry_run: bool) -> None:
    for item in removed:
        print(f"{'would remove' if dry_run else 'removed'} {item}")
    if not removed:
        print("nothing to clean")


_BATCH_ACTIONS = {
    "list": _batch_list,
    "export-all": _batch_export,
    "export": _batch_export,
    "delete-all": _batch_delete,
    "clean": _batch_clean,
}


def cmd_clean(args) -> int:
    path = remote.as_path(args.path)  # a URL is cleaned in its store, never as a local path
    if remote.is_url(path):
        return _clean_url(path, args.dry_run)
    if not path.exists() and not path.parent.is_dir():
        raise SettingsError(f"{path} does not exist, nor does the directory it would be in")
    done, kept = clean_path(path, dry_run=args.dry_run)
    _print_cleaned([item.describe() for item in done], args.dry_run)
    for item in kept:
        print(f"left alone: {item.describe()}", file=sys.stderr)
    return 0


def _clean_url(url: Path, dry_run: bool) -> int:
    """``lazyexport clean URL``: what killed exports of this host left beside the output ``URL``
    in its store (what runs elsewhere is not touched: nobody here can tell whether it runs)."""
    if remote.url_scheme(str(url)) in remote.READ_ONLY:
        raise SettingsError(f"{url} is read-only (HTTP): lazyexport writes nothing there to clean")
    try:
        done = remote.clean_beside([url], dry_run=dry_run)
    except Exception as exc:
        if remote.is_storage_error(exc):
            raise remote.describe(exc, url, "clean beside") from None
        raise
    _print_cleaned(done, dry_run)
    return 0


def cmd_formats(args) -> int:
    for name in formats():
        writer = get_writer(name)
        kind = "sequence" if writer.capabilities.sequence else "single  "
        options = (
            f"  options: {', '.join(sorted(writer.capabilities.options))}"
            if writer.capabilities.options
            else ""
        )
        print(
            f"{name:15} {kind} {'/'.join(writer.extensions):26} compression: "
            f"{', '.join(writer.capabilities.compressions)} (default "
            f"{writer.capabilities.compressions[0]})  - {writer.description}{options}"
        )
    return 0


def cmd_demo(args) -> int:
    from .demo import sample_volume

    out_dir = (
        Path(args.output_dir)
        if args.output_dir
        else Path(tempfile.mkdtemp(prefix="lazyexport-demo-"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
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
    print(f"\nOutputs are in {out_dir}")
    return 0


def execute_reference_plane(volume, z: int):
    """Plane ``z`` of the demo export computed directly with numpy, to check the read-back."""
    import numpy as np

    plane = volume.isel(z=z).values.astype("float32") * np.float32(255)
    return np.clip(np.rint(plane), 0, 255).astype("uint8").transpose(2, 0, 1)


def _add_scene(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene", help="a microscopy file's scene, by name or index (default: first)")


def _add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--roi",
        action="append",
        help="cutout, e.g. z=0:100,x=:512 (stop exclusive, negatives count from the end); given "
        "more than once: several regions, named region1, region2, ... ({region} in --output)",
    )
    p.add_argument(
        "--regions",
        metavar="FILE",
        help="several named regions from a CSV (name,z_start,z_stop,...) or TOML file "
        '(name = "z=0:10,y=5:20"): one output each, {region} in --output their name',
    )
    p.add_argument(
        "--renormalize",
        metavar="IN:OUT",
        help="linear map in_min,in_max:out_min,out_max, e.g. 0,1:0,255; ':0,255' takes the input "
        "range from the data (its min/max inside the ROI, read once)",
    )
    p.add_argument(
        "--dtype",
        "--export_dtype",
        help="convert to this data type (integers round and clip), e.g. uint8",
    )
    p.add_argument(
        "--axis-order", "--output_axis_order", help="transpose to this axis order, e.g. czyx"
    )
    p.add_argument("--format", help=f"output format: {', '.join(formats())} (default hdf5)")
    p.add_argument(
        "--output",
        "--output_filename_format",
        metavar="TEMPLATE",
        help="output template, e.g. '{dataset_dir}/{nickname}_export.h5' (placeholders: see docs)",
    )
    ilastik = p.add_argument_group(
        "ilastik's headless export flags", "the same exports as ilastik's (see docs/usage.md)"
    )
    ilastik.add_argument(
        "--output_format", dest="ilastik_format", help="e.g. 'compressed hdf5', 'tiff sequence'"
    )
    ilastik.add_argument("--output_internal_path", help="the dataset inside the output file")
    ilastik.add_argument(
        "--cutout_subregion", help="[(starts...),(stops...)] in the source's axis order"
    )
    ilastik.add_argument("--export_drange", help="(min,max) of the exported values")
    ilastik.add_argument(
        "--pipeline_result_drange", help="(min,max) of the source values that map to it"
    )
    ilastik.add_argument("--headless", action="store_true", help="accepted; lazyexport has no GUI")
    p.add_argument(
        "--nickname", help="the dataset's nickname for {nickname} (default: the file name)"
    )
    p.add_argument("--result-type", help="a label for {result_type}, e.g. Probabilities")
    p.add_argument(
        "--compression", help="codec, e.g. gzip, lzf, zstd, none (default: the format's)"
    )
    p.add_argument(
        "--compression-level",
        type=int,
        help="codec level: 0-9 for gzip, zlib, lzma, blosc, deflate; 1-22 for zstd",
    )
    p.add_argument("--chunks", help="output chunk lengths, e.g. z=32,y=256")
    p.add_argument(
        "--zarr-format", type=int, default=None, choices=(2, 3), help="Zarr version (default 3)"
    )
    p.add_argument(
        "--shards",
        help="zarr v3 sharding for many small chunks: auto (one shard per block) "
        "or shard lengths, e.g. z=64,y=1024,x=1024 (default: no shards)",
    )
    p.add_argument(
        "--pixel-size",
        help="physical pixel size per spatial axis, e.g. z=0.5,y=0.1,x=0.1 (default: the source's)",
    )
    p.add_argument(
        "--unit", help="unit of --pixel-size, e.g. micrometer, nanometer, um (default micrometer)"
    )
    p.add_argument(
        "--levels", type=int, help="ome-zarr pyramid levels (default: until a level fits 512x512)"
    )
    p.add_argument(
        "--downsample",
        choices=DOWNSAMPLE_METHODS,
        help="ome-zarr pyramid: mean (default), mode (labels; the default with a --result-type "
        "naming labels, e.g. Labels) or nearest",
    )
    p.add_argument(
        "--tiff-flavor",
        default=None,
        choices=TIFF_FLAVORS,
        help="tiff metadata: plain, imagej (hyperstack) or ome (default: ome for an output "
        "named .ome.tif or .ome.tiff, else plain)",
    )
    _add_run_options(p)
    p.add_argument(
        "--save-settings",
        metavar="FILE.toml",
        help="also save these settings as a one-dataset project file for 'lazyexport batch'",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory-limit", help="memory budget for the whole export, e.g. 512MiB (default 1GiB)"
    )
    p.add_argument(
        "--scheduler",
        metavar="NAME|ADDRESS",
        help="dask scheduler: threads (default), synchronous, processes, local-cluster (a dask "
        "LocalCluster for this run), or a running cluster's address, e.g. tcp://host:8786 "
        "(source and output must be on storage every worker sees, or at a URL; see "
        "docs/cluster.md)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--resume",
        action="store_true",
        help="zarr, tiff-sequence, png-sequence: continue an interrupted --resume export of the "
        "same plan, and keep the temporary output if this one is interrupted (other formats "
        "restart)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the plan (chunks, blocks, tasks in flight, projected peak memory and its "
        "parts, read amplification, staging) and write nothing",
    )
    p.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")


def _show_plans(plans, as_json: bool) -> None:
    """Print plans (text, or one JSON document: an object, or a list for several)."""
    if as_json:
        data = [p.summary() for p in plans]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        print("\n\n".join(str(p) for p in plans))


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lazyexport", description="Export image volumes larger than memory, chunk by chunk."
    )
    parser.add_argument("--version", action="version", version=f"lazyexport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "info", help="describe a source (or an exported file) without reading pixels"
    )
    p.add_argument("source")
    p.add_argument("--axes", help="axis tags overriding the file's, e.g. zyxc")
    _add_scene(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export one source")
    p.add_argument(
        "source",
        nargs="?",
        help="file.h5/dataset, store.zarr[/path], store.n5[/path], file.tif, file.npy, a glob "
        "of slices, or a URL (s3://, gs://, az://, https://)",
    )
    p.add_argument("--raw_data", help="ilastik's name for SOURCE")
    p.add_argument("--axes", "--input_axes", help="axis tags overriding the file's, e.g. zyxc")
    _add_scene(p)
    _add_export_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "preview", help="draw a plane of the raw, live and exported data side by side into a PNG"
    )
    p.add_argument(
        "source",
        nargs="?",
        help="file.h5/dataset, store.zarr[/path], file.tif, file.npy, a glob of slices or a URL",
    )
    p.add_argument("--raw_data", help="ilastik's name for SOURCE")
    p.add_argument("--axes", "--input_axes", help="axis tags overriding the file's, e.g. zyxc")
    _add_scene(p)
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
    _add_export_options(p)
    p.set_defaults(func=cmd_preview)
    p = sub.add_parser(
        "batch", help="many datasets from a project file: list, export, export-all, delete-all"
    )
    p.add_argument("project", help="the project file (TOML; see docs/batch.md)")
    p.add_argument(
        "--save-settings",
        metavar="FILE.toml",
        help="save the project (sources made relative to FILE)",
    )
    actions = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
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
        _add_run_options(a)
    a = actions.add_parser("delete-all", help="remove every output the project writes (asks first)")
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a = actions.add_parser(
        "clean", help="remove what killed exports left beside the project's outputs"
    )
    a.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser(
        "clean",
        help="remove what killed exports left beside an output (hidden temporaries "
        "no running export owns); an interrupted commit is finished",
    )
    p.add_argument("path", help="an output (file, store or first slice), or a directory of outputs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("formats", help="list the output formats")
    p.set_defaults(func=cmd_formats)

    p = sub.add_parser("demo", help="export a built-in sample volume to every core format")
    p.add_argument("--output-dir", help="where to write (default: a new temporary directory)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs of an earlier demo in --output-dir",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    for command in sub.choices.values():  # every command may name URLs
        command.add_argument(
            "--storage-option",
            action="append",
            metavar="KEY=VALUE",
            help="an object-store option (repeatable), e.g. endpoint=http://localhost:9000, "
            "region=eu-west-1, max_retries=5 (see docs/storage.md)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status (0, 1 for a failure, 2 for bad input, 130 or 143 when
    interrupted). A Ctrl-C or SIGTERM that Python ignored is not printed, it ends the command.
    Nothing it prints shows a URL's user-info (:func:`lazyexport.errors.redact`)."""
    with interrupt.quiet_lost(), _redacted_output():
        return _command(argv)


class _Redacting:
    """A text stream that never shows a URL's user-info, whichever part of lazyexport (or of
    the libraries it calls) prints the URL: plans, progress lines, notes, results, tracebacks."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _redacted_output():
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, _Redacting) else _Redacting(s) for s in before)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = before


def _command(argv: list[str] | None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
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
    except Exception as exc:  # an unexpected failure: one line, the traceback on request
        if remote.is_storage_error(exc):  # a request that failed for good (after the retries)
            print(f"error: {remote.describe(exc, 'the object store', 'use')}", file=sys.stderr)
            return 2
        if args.debug or os.environ.get("LAZYEXPORT_DEBUG"):
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
