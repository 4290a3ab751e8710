"""ExportSettings: everything that says what to export and how, validated on construction."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .axes import parse_axes
from .declarations import DOWNSAMPLE_METHODS as DOWNSAMPLE_METHODS
from .declarations import TIFF_FLAVORS as TIFF_FLAVORS
from .errors import SettingsError
from .formats.options import (
    Option,
    builtin,
    check_declared,
    declared_by,
    refusal,
)
from .formats.spec import ZarrFormat
from .regions import normalize_regions
from .roi import Bounds, normalize_roi_spec
from .units import parse_pixel_size, parse_unit

Range = tuple[float, float]
# an input range: numbers, or percentiles of the data (``"p99.9"``) until the plan computes them
InRange = tuple[float | str, float | str]
# The levels each codec takes (the codecs of every format; one without an entry has no level).
COMPRESSION_LEVELS = {
    "gzip": (0, 9),
    "zlib": (0, 9),
    "zstd": (1, 22),
    "blosc": (0, 9),
    "blosc-bitshuffle": (0, 9),
    "lzma": (0, 9),
    "deflate": (0, 9),
}


def percentile_of(bound: Any) -> float | None:
    """The percentile a renormalize input bound names (``"p99.9"`` -> 99.9), else None."""
    if isinstance(bound, str) and bound.strip().lower().startswith("p"):
        try:
            q = float(bound.strip()[1:])
        except ValueError:
            raise SettingsError(
                f"renormalize bound {bound!r} is not a percentile like p0.1 or p99.9"
            ) from None
        if not 0 <= q <= 100:
            raise SettingsError(f"renormalize percentile {bound!r} is outside p0..p100")
        return q
    return None


# defaults a release before this one had, still taken as "not set" from Python (tiff_flavor
# was "plain"; None now lets an .ome.tif name choose OME-TIFF): code that passed them stays valid
_FORMER_DEFAULTS = {"tiff_flavor": "plain"}

# options a writer declares (Writer.options, its value in ``options``) that were fields before:
# still taken as keywords and shown as fields (the field mirrors ``options``); never both ways
MIRRORED = ("tiff_flavor", "levels", "downsample")


def check_nickname(nickname: Any) -> str:
    """A nickname given (it goes into file names through ``{nickname}``): no ``/``, ``\\`` or
    ``..``, which would put the output in another directory."""
    if not isinstance(nickname, str) or not nickname.strip():
        raise SettingsError(f"a nickname must be a non-empty text, got {nickname!r}")
    if "/" in nickname or "\\" in nickname or nickname.strip() == "..":
        raise SettingsError(
            f"nickname {nickname!r} must not contain '/', '\\' or '..': it goes into file names"
        )
    return nickname


def _parse_range(value: Any, what: str) -> Any:
    """Two finite numbers; an input range may also name percentiles of the data (``"p0.1"``),
    kept as text until the plan computes them."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise SettingsError(
            f"renormalize {what} range must be two numbers [min, max], got {value!r}"
        )
    out: list[Any] = []
    for v in value:
        q = percentile_of(v) if what == "input" else None
        if q is not None:
            out.append(f"p{q!r}".removesuffix(".0"))  # every digit given
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise SettingsError(
                f"renormalize {what} range must be two numbers"
                + (" or percentiles (p0.1)" if what == "input" else "")
                + f", got {value!r}"
            ) from None
        if not math.isfinite(out[-1]):
            raise SettingsError(f"renormalize {what} range must be finite, got {value!r}")
    if all(isinstance(v, str) for v in out) and float(out[0][1:]) > float(out[1][1:]):
        low, high = out
        raise SettingsError(
            f"renormalize input range [{low}, {high}]: the first percentile must be below the "
            f"second, e.g. {high},{low} (to invert the values, swap the output range)"
        )
    return (out[0], out[1])


def parse_dtype(value: Any) -> str:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise SettingsError(f"unknown data type {value!r} (e.g. uint8, uint16, float32)") from None
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise SettingsError(
            f"cannot export to data type {dtype}: choose bool, (u)int8..64 or float16/32/64"
        )
    return dtype.name


