"""Many datasets by nickname: a project file with shared settings and per-dataset overrides.

A project is a TOML file::

    [settings]                      # shared: any ExportSettings field
    format = "hdf5"
    output = "{dataset_dir}/{nickname}_export.h5/exported_data"
    roi = { z = [0, 10] }           # or the command line form: roi = "z=0:10,x=:512"

    [[datasets]]
    source = "data/a.h5/volume"     # relative paths start at the project file's directory
    nickname = "a"                  # default: the source file name without extension
    axes = "zyx"                    # optional, overrides the file's axis tags
    [datasets.settings]             # optional: overrides of any shared setting
    dtype = "uint16"

A per-dataset setting replaces the shared one as a whole (an overriding ``roi`` replaces the
whole shared ``roi``). How TOML writes None and open ROIs: :mod:`lazyexport.batch_project`.

:class:`Batch` lists the datasets with their outputs, exports one, some or all of them (one
failing does not stop the others unless ``fail_fast``), and deletes exactly what it writes.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .axes import names
from .batch_project import (
    PROJECT_KEYS,
    Dataset,
    dataset_entry,
    relative_source,
    settings_from_toml,
    settings_to_toml,
)
from .errors import ExportCancelled, ExportError, SettingsError, redact
from .execution.fronts import plan_jobs, run_jobs
from .execution.regions import RegionPlans
from .plan import ExportPlan, holds
from .run import (
    ExportResult,
    NamedProgress,
    RegionResults,
    clean_outputs,
    scheduler_session,
)
from .settings import ExportSettings
from .sources import open_source, split_path
from .storage.names import absolute, remove_empty_parents

BatchProgress = NamedProgress  # (nickname, progress)
BatchDone = Callable[[str, "ExportResult | Exception"], Any]


@dataclasses.dataclass(frozen=True)
class Row:
    """A line of :meth:`Batch.list`: where a dataset's export goes and whether it exists."""

    nickname: str
    source: str  # the source, its axes, shape and dtype
    output: str  # the output location ("?" if it cannot be planned)
    exists: bool
    error: str | None = None


@dataclasses.dataclass
class BatchReport:
    """What an export of several datasets did: results and failures by nickname, and the
    nicknames not attempted because an earlier one failed with ``fail_fast``."""

    results: dict[str, ExportResult | RegionResults] = dataclasses.field(default_factory=dict)
    failures: dict[str, Exception] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.skipped

    def summary(self) -> str:
        lines = [
            f"{len(self.results)} exported, {len(self.failures)} failed"
            + (f", {len(self.skipped)} not attempted" if self.skipped else "")
        ]
        lines += [f"  FAILED {nick}: {reason(exc)}" for nick, exc in self.failures.items()]
        if self.skipped:
            lines.append(f"  not attempted (--fail-fast): {', '.join(self.skipped)}")
        return "\n".join(lines)


@dataclasses.dataclass
class DeleteReport:
    """What :meth:`Batch.delete_all` removed, and the datasets it left alone (with why)."""

    removed: list[str] = dataclasses.field(default_factory=list)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


def reason(exc: BaseException) -> str:
    """One line saying why an export failed, in the user's terms where possible."""
    return str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"


