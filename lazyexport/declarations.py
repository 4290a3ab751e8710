"""The one registry of output-format declarations: what each format is called, the extensions it
writes, its one-line description, its :class:`Capabilities` and the options it reads.

Each built-in format is declared here once, as a :class:`Format` value (:data:`FORMATS`, by
name), and its writer takes everything it declares from it: a writer class names its entry
(``declaration = HDF5``) and :class:`lazyexport.formats.base.Writer` sets the class's ``name``,
``extensions``, ``description``, ``capabilities`` and ``options`` to the entry's own objects.
``lazyexport formats`` (:mod:`lazyexport.format_table`) and the command line read the same
objects without importing a writer.

Invariants: this module imports nothing but :mod:`lazyexport.errors` (no numpy, dask, xarray,
zarr, h5py or tifffile), so ``--help``, ``--version`` and ``formats`` start light; a format's
``capabilities.options`` holds the built-in options it reads and the names of the options it
declares (``capabilities.declared``); an option is declared by one :class:`Option` value,
shared by the formats that read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .errors import SettingsError


@dataclasses.dataclass(frozen=True)
class Option:
    """One format option. ``check`` takes a value (from Python, a project file or ``parse``)
    and returns it normalized, raising ``SettingsError``, ``ValueError`` or ``TypeError`` with
    a one-line reason; without one, a value must be one of the ``choices`` (where there are;
    text compared case-insensitively). ``parse`` reads the command line's text (default: the
    text itself), and the command line offers the ``choices``."""

    name: str
    what: str  # a few words: "the Zarr version"
    help: str  # the command line's help text
    default: Any = None
    choices: tuple[Any, ...] = ()
    parse: Callable[[str], Any] | None = None
    check: Callable[[Any], Any] | None = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"option name {self.name!r} must be a lower-case identifier")

    @property
    def flag(self) -> str:
        """The command-line flag: ``--zarr-format`` for ``zarr_format``."""
        return "--" + self.name.replace("_", "-")

    def validate(self, value: Any) -> Any:
        """``value`` checked and normalized (one-line ``SettingsError`` naming the option)."""
        if self.choices and self.check is None:
            if isinstance(value, str):
                value = value.lower()
            if value not in self.choices:
                raise SettingsError(
                    f"{self.name} ({self.flag}: {self.what}) cannot be {value!r}; choose one of "
                    f"{', '.join(str(c) for c in self.choices)}"
                )
        if self.check is None:
            return value
        try:
            return self.check(value)
        except SettingsError:
            raise
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{self.name} ({self.flag}: {self.what}): {exc}") from None


def one_of(what: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    """A ``check`` for a text option with ``choices``: the value lower-cased, or one line
    "unknown {what} ...; choose one of ..."."""

    def check(value: Any) -> str:
        value = str(value).lower()
        if value not in choices:
            raise SettingsError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
        return value

    return check


def one_of_options(name: str, what: str, help: str, choices: tuple[str, ...], kind: str) -> Option:
    """A text option whose value is one of ``choices`` (lower-cased), any other refused in one
    line as an unknown ``kind`` (:func:`one_of`)."""
    return Option(name, what, help, choices=choices, check=one_of(kind, choices))


def _zarr_format(value: Any) -> Any:
    if value not in (2, 3):
        raise SettingsError(f"zarr_format must be 2 or 3, got {value!r}")
    return value


#: The options every release had: ExportSettings fields. Those whose value is checked alone
#: are checked here (``check``); ``shards``, ``pixel_size`` and ``unit``, whose checks involve
#: other settings or modules, in :mod:`lazyexport.settings`.
BUILTIN = (
    Option(
        "zarr_format",
        "the Zarr version",
        "Zarr version (default 3)",
        3,
        choices=(2, 3),
        parse=int,
        check=_zarr_format,
    ),
    Option(
        "shards",
        "Zarr v3 sharding",
        "zarr v3 sharding for many small chunks: auto (one shard per block), none, or shard "
        "lengths, e.g. z=64,y=1024,x=1024 (default: ome-zarr v3 shards of about 32 MiB, "
        "zarr none)",
    ),
    Option(
        "pixel_size",
        "the physical pixel size",
        "physical pixel size per spatial axis, e.g. z=0.5,y=0.1,x=0.1 (default: the source's)",
    ),
    Option(
        "unit",
        "the pixel size's unit",
        "unit of --pixel-size, e.g. micrometer, nanometer, um (default micrometer)",
    ),
)

#: Settings that only some formats use (ExportSettings field -> what it is), each refused where
#: the format's :class:`Capabilities` do not list it (the :data:`BUILTIN` options).
FORMAT_OPTIONS = {o.name: o.what for o in BUILTIN}


def builtin(name: str) -> Option:
    """The built-in option ``name``."""
    return next(o for o in BUILTIN if o.name == name)


# the options the writers declare (their values in ``spec.options``); ExportSettings still
# takes tiff_flavor, levels and downsample as keywords (lazyexport.settings.MIRRORED)
TIFF_FLAVORS = ("plain", "imagej", "ome")
TIFF_FLAVOR = one_of_options(
    "tiff_flavor",
    "multipage TIFF metadata",
    "plain, imagej (hyperstack) or ome metadata (default: ome for an output named .ome.tif "
    "or .ome.tiff, else plain)",
    TIFF_FLAVORS,
    "TIFF flavor",
)


def _levels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise SettingsError(f"levels must be a whole number from 1 to 32, got {value!r}")
    return value


LEVELS = Option(
    "levels",
    "pyramid levels",
    "pyramid levels (default: until a level fits 512x512)",
    parse=int,
    check=_levels,
    metavar="LEVELS",
)
# how a pyramid level is made (lazyexport.formats.pyramid)
DOWNSAMPLE_METHODS = ("mean", "mode", "nearest", "gaussian")
DOWNSAMPLE = one_of_options(
    "downsample",
    "how pyramid levels are made",
    "pyramid: mean (default), mode (labels; the default with a --result-type naming labels, "
    "e.g. Labels, and with --segment or --threshold), nearest or gaussian (anti-aliased)",
    DOWNSAMPLE_METHODS,
    "downsample method",
)


def _downsample_axes(value: Any) -> str:
    """``"y,x"`` (or ``("y", "x")``, ``"yx"``): the spatial axes halved, normalized to
    ``"z,y,x"`` order."""
    given = value.replace(",", "") if isinstance(value, str) else "".join(value)
    given = given.replace(" ", "").lower()
    if not given or len(set(given)) != len(given) or any(a not in "zyx" for a in given):
        raise SettingsError(
            f"downsample_axes must name spatial axes z, y, x, each at most once, e.g. y,x; "
            f"got {value!r}"
        )
    return ",".join(a for a in "zyx" if a in given)


DOWNSAMPLE_AXES = Option(
    "downsample_axes",
    "the axes the pyramid halves",
    "axes each pyramid level halves, e.g. y,x (no z-downsampling) or z,y,x "
    "(default: y and x, and z while its spacing is at most 1.5 times y/x's)",
    check=_downsample_axes,
    metavar="AXES",
)


def parse_axis_numbers(text: str, option: str, example: str) -> dict[str, int]:
    """``z=32,y=256``: a whole number per axis, for --chunks, --at and --level-chunks."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        axis, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise SettingsError(f"cannot read {option} part {part!r}; write {example}")
        if axis.strip() in values:
            raise SettingsError(f"{option} gives axis {axis.strip()!r} twice")
        values[axis.strip()] = int(value)
    return values


