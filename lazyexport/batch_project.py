"""A project file's parts: its datasets and its settings as TOML writes them.

TOML has no null: ``[]`` stands for None (``renormalize = [[], [0, 255]]`` takes the input range
from the data), and a ROI with an open end is written in its text form (``"z=10:,x=:512"``);
:func:`settings_from_toml` and :func:`settings_to_toml` are each other's inverse on every
ExportSettings value. A dataset's entry names only known keys; a mistake names the entry (by
position and source).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .roi import format_roi_spec, parse_roi_text
from .settings import check_nickname
from .sources import split_path
from .sources.base import default_nickname
from .storage.names import relative

PROJECT_KEYS = ("settings", "datasets")
DATASET_KEYS = ("source", "nickname", "axes", "settings", "scene")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset of a project: its source (absolute, or relative to the project's directory),
    nickname, optional axis tags and per-dataset setting overrides (as in the project file)."""

    source: str
    nickname: str = ""
    axes: str | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scene: int | str | None = None  # a microscopy file's scene, by index or name

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source:
            raise SettingsError(
                f"a dataset's source must be one path or URL (text), got {self.source!r}; give "
                "each source its own [[datasets]] entry"
            )
        if self.nickname:
            check_nickname(self.nickname)
        else:
            object.__setattr__(self, "nickname", default_nickname(split_path(self.source)[0]))


def dataset_entry(entry: Dataset | Mapping[str, Any], index: int) -> Dataset:
    """Entry ``index`` of a project's datasets (a table as in the file, or a Dataset)."""
    if isinstance(entry, Dataset):
        return entry
    if not isinstance(entry, Mapping) or not entry.get("source"):
        raise SettingsError(f"dataset {index + 1} needs a source, got {entry!r}")
    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        raise SettingsError(
            f"dataset {index + 1} ({entry['source']}): unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(DATASET_KEYS)}"
        )
    overrides = entry.get("settings") or {}
    if not isinstance(overrides, Mapping):
        raise SettingsError(f"dataset {index + 1} ({entry['source']}): settings must be a table")
    try:
        return Dataset(
            entry["source"],
            entry.get("nickname") or "",
            entry.get("axes"),
            dict(overrides),
            entry.get("scene"),
        )
    except SettingsError as exc:
        raise SettingsError(f"dataset {index + 1}: {exc}") from None


def settings_from_toml(table: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as written in TOML -> ExportSettings fields (the ROI text form, ``[]`` for None).
    The formats' declared options are keys of their own (``demo_greeting = "hi"``, as
    :meth:`ExportSettings.from_dict` takes them): an ``options`` table is spread into them, so
    that a dataset's settings override the project's option by option."""
    out = dict(table)
    options = out.pop("options", None)
    if isinstance(options, Mapping):
        out = {**options, **out}
    elif options is not None:
        out["options"] = options  # (refused by the settings' check)
    if isinstance(out.get("roi"), str):
        out["roi"] = parse_roi_text(out["roi"])
    renorm = out.get("renormalize")
    if isinstance(renorm, (list, tuple)) and len(renorm) == 2 and renorm[0] in ([], ()):
        out["renormalize"] = [None, renorm[1]]
    return out


def settings_to_toml(settings: Mapping[str, Any]) -> dict[str, Any]:
    """ExportSettings fields -> TOML-ready values (no None: see :func:`settings_from_toml`;
    regions in the ROI text form)."""
    out = {k: v for k, v in settings.items() if v is not None and k != "options"}
    out.update({k: v for k, v in (settings.get("options") or {}).items() if v is not None})
    if isinstance(out.get("regions"), Mapping):
        out["regions"] = {n: format_roi_spec(r) for n, r in out["regions"].items()}
    roi = out.get("roi")
    if isinstance(roi, Mapping):
        if any(b is None for bounds in roi.values() for b in bounds):
            out["roi"] = format_roi_spec(roi)
        else:
            out["roi"] = {a: list(b) for a, b in roi.items()}
    renorm = out.get("renormalize")
    if renorm is not None:
        out["renormalize"] = [list(renorm[0]) if renorm[0] is not None else [], list(renorm[1])]
    return out


def relative_source(source: str, base: Path) -> str:
    """``source`` relative to ``base`` where it lies under it (URLs and others as they are)."""
    return relative(source, base)
