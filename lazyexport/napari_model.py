"""The napari export widget's model: the user's choices, and what they do, without Qt.

The widget (:mod:`lazyexport.napari_widget`) is a thin view over :class:`ExportChoices`. Its
invariants:

- The choices are the ``lazyexport export`` command's options, kept as the text the user typed
  under the option's name; :meth:`ExportChoices.settings` reads them with the command's own
  parser and :func:`~lazyexport.cli_settings.settings_from_args`, so the settings the widget
  builds are the ones the command builds from the same choices, mistakes included (one line).
- The source is a napari layer (its data as the napari writers take it) or a file / URL; the
  description, the plan and the live preview read metadata and the planes viewed, never the
  whole source.
- Export All and Delete All act on a project file exactly as ``lazyexport batch PROJECT
  export-all`` / ``delete-all`` do (:class:`~lazyexport.batch.Batch`); cancelling sets the
  event the export checks between blocks, and the export then removes its temporary output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
from collections.abc import Callable
from typing import Any

from .batch import Batch, BatchReport, DeleteReport, Row, reason
from .batch_project import Dataset
from .cli import make_parser
from .cli_settings import settings_from_args
from .describe import Description, describe
from .errors import ExportError, SettingsError
from .execution.fronts import plan_jobs, run_jobs
from .napari import layer_source
from .run import Progress
from .settings import ExportSettings, declared_options
from .sources import open_source
from .step_settings import STEP_SETTINGS

# the renormalize modes and how each writes --renormalize from (in_low, in_high, out_low, out_high)
RENORMALIZE = {
    "none": lambda a, b, c, d: "",
    "fixed": lambda a, b, c, d: f"{a},{b}:{c},{d}",
    "data range": lambda a, b, c, d: f":{c},{d}",
    "percentiles": lambda a, b, c, d: f"p{a},p{b}:{c},{d}",
}
# the text options of ``lazyexport export`` the widget offers, by option name (without --)
TRANSFORM_OPTIONS = ("dtype", "axis-order", *STEP_SETTINGS)
OUTPUT_OPTIONS = (
    "format",
    "output",
    "compression",
    "compression-level",
    declared_options()["levels"].flag.lstrip("-"),
    "chunks",
    "nickname",
    "result-type",
)
RUN_OPTIONS = ("memory-limit",)
TEXT_OPTIONS = TRANSFORM_OPTIONS + OUTPUT_OPTIONS + RUN_OPTIONS


def one_line(exc: BaseException) -> str:
    """An error as the command shows it: ``error: ...`` on one line."""
    text = reason(exc) if isinstance(exc, ExportError) else f"export failed: {reason(exc)}"
    return "error: " + " ".join(text.split())


@dataclasses.dataclass
class ExportChoices:
    """What the user chose in the widget: the source, the cutout, the option texts."""

    source_text: str = ""  # a file or URL, when no layer is chosen
    axes: str = ""  # axis tags overriding the file's
    layer: Any = None  # a napari layer (its data as the napari writers take it)
    roi: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # axis -> texts
    renormalize_mode: str = "none"
    renormalize_values: tuple[str, str, str, str] = ("0", "1", "0", "255")
    options: dict[str, str] = dataclasses.field(default_factory=dict)  # option name -> text
    overwrite: bool = False

    # -- the command line these choices are --------------------------------------------------

    def roi_text(self) -> str:
        """``--roi``'s text: ``axis=start:stop`` for each axis with a start or a stop."""
        parts = [
            f"{axis}={start.strip()}:{stop.strip()}"
            for axis, (start, stop) in self.roi.items()
            if start.strip() or stop.strip()
        ]
        return ",".join(parts)

    def argv(self) -> list[str]:
        """The ``lazyexport export`` command line of these choices (the source as typed, or
        the layer's name)."""
        args = ["export", self.source_text or self.layer_name() or "layer"]
        if self.axes.strip() and self.layer is None:
            args += ["--axes", self.axes.strip()]
        if self.roi_text():
            args += ["--roi", self.roi_text()]
        renormalize = RENORMALIZE[self.renormalize_mode](*self.renormalize_values)
        if renormalize:
            args += ["--renormalize", renormalize]
        for name in TEXT_OPTIONS:
            text = self.options.get(name, "").strip()
            if text:
                args += [f"--{name}", text]
        if self.overwrite:
            args.append("--overwrite")
        return args

    def parsed(self) -> Any:
        """The command's parsed arguments; a parser mistake is one SettingsError line."""
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                return make_parser().parse_args(self.argv())
        except SystemExit:
            message = err.getvalue().strip().splitlines()[-1:] or ["cannot read the options"]
            text = message[0].removeprefix("error: ").split(" (see '")[0]
            raise SettingsError(text) from None

    def settings(self) -> ExportSettings:
        """The export settings, as the command builds them from the same options."""
        return settings_from_args(self.parsed())

    # -- the source --------------------------------------------------------------------------

    def layer_name(self) -> str | None:
        return None if self.layer is None else str(self.layer.name)

    def source(self) -> Any:
        """The source, opened lazily: the layer's data, or the file / URL."""
        if self.layer is not None:
            data, meta, kind = self.layer.as_layer_data_tuple()
            return layer_source(data, meta, kind if kind == "labels" else "image")
        if not self.source_text.strip():
            raise SettingsError("choose a layer, or give a file or URL to export")
        return open_source(self.source_text.strip(), axes=self.axes.strip() or None)

    def nickname(self) -> str | None:
        """The nickname option, else the layer's name (as the napari writers name it)."""
        return self.options.get("nickname", "").strip() or self.layer_name()

    def memory_limit(self) -> str | None:
        return self.options.get("memory-limit", "").strip() or None

    def describe(self) -> Description:
        """The Source Image Description (what ``lazyexport info`` prints); no pixel is read."""
        return describe(self.source())

    def plans(self) -> list[Any]:
        """The plans the export makes (one per region), as ``--plan`` shows them."""
        return plan_jobs(
            self.source(),
            self.settings(),
            nickname=self.nickname(),
            memory_limit=self.memory_limit(),
        ).plans

    def plan_text(self) -> str:
        """``lazyexport export --plan``'s text."""
        return "\n\n".join(str(plan) for plan in self.plans())

    def export(self, progress: Callable[[Progress], Any], cancel: threading.Event) -> Any:
        """Export this dataset (``progress(event)`` after every block; ``cancel`` stops it)."""
        return run_jobs(
            self.source(),
            self.settings(),
            nickname=self.nickname(),
            overwrite=self.overwrite,
            memory_limit=self.memory_limit(),
            progress=lambda _name, event: progress(event),
            cancel=cancel,
        )

    def project(
        self, datasets: list[Dataset] | None, base_dir: Any = None, kept: Any = None
    ) -> Batch:
        """A project with these settings shared by ``datasets`` (default: this file source),
        and the settings ``kept`` (a mapping of fields) where these leave them unset."""
        if datasets is None:
            if self.layer is not None or not self.source_text.strip():
                raise SettingsError(
                    "a layer in memory is not a project's dataset: give a file or URL source, "
                    "or load a project file"
                )
            nickname = self.options.get("nickname", "").strip()
            datasets = [Dataset(self.source_text.strip(), nickname, self.axes.strip() or None)]
        settings = self.settings().to_dict()
        for name, value in (kept or {}).items():
            if settings.get(name) is None:
                settings[name] = value
        return Batch(settings, datasets, base_dir=base_dir)


