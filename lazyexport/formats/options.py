"""Format options: settings that only some output formats read, each declared once.

An :class:`Option` says everything about one option: its name (the key of
``ExportSettings.options`` and of a project file's settings; with ``-`` for ``_``, its
command-line flag), what it is, its help text, its default, how a command-line text is read and
how a value is checked. A writer declares the options it reads in ``Writer.options``; the
settings, the command line, project files, ``lazyexport formats`` and docs/formats.md take them
from there, so a new option touches its writer (and its docs) only.

The options lazyexport has always had (:data:`BUILTIN`: ``zarr_format``, ``shards``, ...) are
declared here too and stay :class:`~lazyexport.settings.ExportSettings` fields (their checks
involve other settings); a writer lists those it reads in ``Capabilities.options``. Some have
moved to their writers: ``tiff_flavor`` (:mod:`lazyexport.formats.tiff`), ``levels`` and
``downsample`` (:mod:`lazyexport.formats.pyramid`) are declared there, their values in
``options``; ``ExportSettings`` still takes them as keywords and shows them as fields
(:data:`lazyexport.settings.MIRRORED`).

Invariants: an option's :meth:`Option.validate` returns the normalized value or raises a
one-line :class:`~lazyexport.errors.SettingsError`; an option name is declared by one Option
value (writers that share an option share the value) and is no built-in's; a format that
declares no option of a name refuses it (:func:`refusal`), never ignores it. Nothing here
knows the registry: callers hand in the registered writers
(:func:`lazyexport.settings.declared_options`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import SettingsError


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


def builtin(name: str) -> Option:
    """The built-in option ``name``."""
    return next(o for o in BUILTIN if o.name == name)


def declared_by(writers: Iterable[Any]) -> dict[str, Option]:
    """Every option the ``writers`` declare (``Writer.options``), by name; a name declared by
    two different Option values, or a built-in's, is a programming error (ValueError)."""
    found: dict[str, Option] = {}
    builtin = {o.name for o in BUILTIN}
    for writer in writers:
        for option in writer.options:
            if option.name in builtin or found.get(option.name, option) != option:
                raise ValueError(
                    f"format {writer.name} declares option {option.name!r}, which is already "
                    "declared otherwise"
                )
            found[option.name] = option
    return found


def users(name: str, writers: Iterable[Any]) -> list[str]:
    """The formats of ``writers`` that read the option ``name``."""
    return [w.name for w in writers if name in w.capabilities.options]


def refusal(option: Option, fmt: str, writers: Iterable[Any]) -> SettingsError:
    """The one-line error for ``option`` given with the format ``fmt``, which does not read it
    (``writers``: every registered format's)."""
    found = users(option.name, writers)
    those = "that format" if len(found) == 1 else "one of those"
    return SettingsError(
        f"{option.name} ({option.flag}: {option.what}) does not apply to format {fmt}, only to "
        f"{', '.join(found)}; drop it or choose {those}"
    )


def check_declared(given: Mapping[str, Any], writer: Any, writers: Iterable[Any]) -> dict[str, Any]:
    """The declared options ``given`` (name -> value) checked for ``writer``: each must be
    declared by one of ``writers`` (every registered format's), valid, and read by ``writer``'s
    format; None values are left out."""
    writers = list(writers)
    known = declared_by(writers)
    out = {}
    for name, value in given.items():
        if name not in known:
            raise SettingsError(
                f"unknown format option {name!r}; known: {', '.join(sorted(known)) or 'none'}"
            )
        if value is None:
            continue
        out[name] = known[name].validate(value)
        if name not in writer.capabilities.options:
            raise refusal(known[name], writer.name, writers)
    return out


def values_for(writer: Any, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """What ``writer`` reads: each option it declares, as given, else its default."""
    given = given or {}
    return {o.name: given.get(o.name, o.default) for o in writer.options}
