"""Format options: settings that only some output formats read, each declared once.

An :class:`~lazyexport.declarations.Option` says everything about one option: its name (the key
of ``ExportSettings.options`` and of a project file's settings; with ``-`` for ``_``, its
command-line flag), what it is, its help text, its default, how a command-line text is read and
how a value is checked. Options are declared in :mod:`lazyexport.declarations`, with the formats
that read them (``Format.options``, a writer's ``options``); the settings, the command line,
project files, ``lazyexport formats`` and docs/formats.md take them from there. This module
checks given values against the registered writers' declarations.

The options lazyexport has always had (:data:`BUILTIN`: ``zarr_format``, ``shards``, ...) stay
:class:`~lazyexport.settings.ExportSettings` fields (their checks involve other settings); a
format lists those it reads in ``Capabilities.options``. ``tiff_flavor``, ``levels`` and
``downsample`` are declared by their formats, their values in ``options``; ``ExportSettings``
still takes them as keywords and shows them as fields (:data:`lazyexport.settings.MIRRORED`).

Invariants: an option's ``validate`` returns the normalized value or raises a one-line
:class:`~lazyexport.errors.SettingsError`; an option name is declared by one Option value
(writers that share an option share the value) and is no built-in's; a format that declares no
option of a name refuses it (:func:`refusal`), never ignores it. Nothing here knows the
registry: callers hand in the registered writers (:func:`lazyexport.settings.declared_options`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..declarations import BUILTIN, Option
from ..declarations import builtin as builtin  # (still named here)
from ..errors import SettingsError


def declared_by(writers: Iterable[Any]) -> dict[str, Option]:
    """Every option the ``writers`` declare (``Writer.options``), by name; a name declared by
    two different Option values, or a built-in's, is a programming error (ValueError)."""
    found: dict[str, Option] = {}
    reserved = {o.name for o in BUILTIN}
    for writer in writers:
        for option in writer.options:
            if option.name in reserved or found.get(option.name, option) != option:
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
