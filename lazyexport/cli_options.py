"""The ``lazyexport`` command's argument parser and the options its commands share.

A parser error prints one ``error: ...`` line and exits with status 2, like every other mistake
a user can fix. Options keep ilastik's headless spellings as aliases (``--export_dtype``,
``--output_filename_format``, ...) so ilastik command lines run unchanged.

A command's options are declared when that command is parsed or its help printed
(:class:`Parser`'s ``build``), not before: the format and step options come from modules that
import numpy, dask, xarray, zarr, h5py and tifffile, which ``--help``, ``--version``,
``formats`` and the errors of the command line itself do not need.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .declarations import Option


def option_dest(option: Option) -> str:
    """Where argparse keeps a declared format option's value (a name no other option has)."""
    return f"format_option_{option.name}"


class InOrder(argparse.Action):
    """A step option (``--bin``, ...): keeps its text, and its name in ``step_order`` in the
    order the options were given (the order the steps apply in)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice: each step applies once")
        setattr(namespace, self.dest, values)
        namespace.step_order = [*(getattr(namespace, "step_order", None) or []), self.dest]


def add_steps(p: argparse.ArgumentParser) -> None:
    """The step options (:mod:`lazyexport.step_settings`), one per step."""
    from .step_settings import STEP_SETTINGS

    p.set_defaults(step_order=None)
    for name, step in STEP_SETTINGS.items():
        p.add_argument(f"--{name}", action=InOrder, dest=name, metavar=step.metavar, help=step.help)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, and whose arguments may be declared on
    first use: ``build(parser)`` runs once, before the parser parses or prints its help."""

    def __init__(self, *args, build: Callable[[argparse.ArgumentParser], None] | None = None, **kw):
        super().__init__(*args, **kw)
        self._build = build

    def _declare(self) -> None:
        build, self._build = self._build, None
        if build is not None:
            build(self)

    def parse_known_args(self, args=None, namespace=None):
        self._declare()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._declare()
        return super().format_usage()

    def format_help(self) -> str:
        self._declare()
        return super().format_help()

    def error(self, message: str):  # one line, status 2, like every other user error
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def add_scene(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene", help="a microscopy file's scene, by name or index (default: first)")


def add_export_options(p: argparse.ArgumentParser) -> None:
    from .formats import formats

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
    add_steps(p)
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
    p.add_argument(
        "--chunks",
        help="output chunk lengths, e.g. z=32,y=256 (default: about the format's chunk size, "
        "following the source's chunks; ome-zarr volumes near-cubic: docs/formats.md)",
    )
    add_format_options(p)
    add_run_options(p)
    p.add_argument(
        "--save-settings",
        metavar="FILE.toml",
        help="also save these settings as a one-dataset project file for 'lazyexport batch'",
    )


def add_format_options(p: argparse.ArgumentParser) -> None:
    """The format options: the built-in ones, then every registered format's declared ones
    (``Writer.options``), with the formats that read them."""
    from .declarations import BUILTIN
    from .formats import formats, get_writer
    from .settings import declared_options

    for option in BUILTIN:
        p.add_argument(option.flag, **_argparse_kwargs(option, option.help, option.name))
    found = declared_options()
    if not found:
        return
    group = p.add_argument_group("format options", "declared by the formats that read them")
    for option in found.values():
        users = [f for f in formats() if option in get_writer(f).options]
        help = f"{', '.join(users)}: {option.help}"
        group.add_argument(option.flag, **_argparse_kwargs(option, help, option_dest(option)))


def _argparse_kwargs(option: Option, help: str, dest: str) -> dict:
    kwargs: dict = dict(dest=dest, default=None, help=help, metavar=option.metavar)
    if option.parse is not None:
        kwargs["type"] = option.parse
    if option.choices:
        kwargs["choices"] = option.choices
    return kwargs


def add_run_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--assume-throughput",
        metavar="RATE",
        help="with --plan, for a source or output at a URL: the bytes per second one worker moves "
        "to and from the object store, for the projected duration (default 200MB/s)",
    )