LEVEL_CHUNKS_EXAMPLE = "level:axis=length;..., e.g. 1:z=32,y=128,x=128;2:z=32,y=64,x=64"


def _level_chunks(value: Any) -> dict[int, dict[str, int]]:
    """``"1:z=32,y=128,x=128;2:y=64"`` (or ``{1: {"z": 32, ...}}``, ``{"1": "z=32,..."}``):
    chunk lengths per pyramid level (1 and up) and axis, normalized to ``{1: {"z": 32}}``."""
    items: list[tuple[Any, Any]] = []
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(";"))):
            level, sep, text = part.partition(":")
            if not sep:
                raise SettingsError(
                    f"cannot read level_chunks part {part!r}; write {LEVEL_CHUNKS_EXAMPLE}"
                )
            items.append((level.strip(), text))
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise SettingsError(f"level_chunks must be {LEVEL_CHUNKS_EXAMPLE}; got {value!r}")
    out: dict[int, dict[str, int]] = {}
    for level, lengths in items:
        number = _level_number(level)
        if number in out:
            raise SettingsError(f"level_chunks gives level {number} twice")
        if isinstance(lengths, str):
            lengths = parse_axis_numbers(lengths, "level_chunks", LEVEL_CHUNKS_EXAMPLE)
        out[number] = _chunk_lengths(number, lengths)
    if not out:
        raise SettingsError(f"level_chunks names no level; write {LEVEL_CHUNKS_EXAMPLE}")
    return out


