"""The exceptions lazyexport raises for mistakes a user can fix.

Every one is an :class:`ExportError` with a one-line message in the user's terms (the axis
they named, the ROI they typed, the placeholder they misspelled). The command line prints it
as ``error: <message>`` and exits with status 2.

No message shows a secret: the user-info of a URL (``https://user:password@host/...``) is shown
as ``***`` (:func:`redact`), and storage options' values are never put into one.
"""

from __future__ import annotations

import re

# the user-info of a URL: everything between "scheme://" and the last "@" before the host ends
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s'\"]*)@")
# Azure's container@account: a name, not a credential
_CONTAINER_AT = ("az", "azure", "abfs", "abfss")


def _hide(match: re.Match) -> str:
    scheme = match["scheme"]
    if scheme[:-3].lower() in _CONTAINER_AT and ":" not in match["info"]:
        return match[0]
    return f"{scheme}***@"


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it (``user:password@``) shown as ``***@``:
    what messages, plans, progress lines, results and saved project files show of a URL."""
    return _USER_INFO.sub(_hide, text)


class ExportError(Exception):
    """Base class of every error lazyexport raises for bad input or a refused action.

    Its message never shows a URL's user-info (:func:`redact`).
    """

    def __str__(self) -> str:
        return redact(super().__str__())


class SourceError(ExportError):
    """The source cannot be found, opened or understood."""


class AxisError(ExportError):
    """Axis tags are malformed, duplicated, or do not fit the data."""


class RoiError(ExportError):
    """The cutout subregion does not fit the source."""


class SettingsError(ExportError):
    """An export setting is invalid (dtype, renormalize bounds, compression, ...)."""


class MemoryLimitError(SettingsError):
    """No way to export within the memory limit: one source chunk, output chunk or shard
    alone needs more (the message names it and the smallest limit that works)."""


class TemplateError(ExportError):
    """The output file template is invalid (unknown placeholder, missing {slice_index}, ...)."""


class FormatError(ExportError):
    """Unknown output format, or data the format cannot hold."""


class SchedulerError(ExportError):
    """The scheduler named is unknown, or the dask cluster at an address cannot be reached."""


class OutputExistsError(ExportError):
    """The output exists already and overwriting was not asked for."""


class OutputLocationError(ExportError):
    """The output cannot be written where it goes: a read-only or full file system, no
    permission, a file where a directory must be."""


class OutputBusyError(ExportError):
    """Another export that is running now writes the same output (a ``--resume`` of the same
    plan)."""


class NotExportedError(ExportError):
    """An exported output was asked for (e.g. the from-disk preview) but nothing was written yet."""


class ResumeError(ExportError):
    """An interrupted export cannot be resumed safely (e.g. it cannot be told whether the source
    changed)."""


class AlreadyComputedError(ExportError):
    """A ``compute=False`` export was computed again: it commits once, and a second computation
    leaves the output as the first left it."""


class ExportCancelled(ExportError):
    """The export was cancelled; its temporary output was removed."""