def _axis_lengths(value: Any, what: str) -> dict[str, int]:
    """``{"z": 32, ...}`` checked: axis letters to positive whole numbers (chunks, shards)."""
    if not isinstance(value, Mapping):
        raise SettingsError(f"{what}s must map axis letters to lengths, got {value!r}")
    lengths = {}
    for axis, length in value.items():
        letters = parse_axes(str(axis))
        if len(letters) != 1:
            raise SettingsError(
                f"{what} lengths are given per axis, one letter each, like z=32; got {axis!r}"
            )
        (letter,) = letters
        if letter in lengths:
            raise SettingsError(f"{what} length for axis {letter!r} is given twice")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise SettingsError(
                f"{what} length for axis {letter!r} must be a positive whole number, got {length!r}"
            )
        lengths[letter] = length
    return lengths


def registered_writers() -> list[Any]:
    """A writer of every registered format."""
    from .formats import formats, get_writer

    return [get_writer(f) for f in formats()]


def declared_options() -> dict[str, Option]:
    """Every option the registered formats declare (``Writer.options``), by name."""
    return declared_by(registered_writers())


def _check_format_options(
    settings: ExportSettings, writer: Any, given: tuple[str, ...] = ()
) -> None:
    """Refuse a setting only some formats use (``FORMAT_OPTIONS``) where ``writer``'s format does
    not use it -- one given a value other than its default, or named in ``given`` (set
    explicitly, e.g. on the command line) -- never silently ignored."""
    from .formats.options import BUILTIN

    defaults = {f.name: f.default for f in dataclasses.fields(settings)}
    for option in BUILTIN:
        name = option.name
        unset = (defaults[name], _FORMER_DEFAULTS.get(name, defaults[name]))
        if name in writer.capabilities.options or (
            getattr(settings, name) in unset and name not in given
        ):
            continue
        raise refusal(option, writer.name, registered_writers())


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What to export and how.

    Every field is optional; the defaults export the whole source unchanged as HDF5 next to it.
    Settings are checked when they are made: a bad value raises
    :class:`~lazyexport.errors.SettingsError` naming it.

    Parameters
    ----------
    roi : mapping of str to (int or None, int or None), optional
        The cutout: ``{axis: (start, stop)}``, stop exclusive, None for the start or end of the
        axis. Data outside it is not read.
    renormalize : ((float, float) or None, (float, float)), optional
        ``((in_min, in_max), (out_min, out_max))``: a linear map of values; ``in`` may be None
        for the data's min/max inside the ROI, and either input bound a percentile of the data
        inside the ROI (``("p0.1", "p99.9")``), computed in one bounded pass when the export is
        planned (docs/usage.md says how exact).
    dtype : str, optional
        Convert to this numpy dtype (to integers: rounded half to even and clipped).
    axis_order : str, optional
        The output's axis order, e.g. ``"czyx"``; missing axes are added with length 1.
    format : str, default "hdf5"
        An output format name (``lazyexport formats`` lists them).
    output : str, optional
        The output template (placeholders in docs/usage.md); None: the format's default next to
        the source.
    compression : str, optional
        The writer's codec (None: its default).
    compression_level : int, optional
        The codec's level (None: its default).
    chunks : mapping of str to int, optional
        Output chunk length per axis, e.g. ``{"z": 32}`` (others: chosen for the format and the
        source).
    result_type : str, optional
        A label for ``{result_type}``, e.g. ``"Probabilities"``.
    zarr_format : {3, 2}
        The Zarr version of Zarr and OME-Zarr outputs.
    pixel_size : mapping of str to float, optional
        Physical size of a pixel per spatial axis, e.g. ``{"z": 0.5, "y": 0.1, "x": 0.1}``
        (default: what the source carries).
    unit : str, optional
        The unit of ``pixel_size``, e.g. ``"micrometer"``.
    levels : int, optional
        OME-Zarr pyramid levels (None: until the smallest level fits 512x512).
    downsample : {"mean", "mode", "nearest", "gaussian"}, optional
        How pyramid levels are made: ``"mean"`` (the default: intensities), ``"mode"`` (label
        images keep their labels; the default when ``result_type`` names labels, e.g.
        ``"Labels"``, ``"Simple Segmentation"``, and with ``segment`` or ``threshold``),
        ``"nearest"`` or ``"gaussian"`` (anti-aliased). Which axes each level halves:
        ``options={"downsample_axes": "y,x"}``.
    tiff_flavor : {"plain", "imagej", "ome"}, optional
        Multipage TIFF metadata: plain, ImageJ hyperstack or OME-TIFF (None: OME-TIFF for an
        output named ``.ome.tif`` or ``.ome.tiff``, else plain).
    shards : mapping of str to int or "auto" or "none", optional
        Zarr v3 sharding, for outputs of many small chunks: shard length per axis, e.g.
        ``{"z": 64, "y": 1024, "x": 1024}`` (rounded up to whole chunks, one shard across an
        axis at most; axes not named: one chunk), or ``"auto"``: one shard per block the memory
        budget allows, or ``"none"``. None: the format's default (ome-zarr on Zarr v3: shards
        of about 32 MiB, see docs/formats.md; zarr: no sharding).
    regions : mapping of str to ROI, optional
        Several cutouts of the source in one run, by name: ``{"cellA": {"z": (0, 10)}, "cellB":
        "z=5:20,y=0:64"}`` (instead of ``roi``). Each is exported to its own output through the
        template, where ``{region}`` is its name; source chunks that several regions read are
        read once (docs/usage.md, "Many regions").

    bin : mapping of str to int, optional
        Binning: each window of this many pixels per axis becomes one, e.g. ``{"z": 2, "y": 4,
        "x": 4}`` (docs/usage.md, "Steps"); pixel sizes multiply by the factors.
    bin_method : {"mean", "max", "min", "mode", "nearest"}, optional
        How a window becomes one pixel (None: ``"mean"``; ``"mode"`` for labels).
    smooth : mapping of str to float or str, optional
        Gaussian smoothing: sigma per axis in pixels, or a length where the source has pixel
        sizes, e.g. ``{"y": 2, "x": "0.5um"}`` (docs/usage.md, "Smooth"); float32 output.
    segment : str, optional
        ``"argmax:c"``: a label image, 1 + the index of each pixel's largest channel along
        ``c`` (0 where all are NaN); the axis disappears (docs/usage.md, "Segment and threshold").
    threshold : str, optional
        ``"c=1:>0.5"``: a mask, 1 where channel 1 along ``c`` is above 0.5 (also ``>=``, ``<``,
        ``<=``), else 0; the axis disappears.
    step_order : sequence of str, optional
        The order of the steps these settings ask for (docs/usage.md, "Steps"), by name; None:
        their default order. The command line sets it to the order its options were given.
    options : mapping of str to value, optional
        The options a format declares beyond the fields above (``lazyexport formats`` lists
        them; docs/formats.md, "Format options"), by name, e.g. ``{"demo_greeting": "hi"}``;
        each is checked by its declaration.

    Notes
    -----
    An option the chosen format does not use (``levels`` for HDF5, ``tiff_flavor`` for Zarr,
    ...) is refused, never ignored.
    """

    roi: Mapping[str, Bounds] | None = None
    renormalize: tuple[InRange | None, Range] | None = None
    dtype: str | None = None
    axis_order: str | None = None
    format: str = "hdf5"
    output: str | None = None
    compression: str | None = None
    compression_level: int | None = None
    chunks: Mapping[str, int] | None = None
    result_type: str | None = None
    zarr_format: ZarrFormat = 3
    pixel_size: Mapping[str, float] | None = None
    unit: str | None = None
    levels: int | None = None
    downsample: str | None = None
    tiff_flavor: str | None = None
    shards: Mapping[str, int] | str | None = None
    regions: Mapping[str, Mapping[str, Bounds] | str] | None = None
    bin: Mapping[str, int] | None = None
    bin_method: str | None = None
    smooth: Mapping[str, float | str] | str | None = None
    segment: str | None = None
    threshold: str | None = None
    step_order: Sequence[str] | None = None
    options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        from .formats import get_writer  # the registry validates format names

        # one check per concern, in this order: a test or a user sees the first mistake first
        _set(self, "roi", normalize_roi_spec(self.roi) or None)
        _check_regions(self)
        _check_transforms(self)
        _check_steps(self)
        writer = get_writer(self.format)
        _set(self, "format", writer.name)
        _check_compression(self, writer)
        _check_layout(self)
        _check_metadata(self)
        # (after each value is checked: a wrong value says so first)
        _check_format_options(self, writer)
        _mirror_into_options(self, writer)
        _check_declared_options(self, writer)
        for name in MIRRORED:  # the field shows the checked value
            _set(self, name, (self.options or {}).get(name, getattr(self, name)))

    def check_given(self, given: tuple[str, ...]) -> None:
        """Refuse format options in ``given`` (set explicitly, whatever their value) that this
        format does not use."""
        from .formats import get_writer

        _check_format_options(self, get_writer(self.format), given)

    def replace(self, **changes: Any) -> ExportSettings:
        options = dict(changes.get("options", self.options) or {})
        for name in MIRRORED:  # the one given now replaces the other form of it
            if name in changes:
                options.pop(name, None)
            elif name in options and "options" in changes:
                changes[name] = None
            elif name in options:
                options.pop(name)  # (the field holds it)
        return dataclasses.replace(self, **{**changes, "options": options or None})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples; None fields left out), for JSON or TOML."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == field.default:
                continue
            if field.name == "roi":
                value = {a: list(b) for a, b in value.items()}
            elif field.name == "regions":
                value = {n: {a: list(b) for a, b in r.items()} for n, r in value.items()}
            elif field.name == "step_order":
                value = list(value)
            elif field.name == "renormalize":
                value = [list(value[0]) if value[0] is not None else None, list(value[1])]
            elif field.name == "options":  # (a mirrored option is its own key, as before)
                value = {k: v for k, v in value.items() if k not in MIRRORED}
                if not value:
                    continue
            elif field.name in ("chunks", "pixel_size", "bin") or (
                field.name == "shards" and value not in ("auto", "none")
            ):
                value = dict(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        declared = set(declared_options()) - known
        options = set(data) & declared  # a format's option, by its name
        unknown = sorted(set(data) - known - options)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known | declared))}"
            )
        values = {k: v for k, v in data.items() if k not in options}
        if options:
            values["options"] = {**(values.get("options") or {}), **{k: data[k] for k in options}}
        if values.get("roi") is not None:
            values["roi"] = {a: tuple(b) for a, b in values["roi"].items()}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExportSettings:
        return cls.from_dict(json.loads(text))


def _set(settings: ExportSettings, name: str, value: Any) -> None:
    """Store a normalized value on the frozen settings (only during ``__post_init__``)."""
    object.__setattr__(settings, name, value)


def _mirror_into_options(s: ExportSettings, writer: Any) -> None:
    """A :data:`MIRRORED` option given as a keyword goes into ``options``; given both ways with
    two values, it is refused. A former default given for a format that does not read it is
    taken as not set (``_FORMER_DEFAULTS``)."""
    if s.options is not None and not isinstance(s.options, Mapping):
        return  # (refused by the options' own check)
    options = dict(s.options or {})
    for name in MIRRORED:
        keyword, given = getattr(s, name), options.get(name)
        if keyword is None:
            continue
        if given is not None and given != keyword:
            raise SettingsError(
                f"{name} is given twice, {keyword!r} and {given!r} in options: give it once"
            )
        if name not in writer.capabilities.options and keyword == _FORMER_DEFAULTS.get(name):
            continue
        options[name] = keyword
    _set(s, "options", options or None)


def _check_declared_options(s: ExportSettings, writer: Any) -> None:
    """The options formats declare (``options``): each known, valid and read by this format."""
    if s.options is not None:
        if not isinstance(s.options, Mapping):
            raise SettingsError(f"options must map option names to values, got {s.options!r}")
        _set(s, "options", check_declared(s.options, writer, registered_writers()) or None)


def _check_regions(s: ExportSettings) -> None:
    """Normalize ``regions``; refuse them beside a ``roi``."""
    if s.regions is not None:
        _set(s, "regions", normalize_regions(s.regions))
        if s.roi:
            raise SettingsError("give roi or regions, not both (each region has its ROI)")


def _check_renormalize(pair: Any) -> tuple[InRange | None, Range]:
    """The renormalize pair as ``(input range or None, output range)``."""
    if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
        raise SettingsError(
            f"renormalize must be ((in_min, in_max), (out_min, out_max)), got {pair!r}"
        )
    in_range = None if pair[0] is None else _parse_range(pair[0], "input")
    out_range = _parse_range(pair[1], "output")
    if in_range is not None and in_range[0] == in_range[1]:
        low, high = (f"{v:g}" if isinstance(v, float) else v for v in in_range)
        raise SettingsError(f"renormalize input range [{low}, {high}] is empty (min == max)")
    return in_range, out_range


def _check_transforms(s: ExportSettings) -> None:
    """Normalize renormalize, dtype and axis order (the transformations of the data)."""
    if s.renormalize is not None:
        _set(s, "renormalize", _check_renormalize(s.renormalize))
    if s.dtype is not None:
        _set(s, "dtype", parse_dtype(s.dtype))
    if s.axis_order is not None:
        _set(s, "axis_order", "".join(parse_axes(s.axis_order)))


def _check_steps(s: ExportSettings) -> None:
    """The steps beyond ilastik's three (:mod:`lazyexport.step_settings`) and their order (kept
    only where it is not the default one, so equal exports have equal settings)."""
    from .step_settings import check_steps

    order = s.step_order
    if isinstance(order, str):  # "bin,smooth"
        order = [n.strip() for n in order.split(",") if n.strip()]
    if order is not None and (
        not isinstance(order, (list, tuple)) or not all(isinstance(n, str) for n in order)
    ):
        raise SettingsError(
            f"step_order must name steps, e.g. ['bin', 'smooth'] or 'bin,smooth', not {order!r}"
        )
    _set(s, "step_order", tuple(order) if order else None)
    _set(s, "step_order", check_steps(s))


def _check_compression(s: ExportSettings, writer: Any) -> None:
    """The codec must be one of the writer's; a level must be a whole number in the codec's
    range, and only for a codec that has levels."""
    if s.compression is not None:
        _set(s, "compression", str(s.compression).lower())
        if s.compression not in writer.capabilities.compressions:
            raise SettingsError(
                f"format {writer.name} has no compression {s.compression!r}; "
                f"choose one of {', '.join(writer.capabilities.compressions)}"
            )
    if s.compression_level is not None:
        _check_compression_level(s, writer)


def _check_compression_level(s: ExportSettings, writer: Any) -> None:
    level = s.compression_level
    if isinstance(level, bool) or not isinstance(level, int):
        raise SettingsError(f"compression level must be a whole number, got {level!r}")
    codec = writer.compression(s.compression)
    default = "" if s.compression else f" (the default of format {writer.name})"
    if codec not in COMPRESSION_LEVELS:
        leveled = [c for c in writer.capabilities.compressions if c in COMPRESSION_LEVELS]
        raise SettingsError(
            f"compression {codec!r}{default} has no level; drop the level"
            + (f" or choose a compression with one: {', '.join(leveled)}" if leveled else "")
        )
    lo, hi = COMPRESSION_LEVELS[codec]
    if not lo <= level <= hi:
        raise SettingsError(
            f"compression level {level} is out of range for {codec}{default}; give {lo} to {hi}"
        )


def _check_layout(s: ExportSettings) -> None:
    """Chunks, Zarr version and shards (shards need Zarr v3)."""
    if s.chunks is not None:
        _set(s, "chunks", _axis_lengths(s.chunks, "chunk"))
    builtin("zarr_format").validate(s.zarr_format)
    if s.shards is None:
        return
    if isinstance(s.shards, str) and s.shards.lower() == "none":  # no shards (not the default)
        _set(s, "shards", "none")
        return
    if s.zarr_format != 3:
        raise SettingsError("shards need zarr_format 3; Zarr v2 has no sharding")
    if isinstance(s.shards, str):
        if s.shards.lower() != "auto":
            raise SettingsError(
                f"shards must be 'none', 'auto' or map axis letters to lengths, got {s.shards!r}"
            )
        _set(s, "shards", "auto")
        return
    _set(s, "shards", _axis_lengths(s.shards, "shard"))
    if not s.shards:
        raise SettingsError("shards needs a length for at least one axis, or 'auto'")


def _check_metadata(s: ExportSettings) -> None:
    """Normalize pixel size and unit."""
    if s.pixel_size is not None:
        _set(s, "pixel_size", parse_pixel_size(s.pixel_size) or None)
    if s.unit is not None:
        _set(s, "unit", parse_unit(s.unit))