def _level_number(level: Any) -> int:
    """A pyramid level's number from level_chunks: a whole number from 1 (level 0's chunks
    are the export's, --chunks)."""
    text = str(level).strip()
    if isinstance(level, bool) or not text.isdigit():
        raise SettingsError(f"level_chunks names an unknown level {level!r}; levels are 1, 2, ...")
    if int(text) == 0:
        raise SettingsError("level_chunks cannot set level 0's chunks; give --chunks (chunks=)")
    return int(text)


def _chunk_lengths(level: int, lengths: Any) -> dict[str, int]:
    """One level's chunk lengths: axis letters to whole numbers from 1."""
    if not isinstance(lengths, Mapping) or not lengths:
        raise SettingsError(
            f"level_chunks level {level} needs a length per axis, e.g. z=32,y=128; got {lengths!r}"
        )
    out = {}
    for axis, length in lengths.items():
        if not isinstance(axis, str) or len(axis.strip()) != 1 or not axis.strip().isalpha():
            raise SettingsError(
                f"level_chunks level {level}: axes are one letter each, got {axis!r}"
            )
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise SettingsError(
                f"level_chunks level {level}: the chunk length along {axis.strip()!r} must be a "
                f"whole number from 1, got {length!r}"
            )
        out[axis.strip().lower()] = length
    return out


