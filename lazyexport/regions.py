"""Many regions of one source in one run: ``regions={"cellA": {"z": (0, 10)}, ...}``,
``--roi`` given more than once, or ``--regions FILE``.

Each region is an export of its own (its own plan, output and atomic finish) through the output
template, where ``{region}`` is the region's name. What the regions share is the reading: a source
read unit (a file chunk) that more than one region reads is read whole and decoded once, kept
until the last region that reads it is done (:class:`SharedChunks`), within a byte limit.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import threading
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RoiError, SettingsError, TemplateError
from .formats import get_writer
from .roi import Bounds, normalize_roi_spec, parse_roi_text
from .template import default_template, fill_region

# (no dots: a name at the end of a template would be taken for a file extension)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")

Unit = tuple[int, ...]


def normalize_regions(regions: Any) -> dict[str, dict[str, Bounds]]:
    """Check ``{name: roi}`` (a ROI as a mapping or in the ``z=0:10,y=5:`` text form): names
    usable in a file name, unique, and ROIs of the right form (not yet their fit to a shape)."""
    if isinstance(regions, (str, bytes)) or not isinstance(regions, Mapping):
        raise RoiError(
            f"regions must map names to ROIs, e.g. {{'cellA': 'z=0:10'}}; got {regions!r}"
        )
    out: dict[str, dict[str, Bounds]] = {}
    for name, roi in regions.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise RoiError(
                f"region name {name!r} must be letters, digits, '_' or '-' (it goes into file "
                "names), starting with a letter or digit"
            )
        try:
            out[name] = parse_roi_text(roi) if isinstance(roi, str) else normalize_roi_spec(roi)
        except RoiError as exc:
            raise RoiError(f"region {name!r}: {exc}") from None
    if not out:
        raise RoiError("regions is empty; give at least one region")
    return out


def read_regions(path: str | Path) -> dict[str, dict[str, Bounds]]:
    """The regions of a file: CSV (a header ``name`` plus ``<axis>_start`` / ``<axis>_stop``
    columns, an empty cell for the axis's edge) or TOML (``name = "z=0:10,y=5:20"`` or
    ``name = {z = [0, 10]}``, at the top or under ``[regions]``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SettingsError(f"cannot read the regions file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"the regions file {path} is not UTF-8 text") from None
    if path.suffix.lower() == ".toml":
        return _toml_regions(path, text)
    if path.suffix.lower() != ".csv":
        raise SettingsError(f"the regions file {path} must be .csv or .toml")
    columns, rows = _csv_rows(path, text)
    regions: dict[str, dict[str, list[int | None]]] = {}
    for line, row in rows:
        name = (row.get("name") or "").strip()
        if name in regions:
            raise SettingsError(f"the regions file {path} names region {name!r} twice")
        regions[name] = _csv_roi(path, line, row, columns)
    return normalize_regions(regions)


def _toml_regions(path: Path, text: str) -> dict[str, dict[str, Bounds]]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"cannot read the regions file {path}: {exc}") from None
    if isinstance(table.get("regions"), dict):  # a [regions] table: nothing beside it
        if len(table) > 1:
            raise SettingsError(
                f"the regions file {path} has a [regions] table and other keys "
                f"({', '.join(k for k in table if k != 'regions')}): put every region in one"
            )
        table = table["regions"]
    return normalize_regions(table)


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A regions CSV file's axis columns, and its rows that are not empty (with line numbers)."""
    reader = csv.reader(text.splitlines())
    header = [c.strip() for c in next(reader, [])]
    if "name" not in header:
        raise SettingsError(
            f"the regions file {path} needs a header row: name,z_start,z_stop,y_start,..."
        )
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise SettingsError(f"the regions file {path} has column {twice[0]!r} twice")
    rows = []
    for line, cells in enumerate(reader, start=2):
        if len(cells) > len(header):
            raise SettingsError(
                f"the regions file {path}, line {line}: more cells than the header has columns"
            )
        if any(c.strip() for c in cells):
            rows.append((line, dict(zip(header, cells))))
    if not rows:
        raise SettingsError(f"the regions file {path} has a header but no regions")
    columns = [c for c in header if c != "name"]
    bad = [c for c in columns if not re.fullmatch(r"[a-zA-Z]_(start|stop)", c or "")]
    if bad:
        raise SettingsError(
            f"the regions file {path} has column {bad[0]!r}; columns are name and "
            "<axis>_start / <axis>_stop (e.g. z_start)"
        )
    return columns, rows


def _csv_roi(
    path: Path, line: int, row: dict[str, str], columns: list[str]
) -> dict[str, list[int | None]]:
    """One CSV row's ROI: [start, stop] per axis it bounds."""
    roi: dict[str, list[int | None]] = {}
    for column in columns:
        cell = (row.get(column) or "").strip()
        axis, edge = column[0].lower(), column[2:]
        pair = roi.setdefault(axis, [None, None])
        try:
            pair[edge == "stop"] = int(cell) if cell else None
        except ValueError:
            raise SettingsError(
                f"the regions file {path}, line {line}: {column} is {cell!r}, not a whole number"
            ) from None
    return {a: b for a, b in roi.items() if b != [None, None]}


def region_settings(settings: Any) -> list[tuple[str, Any]]:
    """One :class:`~lazyexport.settings.ExportSettings` per region: its ROI, and the output
    template with ``{region}`` filled in (the default template gets ``_{region}``)."""
    sequence = get_writer(settings.format).capabilities.sequence
    template = settings.output or default_template(bool(settings.result_type), sequence, True)
    return [
        (name, settings.replace(roi=roi or None, regions=None, output=fill_region(template, name)))
        for name, roi in settings.regions.items()
    ]


def check_distinct(outputs: Sequence[tuple[str, str]], template: str | None) -> None:
    """Refuse regions whose outputs would be the same file (a template without ``{region}``,
    ``{roi}`` or a position placeholder that tells them apart)."""
    seen: dict[str, str] = {}
    for name, where in outputs:
        if where in seen:
            raise TemplateError(
                f"regions {seen[where]!r} and {name!r} would both write {where}: put {{region}} "
                f"(or {{roi}}) in the output template {template!r}"
            )
        seen[where] = name


class SharedChunks:
    """A reader of the source for the regions of one run: a read unit (file chunk) that more
    than one region reads is read whole once and kept until the last of them is
    :meth:`done`, while the kept units fit in ``limit`` bytes (beyond it a unit is read for each
    region again, and :attr:`again` counts it). Other reads go straight to ``reader``.

    Picklable: a copy in another process (a cluster's worker) reads straight through."""

    def __init__(
        self,
        reader: Any,
        bounds: Sequence[Sequence[int]],
        dtype: np.dtype,
        regions: Sequence[tuple[slice, ...]],
        limit: int,
        most: int | None = None,
    ):
        self.reader, self.bounds, self.dtype, self.limit = reader, bounds, np.dtype(dtype), limit
        self.wrapped = reader  # what the cost model reads through
        # in read-unit indices: a unit is shared where the unit spans of two regions meet
        spans = [[self._span(i, s.start, s.stop) for i, s in enumerate(r)] for r in regions]
        meets: dict[tuple[int, int], list[range]] = {}
        for (i, a), (j, b) in itertools.combinations(enumerate(spans), 2):
            both = [range(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b)]
            if all(both):
                meets[i, j] = both
        # (counted without listing them: beyond ``most`` none are tracked, and nothing shared)
        self.overlapping = sum(math.prod(map(len, m)) for m in meets.values())
        self.regions: list[set[Unit]] = [set() for _ in regions]
        if most is None or self.overlapping <= most:
            for (i, j), both in meets.items():
                units = set(itertools.product(*both))
                self.regions[i] |= units
                self.regions[j] |= units
        self.users = Counter(u for units in self.regions for u in units)
        self.kept: dict[Unit, np.ndarray] = {}
        self.loading: dict[Unit, threading.Event] = {}
        self.lock = threading.Lock()
        self.held = 0
        self.again = 0  # reads of shared units beyond the first (the limit was reached)
        self.read: set[Unit] = set()

    @property
    def shared(self) -> int:
        """How many read units more than one region reads."""
        return len(self.users)

    def __getstate__(self) -> dict:
        return {"reader": self.reader, "wrapped": self.reader, "users": Counter()}

    def _span(self, axis: int, lo: int, hi: int) -> range:
        edges = self.bounds[axis]
        first = int(np.searchsorted(edges, lo, side="right")) - 1
        last = int(np.searchsorted(edges, hi, side="left"))
        return range(first, last)

    def _units(self, key: tuple[slice, ...]) -> list[Unit]:
        return list(itertools.product(*(self._span(i, s.start, s.stop) for i, s in enumerate(key))))

    def _unit_key(self, unit: Unit) -> tuple[slice, ...]:
        return tuple(slice(e[i], e[i + 1]) for e, i in zip(self.bounds, unit))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        users = self.users
        units = self._units(key) if users else []
        if not any(u in users for u in units):
            return np.asarray(self.reader[key])
        out = np.empty(tuple(s.stop - s.start for s in key), dtype=self.dtype)
        for unit in units:
            whole = self._unit_key(unit)
            part = tuple(
                slice(max(s.start, w.start), min(s.stop, w.stop)) for s, w in zip(key, whole)
            )
            into = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, key))
            if unit in users:
                data = self._get(unit, whole)
                out[into] = data[
                    tuple(slice(p.start - w.start, p.stop - w.start) for p, w in zip(part, whole))
                ]
            else:
                out[into] = self.reader[part]
        return out

    def _get(self, unit: Unit, whole: tuple[slice, ...]) -> np.ndarray:
        """The shared unit, read whole by the first that asks (the others wait for it)."""
        while True:
            with self.lock:
                if unit in self.kept:
                    return self.kept[unit]
                waiting = self.loading.get(unit)
                if waiting is None:
                    self.loading[unit] = threading.Event()
            if waiting is None:
                break
            waiting.wait()
        try:
            data = np.asarray(self.reader[whole])
            with self.lock:
                if unit in self.read:
                    self.again += 1
                self.read.add(unit)
                if self.held + data.nbytes <= self.limit and self.users[unit] > 0:
                    self.kept[unit] = data
                    self.held += data.nbytes
            return data
        finally:
            with self.lock:
                self.loading.pop(unit).set()

    def done(self, index: int) -> None:
        """Region ``index`` (in the order given) is exported: release the units it read."""
        with self.lock:
            for unit in self.regions[index]:
                self.users[unit] -= 1
                if self.users[unit] <= 0:
                    data = self.kept.pop(unit, None)
                    if data is not None:
                        self.held -= data.nbytes