class Project:
    """A project file's datasets, acted on as ``lazyexport batch PROJECT ...`` does."""

    def __init__(self, path: str):
        self.path = path
        self.batch = Batch.load(path)

    def rows(self) -> list[Row]:
        """Nickname, output and whether it exists, per dataset (``batch list``)."""
        return self.batch.list()

    def export_all(
        self,
        overwrite: bool,
        progress: Callable[[Progress], Any],
        cancel: threading.Event,
        memory_limit: str | None = None,
    ) -> BatchReport:
        """``batch PROJECT export-all`` (``--overwrite`` where chosen)."""
        return self.batch.export_all(
            overwrite=overwrite,
            memory_limit=memory_limit,
            progress=lambda _nickname, event: progress(event),
            cancel=cancel,
        )

    def planned_deletions(self) -> DeleteReport:
        """What Delete All would remove (nothing is removed)."""
        return self.batch.delete_all(dry_run=True)

    def delete_all(self) -> DeleteReport:
        """``batch PROJECT delete-all --yes``."""
        return self.batch.delete_all()


# the settings fields the controls show, and the option each is read from
SHOWN = {
    "dtype": "dtype",
    "axis_order": "axis-order",
    "format": "format",
    "output": "output",
    "compression": "compression",
    "compression_level": "compression-level",
    "levels": "levels",
    "result_type": "result-type",
}


def choices_from(settings: ExportSettings, choices: ExportChoices) -> dict[str, Any]:
    """Fill ``choices`` with ``settings`` (a loaded project's); return the fields the controls
    cannot show, with their values (Save keeps them)."""
    values = settings.to_dict()
    choices.options.update({SHOWN[k]: str(v) for k, v in values.items() if k in SHOWN and v})
    if values.get("chunks"):
        choices.options["chunks"] = ",".join(f"{a}={n}" for a, n in values["chunks"].items())
    roi = values.get("roi") or {}
    choices.roi = {a: (_text(lo), _text(hi)) for a, (lo, hi) in roi.items()}
    if values.get("renormalize"):
        ins, (out_low, out_high) = values["renormalize"]
        low, high = ins if ins is not None else (None, None)
        percent = isinstance(low, str)
        choices.renormalize_mode = (
            "data range" if low is None else "percentiles" if percent else "fixed"
        )
        texts = [_text(v).lstrip("p") for v in (low, high)]
        choices.renormalize_values = (texts[0], texts[1], str(out_low), str(out_high))
    shown = {*SHOWN, "chunks", "roi", "renormalize"}
    return {k: v for k, v in values.items() if k not in shown and v is not None}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def outcome_text(outcome: Any) -> str:
    """What an export or a project's export did, in one or a few lines."""
    if isinstance(outcome, BatchReport):
        return outcome.summary()
    if isinstance(outcome, DeleteReport):
        lines = [f"deleted {item}" for item in outcome.removed] or ["nothing to delete"]
        lines += [f"left alone: {nick}: {why}" for nick, why in outcome.refused.items()]
        return "\n".join(lines)
    return str(outcome)