LEVEL_CHUNKS = Option(
    "level_chunks",
    "pyramid levels' own chunks",
    "chunks of pyramid levels, per level and axis, e.g. 1:z=32,y=128,x=128;2:z=32,y=64,x=64 "
    "(default: level 0's chunks, clipped to the level's shape; axes not named too)",
    check=_level_chunks,
    metavar="LEVEL:CHUNKS;...",
)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a format supports, declared once per format; settings are checked against it before
    anything is opened, and the contract tests check it against what the writer does.

    - ``sequence``: one file per slice along an axis (the template needs ``{slice_index}``).
    - ``resumable``: ``open`` keeps what its run's temporaries hold, so ``--resume`` continues.
    - ``single_writer``: only one process may write the output (HDF5): other processes encode,
      the exporting process stores (``Target.encode`` / ``Target.store``).
    - ``object_store``: writes straight to an object store (a URL output); other formats are
      written to a local staging directory and uploaded on commit.
    - ``compressions``: the codecs it writes, the first the default.
    - ``options``: the :data:`FORMAT_OPTIONS` it reads, and the options its format declares
      (``Format.options``: added to ``declared`` and here when the :class:`Format` is made).
    """

    sequence: bool = False
    resumable: bool = False
    single_writer: bool = False
    object_store: bool = False
    compressions: tuple[str, ...] = ("none",)
    options: frozenset[str] = frozenset()
    declared: frozenset[str] = frozenset()  # the format's own options (Format.options)

    def __post_init__(self) -> None:
        unknown = set(self.options) - set(FORMAT_OPTIONS) - set(self.declared)
        if unknown:
            raise ValueError(
                f"unknown format options {sorted(unknown)}; known: {sorted(FORMAT_OPTIONS)}"
            )
        object.__setattr__(self, "options", frozenset(self.options))
        object.__setattr__(self, "declared", frozenset(self.declared))


@dataclasses.dataclass(frozen=True)
class Format:
    """One output format's declaration. Its ``capabilities`` read the ``options`` it declares
    (made so here, once: the names join ``capabilities.options`` and ``declared``)."""

    name: str
    extensions: tuple[str, ...]  # the first is appended to templates without one
    description: str = ""
    capabilities: Capabilities = Capabilities()
    # the options only this format (and formats that share them) reads: the settings, command
    # line and project files accept them, the writer reads them in ``spec.options``
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        caps = self.capabilities
        names = frozenset(o.name for o in self.options)
        if names != caps.declared:  # the declared options are read, by definition
            base = caps.options - caps.declared
            caps = dataclasses.replace(caps, options=base | names, declared=names)
            object.__setattr__(self, "capabilities", caps)


SPATIAL_METADATA = frozenset({"pixel_size", "unit"})  # formats that store a pixel size
ZARR_COMPRESSIONS = ("zstd", "blosc", "blosc-bitshuffle", "gzip", "none")

HDF5 = Format(
    "hdf5",
    (".h5", ".hdf5", ".hdf"),
    "one chunked HDF5 dataset with ilastik axistags",
    Capabilities(
        single_writer=True,
        compressions=("gzip", "lzf", "zstd", "blosc", "none"),
        options=SPATIAL_METADATA,
    ),
)
N5 = Format(
    "n5",
    (".n5",),
    "an N5 dataset (Fiji N5 / BigDataViewer), gzip or raw blocks",
    Capabilities(compressions=("gzip", "raw"), options=SPATIAL_METADATA),
)
NPY = Format("npy", (".npy",), "one .npy file, written block by block at its byte offsets")
ZARR = Format(
    "zarr",
    (".zarr",),
    "a Zarr v3 (or v2) array with dimension names",
    Capabilities(
        resumable=True,
        object_store=True,
        compressions=ZARR_COMPRESSIONS,
        options=frozenset({"zarr_format", "shards"}),
    ),
)
OME_ZARR = Format(
    "ome-zarr",
    (".ome.zarr", ".zarr"),
    "an OME-NGFF image (0.5 on Zarr v3, 0.4 on v2) with a multiscale pyramid",
    # not resumable: the pyramid is built at the end, from level 0 as one run wrote it
    Capabilities(
        object_store=True,
        compressions=ZARR_COMPRESSIONS,
        options=frozenset({"zarr_format", "shards"}) | SPATIAL_METADATA,
    ),
    (LEVELS, DOWNSAMPLE, DOWNSAMPLE_AXES, LEVEL_CHUNKS),
)
TIFF = Format(
    "tiff",
    (".tif", ".tiff", ".ome.tif", ".ome.tiff"),
    "one multipage (Big)TIFF, plain, ImageJ hyperstack or OME-TIFF, streamed page by page",
    Capabilities(compressions=("none", "zlib", "lzma"), options=SPATIAL_METADATA),
    (TIFF_FLAVOR,),
)
TIFF_SEQUENCE = Format(
    "tiff-sequence",
    (".tif", ".tiff"),
    "one TIFF per slice along the outermost non-channel axis",
    Capabilities(sequence=True, resumable=True, compressions=("none", "zlib", "lzma")),
)
PNG_SEQUENCE = Format(
    "png-sequence",
    (".png",),
    "one PNG per slice (8-bit gray/RGB(A), 16-bit gray)",
    Capabilities(sequence=True, resumable=True, compressions=("deflate",)),
)

#: The built-in formats, by name (sorted): each is its writer's ``declaration``.
FORMATS = {
    f.name: f
    for f in sorted(
        (HDF5, N5, NPY, ZARR, OME_ZARR, TIFF, TIFF_SEQUENCE, PNG_SEQUENCE), key=lambda f: f.name
    )
}