class Batch:
    """Many datasets exported with shared settings, each by its nickname.

    See the module docstring (and docs/batch.md) for the project file.

    Parameters
    ----------
    settings : ExportSettings or mapping, optional
        The settings every dataset shares (an :class:`ExportSettings` or a mapping of its
        fields); a dataset's own settings override them field by field.
    datasets : iterable of Dataset or mapping
        The datasets: ``source``, and optionally ``nickname``, ``axes`` and ``settings``.
    base_dir : str or os.PathLike, optional
        Where relative sources start (a project file's directory); default: the working
        directory.

    Raises
    ------
    SettingsError
        For duplicate nicknames or settings a dataset cannot be exported with.
    """

    def __init__(
        self,
        settings: ExportSettings | Mapping[str, Any] | None,
        datasets: Iterable[Dataset | Mapping[str, Any]],
        base_dir: str | os.PathLike | None = None,
    ):
        if isinstance(settings, ExportSettings):
            settings = settings.to_dict()
        self.settings: dict[str, Any] = settings_from_toml(settings or {})
        self.base_dir = Path(base_dir or os.getcwd()).resolve()
        self.datasets: list[Dataset] = [dataset_entry(d, i) for i, d in enumerate(datasets)]
        counts = Counter(d.nickname for d in self.datasets)
        duplicates = [n for n, k in counts.items() if k > 1]
        if duplicates:
            listing = "; ".join(
                f"{n!r} ({', '.join(d.source for d in self.datasets if d.nickname == n)})"
                for n in duplicates
            )
            raise SettingsError(
                f"duplicate nickname(s) {listing}: give each dataset a unique nickname"
            )
        for d in self.datasets:
            self.settings_for(d.nickname)  # every dataset's settings are valid, or fail now

    # -- reading and writing project files ---------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Batch:
        """Read a project file.

        Parameters
        ----------
        path : str or os.PathLike
            The TOML project file; its sources are relative to its directory.

        Returns
        -------
        Batch
            The project.

        Raises
        ------
        SettingsError
            For a missing or unreadable file, or invalid settings (named with the file).
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"project file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read project file {path}: {exc}") from None
        try:
            return cls.from_dict(data, base_dir=path.resolve().parent)
        except ExportError as exc:
            raise type(exc)(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Batch:
        unknown = sorted(set(data) - set(PROJECT_KEYS))
        if unknown:
            raise SettingsError(
                f"unknown project key(s) {', '.join(unknown)}; known: {', '.join(PROJECT_KEYS)}"
            )
        datasets = data.get("datasets", [])
        if not isinstance(datasets, list) or not datasets:
            raise SettingsError("a project needs at least one [[datasets]] entry with a source")
        return cls(data.get("settings", {}), datasets, base_dir=base_dir)

    def to_dict(self, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """Plain TOML-ready data; sources under ``base_dir`` (default: this batch's) are
        relative."""
        base = Path(base_dir).resolve() if base_dir is not None else self.base_dir
        datasets = []
        for d in self.datasets:
            entry: dict[str, Any] = {
                "source": relative_source(self.source_path(d), base),
                "nickname": d.nickname,
            }
            if d.axes:
                entry["axes"] = d.axes
            if d.scene is not None:
                entry["scene"] = d.scene
            if d.settings:
                entry["settings"] = settings_to_toml(d.settings)
            datasets.append(entry)
        return {"settings": settings_to_toml(self.settings), "datasets": datasets}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the project to a TOML file.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; sources below its directory are written relative to it. A URL's
            user-info (``user:password@``) is written as ``***@``: credentials are not saved.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        import tomli_w

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a URL's user-info (user:password@) is never saved: credentials go in the environment
        text = redact(tomli_w.dumps(self.to_dict(base_dir=path.resolve().parent)))
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
        return path

    # -- what the project exports --------------------------------------------------------------

    @property
    def nicknames(self) -> list[str]:
        return [d.nickname for d in self.datasets]

    def dataset(self, nickname: str) -> Dataset:
        for d in self.datasets:
            if d.nickname == nickname:
                return d
        raise SettingsError(
            f"no dataset nicknamed {nickname!r}; the project has {', '.join(self.nicknames)}"
        )

    def source_path(self, dataset: Dataset) -> str:
        return absolute(dataset.source, self.base_dir)

    def settings_for(self, nickname: str) -> ExportSettings:
        d = self.dataset(nickname)
        shared = dict(self.settings)
        for one, other in (("roi", "regions"), ("regions", "roi")):
            if one in d.settings:  # the dataset's cutout replaces the shared one, in either form
                shared.pop(other, None)
        try:
            return ExportSettings.from_dict({**shared, **settings_from_toml(d.settings)})
        except ExportError as exc:
            raise type(exc)(f"dataset {nickname!r}: {exc}") from None

    def plan(self, nickname: str, memory_limit: Any = None, scheduler: Any = None) -> ExportPlan:
        """The plan of exporting one dataset.

        Parameters
        ----------
        nickname : str
            The dataset.
        memory_limit : int or str, optional
            As for :func:`lazyexport.export`.
        scheduler : str or distributed.Client, optional
            As for :func:`lazyexport.export`: a cluster's plan is sized for its workers.

        Returns
        -------
        ExportPlan
            As :func:`lazyexport.plan` returns it.
        """
        plans = self.plans(nickname, memory_limit, scheduler)
        if len(plans) > 1:
            raise SettingsError(
                f"dataset {nickname!r} has {len(plans)} regions: Batch.plans gives a plan each"
            )
        return plans[0]

    def plans(
        self, nickname: str, memory_limit: Any = None, scheduler: Any = None
    ) -> list[ExportPlan]:
        """The plans of exporting one dataset: one, or one per region where its settings have
        ``regions`` (parameters as for :meth:`plan`).

        Parameters
        ----------
        nickname : str
            The dataset.
        memory_limit : int or str, optional
            As for :func:`lazyexport.export`.
        scheduler : str or distributed.Client, optional
            As for :func:`lazyexport.export`.

        Returns
        -------
        list of ExportPlan
            In the order of the regions.
        """
        return self._jobs(nickname, memory_limit, scheduler).plans

    def _jobs(self, nickname: str, memory_limit: Any = None, scheduler: Any = None) -> RegionPlans:
        """The plans of exporting one dataset, with their regions' names."""
        source = self._source(nickname)
        settings = self.settings_for(nickname)
        return plan_jobs(source, settings, scheduler, nickname=nickname, memory_limit=memory_limit)

    def _source(self, nickname: str) -> Any:
        d = self.dataset(nickname)
        return open_source(self.source_path(d), axes=d.axes, scene=d.scene)

    def region_names(self, nickname: str) -> list[str | None]:
        """The names of a dataset's regions, in the order of :meth:`plans` ([None]: none)."""
        return [name or None for name in self._jobs(nickname).names]

    def list(self) -> list[Row]:
        """Each dataset's nickname, source, output location and whether that output exists.

        Returns
        -------
        list of Row
            One row per dataset; one that cannot be planned (missing source, bad ROI, ...) says
            why in ``error``.
        """
        rows = []
        for d in self.datasets:
            try:
                jobs = self._jobs(d.nickname)
            except Exception as exc:
                rows.append(Row(d.nickname, d.source, "?", False, reason(exc)))
                continue
            for region, plan in zip(jobs.names, jobs.plans):
                src = plan.source
                described = f"{d.source} {''.join(names(src))} {tuple(src.shape)} {src.dtype}"
                rows.append(
                    Row(
                        f"{d.nickname}:{region}" if region else d.nickname,
                        described,
                        output_location(plan),
                        bool(plan.writer.existing(plan.spec)),
                    )
                )
        return rows

    # -- export and delete ---------------------------------------------------------------------

    def export(
        self,
        nicknames: Sequence[str],
        *,
        overwrite: bool = False,
        resume: bool = False,
        fail_fast: bool = False,
        memory_limit: Any = None,
        scheduler: Any = None,
        progress: BatchProgress | None = None,
        on_done: BatchDone | None = None,
        cancel=None,
    ) -> BatchReport:
        """Export the named datasets in order.

        A dataset that fails is recorded in the report and the others go on. Cancellation (the
        ``cancel`` event, Ctrl-C) stops the whole batch.

        Parameters
        ----------
        nicknames : sequence of str
            The datasets to export; unknown nicknames are refused before anything is written.
        overwrite : bool, default False
            As for :func:`lazyexport.export`.
        resume : bool, default False
            As for :func:`lazyexport.export`.
        fail_fast : bool, default False
            After a failure, skip the remaining datasets.
        memory_limit : int or str, optional
            As for :func:`lazyexport.export`, per dataset.
        scheduler : str or distributed.Client, optional
            As for :func:`lazyexport.export`; a cluster it starts serves the whole batch.
        progress : callable, optional
            Called as ``progress(nickname, Progress)`` after every block.
        on_done : callable, optional
            Called as ``on_done(nickname, result_or_exception)`` after every dataset.
        cancel : threading.Event, optional
            Set it to stop the batch.

        Returns
        -------
        BatchReport
            The results, failures and datasets not attempted.
        """
        for nick in nicknames:
            self.dataset(nick)  # unknown nicknames fail before anything is written
        with scheduler_session(scheduler, memory_limit) as resolved:
            return self._export(
                nicknames,
                overwrite,
                resume,
                fail_fast,
                memory_limit,
                resolved,
                progress,
                on_done,
                cancel,
            )

    def _export(
        self,
        nicknames,
        overwrite,
        resume,
        fail_fast,
        memory_limit,
        scheduler,
        progress,
        on_done,
        cancel,
    ) -> BatchReport:
        report = BatchReport()
        for i, nick in enumerate(nicknames):
            try:
                result = self._export_one(
                    nick, overwrite, resume, memory_limit, scheduler, progress, cancel
                )
            except ExportCancelled:
                raise
            except Exception as exc:
                report.failures[nick] = exc
                if on_done:
                    on_done(nick, exc)
                if fail_fast:
                    report.skipped = list(nicknames[i + 1 :])
                    break
                continue
            report.results[nick] = result
            if on_done:
                on_done(nick, result)
        return report

    def _export_one(
        self, nick, overwrite, resume, memory_limit, scheduler, progress, cancel
    ) -> ExportResult | RegionResults:
        settings = self.settings_for(nick)
        return run_jobs(
            self._source(nick), settings, nickname=nick,
            overwrite=overwrite, resume=resume, memory_limit=memory_limit, scheduler=scheduler,
            progress=(lambda _, event: progress(nick, event)) if progress else None,
            cancel=cancel,
        )  # fmt: skip

    def export_all(self, *, fail_fast: bool = False, **options: Any) -> BatchReport:
        """Export every dataset of the project.

        Parameters
        ----------
        fail_fast : bool, default False
            As for :meth:`export`.
        **options
            As for :meth:`export`.

        Returns
        -------
        BatchReport
            As :meth:`export` returns it.
        """
        return self.export(self.nicknames, fail_fast=fail_fast, **options)

    def clean(self, *, dry_run: bool = False) -> DeleteReport:
        """Remove what killed or interrupted exports left beside each dataset's outputs.

        Hidden temporaries no running export owns are removed, an interrupted commit is finished
        instead, as :func:`lazyexport.storage.clean` does. Outputs themselves are never touched.

        Parameters
        ----------
        dry_run : bool, default False
            Report what would be removed, removing nothing.

        Returns
        -------
        DeleteReport
            What was removed; leftovers of exports running now are reported in ``refused``.
        """
        report = DeleteReport()
        for d in self.datasets:
            try:
                plans = self.plans(d.nickname)
            except Exception as exc:
                report.refused[d.nickname] = reason(exc)
                continue
            busy = []
            for plan in plans:
                gone, kept = clean_outputs(plan, dry_run=dry_run)
                report.removed += [item.describe() for item in gone]
                busy += [item.describe() for item in kept]
            if busy:
                report.refused[d.nickname] = "; ".join(busy)
        return report

    def delete_all(self, *, dry_run: bool = False) -> DeleteReport:
        """Remove exactly the outputs this project writes; never a source, nothing else.

        That is the final files and directories of each dataset's plan (for an HDF5 file that
        holds other data too, only the dataset), what an interrupted ``resume`` export of that
        plan kept (temporary output and journal), and directories the export created that are
        left empty.

        Parameters
        ----------
        dry_run : bool, default False
            Report what would be removed, removing nothing.

        Returns
        -------
        DeleteReport
            What was removed; a dataset whose output cannot be computed, or whose output holds a
            source, is left alone and reported in ``refused``.
        """
        report = DeleteReport()
        sources = [split_path(self.source_path(d)) for d in self.datasets]
        for d in self.datasets:
            try:
                plans = self.plans(d.nickname)
                for plan in plans:  # every region's output checked before any is removed
                    clash = [
                        f"{file}/{inner}".rstrip("/")
                        for file, inner in sources
                        for out in plan.paths
                        if holds((out, plan.internal), (file, inner))
                    ]
                    if clash:
                        raise SettingsError(
                            f"its output {output_location(plan)} holds the source {clash[0]}"
                        )
                for plan in plans:
                    # leftovers first: finishing an interrupted commit must not bring an output
                    # back
                    gone, _ = clean_outputs(plan, dry_run=dry_run)
                    removed = [item.describe() for item in gone] + plan.writer.delete(
                        plan.spec, dry_run=dry_run
                    )
                    report.removed += removed
                    if not dry_run and removed:
                        stop = Path(plan.source.attrs["dataset_dir"])
                        remove_empty_parents(plan.paths, stop=stop)
            except Exception as exc:
                report.refused[d.nickname] = reason(exc)
                continue
        return report


def output_location(plan: ExportPlan) -> str:
    """The output as one string: ``out.h5/exported_data``, ``out.zarr``, or a sequence's range."""
    if len(plan.paths) > 1:
        return f"{plan.paths[0]} .. {plan.paths[-1].name} ({len(plan.paths)} files)"
    return str(plan.output) + (f"/{plan.internal}" if plan.internal else "")
