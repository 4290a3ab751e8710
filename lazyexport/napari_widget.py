"""The export applet as a napari dock widget (``lazyexport[napari]``; docs/napari.md).

ilastik's Data Export applet in napari: the Source Image Description of a layer or a file / URL,
the Cutout Subregion (per axis, or from a Shapes rectangle or the current plane), the
Transformations, the Output File Info, the plan, Export, a project file's Export All / Delete All
with its nickname -> output table, Save / Load settings, and the Raw Data, Live Preview and
Exported Image layers.

Invariants: the widget builds its settings through :class:`~lazyexport.napari_model.
ExportChoices` (the command's parser, so the same choices give the same settings); exports run
in a napari worker thread, the viewer stays responsive, progress is polled from the GUI thread and
Cancel sets the event the export checks; every mistake or failure is shown as the command's one
``error:`` line in the widget's status, never as a traceback dialog (the worker returns the
exception instead of raising it). The widget makes no canvas call: it runs on a
``napari.components.ViewerModel`` as on a ``napari.Viewer``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .errors import SettingsError
from .napari_controls import Controls, line
from .napari_layers import exported_array, live_array, live_scale_translate
from .napari_model import ExportChoices, Project, choices_from, one_line, outcome_text
from .napari_view import current_plane, shapes_rectangle
from .plan import build_plan
from .settings import ExportSettings

FILE_SOURCE = "(file or URL)"


def guarded(method: Callable) -> Callable:
    """Run a widget action; a failure shows as one ``error:`` line in the status."""

    @functools.wraps(method)
    def run(self: ExportWidget, *args: Any) -> Any:
        try:
            return method(self)
        except Exception as exc:
            self.show_status(one_line(exc))
            return None

    return run


class ExportWidget(QWidget):
    """The dock widget (see the module docstring); ``napari_viewer`` is a napari Viewer or
    ViewerModel."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.controls = Controls()
        self.project: Project | None = None
        self.kept: dict[str, Any] = {}  # a loaded project's settings the controls do not show
        self.worker: Any = None
        self.cancel_event = threading.Event()
        self.progress_event: Any = None
        self.confirm: Callable[[list[str]], bool] = self._ask
        self.buttons: dict[str, QPushButton] = {}
        self._build()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()
        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._show_progress)

    # -- layout --------------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(self._source_box())
        layout.addWidget(self.controls.roi_box)
        roi_buttons = QHBoxLayout()
        for text, action in (
            ("From Shapes rectangle", self.roi_from_shapes),
            ("From current plane", self.roi_from_view),
        ):
            roi_buttons.addWidget(self._button(text, action))
        layout.addLayout(roi_buttons)
        layout.addWidget(self.controls.transformations())
        layout.addWidget(self.controls.output_info())
        layout.addWidget(self._export_box())
        layout.addWidget(self._project_box())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

    def _button(self, text: str, action: Callable) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(action)
        self.buttons[text] = button
        return button

    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Source Image Description")
        form = QFormLayout(box)
        self.layer_box = QComboBox()
        self.source_text = line("file.h5/dataset, store.zarr, file.tif, s3://...")
        self.axes_text = line("axis tags overriding the file's, e.g. zyxc")
        self.description = QPlainTextEdit()
        self.description.setReadOnly(True)
        self.description.setMaximumHeight(140)
        form.addRow("layer", self.layer_box)
        form.addRow("or file / URL", self.source_text)
        form.addRow("axes", self.axes_text)
        form.addRow(self._button("Describe", self.describe))
        form.addRow(self.description)
        self.layer_box.currentTextChanged.connect(self.describe)
        return box

    def _export_box(self) -> QGroupBox:
        box = QGroupBox("Export")
        layout = QVBoxLayout(box)
        self.plan_view = QPlainTextEdit()
        self.plan_view.setReadOnly(True)
        self.plan_view.setMaximumHeight(160)
        row = QHBoxLayout()
        for text, action in (
            ("Show plan", self.show_plan),
            ("Preview layers", self.show_preview),
            ("Export", self.export),
            ("Cancel", self.cancel),
        ):
            row.addWidget(self._button(text, action))
        self.buttons["Cancel"].setEnabled(False)
        self.progress = QProgressBar()
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.plan_view)
        return box

    def _project_box(self) -> QGroupBox:
        box = QGroupBox("Project file")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        for text, action in (
            ("Load project...", self.load_dialog),
            ("Save settings...", self.save_dialog),
            ("Export All", self.export_all),
            ("Delete All", self.delete_all),
        ):
            row.addWidget(self._button(text, action))
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["nickname", "output", "exists"])
        layout.addLayout(row)
        layout.addWidget(self.table)
        return box

    # -- reading the choices -------------------------------------------------------------------

    def refresh_layers(self, *_: Any) -> None:
        """List the image and labels layers (and the file / URL choice)."""
        current = self.layer_box.currentText()
        names = [
            layer.name for layer in self.viewer.layers if layer._type_string in ("image", "labels")
        ]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems([FILE_SOURCE, *names])
        self.layer_box.setCurrentText(current if current in names else FILE_SOURCE)
        self.layer_box.blockSignals(False)

    def choices(self) -> ExportChoices:
        """The user's choices, as the controls hold them."""
        name = self.layer_box.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        choices = ExportChoices(
            source_text=self.source_text.text(), axes=self.axes_text.text(), layer=layer
        )
        return self.controls.read(choices)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    # -- actions -------------------------------------------------------------------------------

    @guarded
    def describe(self) -> None:
        """Show the Source Image Description and offer its axes for the cutout."""
        if self.layer_box.currentText() == FILE_SOURCE and not self.source_text.text().strip():
            return
        found = self.choices().describe()
        self.description.setPlainText(str(found))
        self.controls.set_axes(found.axes, found.shape)
        self.show_status("")

    @guarded
    def roi_from_shapes(self) -> None:
        axes = tuple(self.controls.roi)
        self.controls.set_roi(shapes_rectangle(self.viewer, axes, self._reference()))

    @guarded
    def roi_from_view(self) -> None:
        axes = tuple(self.controls.roi)
        self.controls.set_roi(current_plane(self.viewer, axes, self._reference()))

    def _reference(self) -> Any:
        """The layer the source is shown as (the chosen layer, else Raw Data), if any."""
        choices = self.choices()
        if choices.layer is not None:
            return choices.layer
        return self.viewer.layers["Raw Data"] if "Raw Data" in self.viewer.layers else None

    @guarded
    def show_plan(self) -> None:
        self.plan_view.setPlainText(self.choices().plan_text())
        self.show_status("")

    @guarded
    def show_preview(self) -> None:
        """Add (or replace) the Raw Data and Live Preview layers."""
        choices = self.choices()
        source = choices.source()
        plan = build_plan(
            source, choices.settings(), nickname=choices.nickname(),
            memory_limit=choices.memory_limit(),
        )  # fmt: skip
        self._replace_layer("Raw Data", source.data, {})
        scale, translate = live_scale_translate(plan)
        self._replace_layer(
            "Live Preview", live_array(plan), {"scale": scale, "translate": translate}
        )

    def _replace_layer(self, name: str, data: Any, kwargs: dict) -> None:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_image(data, name=name, **kwargs)

    @guarded
    def export(self) -> None:
        choices = self.choices()
        choices.settings()  # a mistake in the options shows before the worker starts
        self._start(lambda progress, cancel: choices.export(progress, cancel), exported=True)

    @guarded
    def export_all(self) -> None:
        project = self._project()
        overwrite, limit = self.controls.overwrite.isChecked(), self.choices().memory_limit()
        self._start(lambda progress, cancel: project.export_all(overwrite, progress, cancel, limit))

    @guarded
    def delete_all(self) -> None:
        project = self._project()
        planned = project.planned_deletions()
        if planned.removed and not self.confirm(planned.removed):
            self.show_status("nothing deleted")
            return
        report = project.delete_all() if planned.removed else planned
        self.show_status(outcome_text(report))
        self.refresh_table()

    def cancel(self) -> None:
        """Stop the running export; it removes its temporary output."""
        self.cancel_event.set()

    def _project(self) -> Project:
        if self.project is None:
            raise SettingsError("load a project file first (Load project...)")
        return self.project

    def _ask(self, items: list[str]) -> bool:
        answer = QMessageBox.question(
            self, "Delete All", "Delete these outputs?\n" + "\n".join(items)
        )
        return answer == QMessageBox.StandardButton.Yes

    # -- the export thread ---------------------------------------------------------------------

    def _start(self, job: Callable[[Callable, threading.Event], Any], exported=False) -> None:
        if self.worker is not None:
            raise SettingsError("an export is running: wait for it or cancel it")
        self.cancel_event = threading.Event()
        self.progress_event = None
        self.progress.setValue(0)

        def work() -> tuple[Any, Exception | None]:
            try:
                return job(self._record, self.cancel_event), None
            except Exception as exc:  # shown as one line, not raised into napari's dialog
                return None, exc

        self.worker = create_worker(work)
        self.worker.returned.connect(functools.partial(self._done, exported))
        self.buttons["Cancel"].setEnabled(True)
        self.show_status("exporting...")
        self.timer.start()
        self.worker.start()

    def _record(self, event: Any) -> None:  # in the worker thread: the GUI thread polls it
        self.progress_event = event

    def _show_progress(self) -> None:
        if self.progress_event is not None:
            self.progress.setValue(int(100 * self.progress_event.fraction))

    def _done(self, exported: bool, returned: tuple[Any, Exception | None]) -> None:
        self.timer.stop()
        self.worker = None
        self.buttons["Cancel"].setEnabled(False)
        outcome, failure = returned
        if failure is not None:
            self.show_status(one_line(failure))
            return
        self.progress.setValue(100)
        self.show_status(outcome_text(outcome))
        if exported:
            self._show_exported(outcome)
        self.refresh_table()

    def _show_exported(self, outcome: Any) -> None:
        data, note = exported_array(outcome)
        if data is None:
            self.show_status(f"{outcome_text(outcome)}\nnote: {note}")
            return
        self._replace_layer("Exported Image", data.data, {})

    # -- project files -------------------------------------------------------------------------

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load project", "", "Project (*.toml)")
        if path:
            self.load_project(path)

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save settings", "", "Project (*.toml)")
        if path:
            self.save_settings(path)

    def load_project(self, path: str) -> None:
        """Open a project file: its datasets for Export All / Delete All, in the table."""
        try:
            self.project = Project(path)
        except Exception as exc:
            self.show_status(one_line(exc))
            return
        current = self.choices()
        choices = ExportChoices(  # the project's settings replace the controls' choices
            options={"memory-limit": current.options.get("memory-limit", "")},
            overwrite=current.overwrite,
        )
        self.kept = choices_from(ExportSettings.from_dict(self.project.batch.settings), choices)
        self.controls.show(choices)
        self.refresh_table()
        note = (
            f"; its settings {', '.join(self.kept)} are not shown here (Save keeps them)"
            if self.kept
            else ""
        )
        self.show_status(f"loaded {path}: {len(self.project.batch.datasets)} datasets{note}")

    def save_settings(self, path: str) -> None:
        """Save the widget's settings as a project file: shared by the loaded project's
        datasets, else with the file source as its one dataset; then load it."""
        try:
            loaded = self.project
            datasets = loaded.batch.datasets if loaded is not None else None
            base = loaded.batch.base_dir if loaded is not None else None
            saved = self.choices().project(datasets, base, self.kept).save(path)
        except Exception as exc:
            self.show_status(one_line(exc))
            return
        self.load_project(str(saved))

    def refresh_table(self) -> None:
        """The nickname -> output table, with the outputs that exist marked."""
        rows = self.project.rows() if self.project is not None else []
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            output = row.output if row.error is None else f"? ({row.error})"
            for j, text in enumerate((row.nickname, output, "yes" if row.exists else "-")):
                self.table.setItem(i, j, QTableWidgetItem(text))
