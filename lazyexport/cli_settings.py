"""The ``lazyexport`` command's options read into :class:`ExportSettings`.

Every option text is read here, once, into settings values; a text that cannot be read raises a
one-line :class:`SettingsError` naming the option as the user typed it. ilastik's headless flags
(``--output_format``, ``--cutout_subregion``, ``--export_drange``, ...) map to the same settings,
and giving one of them beside its lazyexport spelling is refused, never resolved silently.
"""

from __future__ import annotations

import sys
from typing import Any

from . import ilastik
from .axes import names
from .cli_options import option_dest
from .declarations import parse_axis_numbers
from .errors import SettingsError
from .formats import format_for
from .regions import read_regions
from .roi import parse_roi_text
from .settings import ExportSettings, declared_options
from .step_settings import STEP_SETTINGS, option_fields


def parse_renormalize(text: str):
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


def parse_chunks(text: str) -> dict[str, int]:
    """``--chunks``: a length per axis."""
    return parse_axis_numbers(text, "--chunks", "axis=length, e.g. z=32,y=256")


def parse_shards(text: str) -> dict[str, int] | str:
    """``--shards``: ``auto``, ``none`` or a length per axis."""
    if text.strip().lower() in ("auto", "none"):
        return text.strip().lower()
    return parse_axis_numbers(
        text, "--shards", "auto, none or axis=length, e.g. z=64,y=1024,x=1024"
    )


def source_arg(args) -> str:
    """SOURCE, or ilastik's ``--raw_data``."""
    if args.source and args.raw_data:
        raise SettingsError("give the source once: as SOURCE or as --raw_data, not both")
    if not (args.source or args.raw_data):
        raise SettingsError("the following arguments are required: source")
    return args.source or args.raw_data


def settings_from_args(args, source=None) -> ExportSettings:
    """The export settings the options ask for; ilastik's flags that depend on the source (the
    cutout by position and shape, the type) are resolved against ``source`` (opened lazily).
    What ilastik's flags did beyond that (a cutout clipped, a flag ignored) is noted on stderr."""
    notes: list[str] = []
    explicit = {
        name: getattr(args, name) for name in ("zarr_format",) if getattr(args, name) is not None
    }
    fmt, compression, levels = _format(args)
    output = _output(args, fmt, notes)
    roi, regions = _cutout(args)
    renormalize = parse_renormalize(args.renormalize) if args.renormalize else None
    roi, renormalize, dtype = _ilastik_cutout_and_range(
        args, source, roi or regions, roi, renormalize, notes
    )
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
        chunks=parse_chunks(args.chunks) if args.chunks else None,
        result_type=args.result_type,
        pixel_size=args.pixel_size,
        unit=args.unit,
        levels=levels,
        shards=parse_shards(args.shards) if args.shards is not None else None,
        options=_declared_options(args),
        step_order=getattr(args, "step_order", None),
        **option_fields({name: getattr(args, name, None) for name in STEP_SETTINGS}),
        **explicit,
    )
    settings.check_given(tuple(explicit))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return settings


def _declared_options(args) -> dict[str, Any] | None:
    """The formats' declared options given on the command line (``--demo-greeting``, ...)."""
    given = {}
    for option in declared_options().values():
        value = getattr(args, option_dest(option), None)
        if value is not None:
            given[option.name] = value
    return given or None


def _format(args) -> tuple[str | None, str | None, int | None]:
    """The format, compression and levels of ``--format`` or ilastik's ``--output_format``
    (which implies a compression and levels), else the format the output's extension names."""
    fmt, compression = args.format, args.compression
    levels = getattr(args, option_dest(declared_options()["levels"]))  # (ome-zarr's option)
    if args.ilastik_format is not None:
        if args.format is not None:
            raise SettingsError("give --format or ilastik's --output_format, not both")
        fmt, implied = ilastik.output_format(args.ilastik_format)
        compression = compression or implied.get("compression")
        levels = levels if levels is not None else implied.get("levels")
    if fmt is None and args.output:  # the format the output's extension names (out.zarr: zarr)
        fmt = format_for(args.output)
    return fmt, compression, levels


def _output(args, fmt: str | None, notes: list[str]) -> str | None:
    """The output template, with ilastik's ``--output_internal_path`` for HDF5 and N5."""
    output = args.output
    if args.output_internal_path and (fmt or "hdf5") in ("hdf5", "n5"):
        if not output:
            raise SettingsError("--output_internal_path needs --output_filename_format")
        output = f"{output.rstrip('/')}/{args.output_internal_path.strip('/')}"
    elif args.output_internal_path:
        notes.append(
            f"--output_internal_path applies to hdf5 and n5 only, as in ilastik: not to {fmt}"
        )
    return output


def _cutout(args) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(roi, regions)`` of ``--roi`` (given more than once: regions) or ``--regions``."""
    if args.regions and args.roi:
        raise SettingsError("give --roi or --regions, not both")
    if args.regions:
        return None, read_regions(args.regions)
    if args.roi and len(args.roi) > 1:
        return None, {f"region{i}": parse_roi_text(text) for i, text in enumerate(args.roi, 1)}
    if args.roi:
        return parse_roi_text(args.roi[0]), None
    return None, None


def _ilastik_cutout_and_range(args, source, cutout, roi, renormalize, notes: list[str]):
    """``(roi, renormalize, dtype)`` with ilastik's ``--cutout_subregion`` and
    ``--export_drange`` applied (``cutout``: the ROI or regions given the lazyexport way)."""
    dtype = args.dtype
    if args.cutout_subregion is None and args.export_drange is None:
        return roi, renormalize, dtype
    if cutout is not None and args.cutout_subregion is not None:
        raise SettingsError("give --roi or ilastik's --cutout_subregion, not both")
    if renormalize is not None and args.export_drange is not None:
        raise SettingsError("give --renormalize or ilastik's --export_drange, not both")
    if args.cutout_subregion is not None:
        roi = ilastik.cutout_roi(args.cutout_subregion, names(source), source.shape, notes)
    if args.export_drange is not None:
        renormalize = ilastik.renormalize(args.export_drange, args.pipeline_result_drange)
        # ilastik writes the source's type unless --export_dtype names another
        dtype = dtype or (str(source.dtype) if source is not None else None)
    return roi, renormalize, dtype
