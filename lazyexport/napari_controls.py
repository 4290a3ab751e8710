"""The export widget's controls: one Qt input per choice of :class:`~lazyexport.napari_model.
ExportChoices`, built from the registries (formats, their compressions, the steps), and read back.

Each text control is kept under the ``lazyexport export`` option name it stands for (``dtype``,
``bin``, ``output``, ...), so the widget has exactly the command's choices; the cutout has a start
and a stop per axis of the source. Nothing here computes: :mod:`lazyexport.napari_widget` lays
the controls out and acts, the model builds the settings.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QWidget,
)

from .formats import formats, get_writer
from .napari_model import OUTPUT_OPTIONS, RENORMALIZE, RUN_OPTIONS, ExportChoices
from .step_settings import STEP_SETTINGS

DTYPES = ("", "uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
HINTS = {
    "dtype": "keep the source's type",
    "axis-order": "e.g. czyx (default: the source's)",
    "output": "{dataset_dir}/{nickname}_export.h5 (placeholders: see docs/usage.md)",
    "compression": "the format's default",
    "compression-level": "the codec's default",
    "levels": "ome-zarr pyramid levels (default: down to one chunk)",
    "chunks": "e.g. z=32,y=256",
    "nickname": "default: the layer's or file's name",
    "result-type": "for {result_type}",
    "memory-limit": "default 1GiB",
}


def line(hint: str = "", tip: str = "") -> QLineEdit:
    edit = QLineEdit()
    edit.setPlaceholderText(hint)
    edit.setToolTip(tip or hint)
    return edit


def combo(items: Any, editable: bool = False) -> QComboBox:
    box = QComboBox()
    box.setEditable(editable)
    box.addItems([str(item) for item in items])
    return box


def text_of(control: QWidget) -> str:
    """What a line or combo box holds."""
    if isinstance(control, QComboBox):
        return control.currentText()
    assert isinstance(control, QLineEdit)
    return control.text()


def set_text(control: QWidget, text: str) -> None:
    if isinstance(control, QComboBox):
        index = control.findText(text)
        if index >= 0:
            control.setCurrentIndex(index)
        else:
            control.setEditText(text)
    else:
        assert isinstance(control, QLineEdit)
        control.setText(text)


class Controls:
    """The inputs, by option name; :meth:`read` turns them into choices."""

    def __init__(self) -> None:
        self.text: dict[str, QWidget] = {}
        self.roi: dict[str, tuple[QLineEdit, QLineEdit]] = {}
        self.roi_box = QGroupBox("Cutout Subregion (start / stop per axis; stop exclusive)")
        self.roi_form = QFormLayout(self.roi_box)
        self.renormalize_mode = combo(RENORMALIZE)
        self.renormalize = [line(h) for h in ("in min", "in max", "out min", "out max")]
        for edit, value in zip(self.renormalize, ("0", "1", "0", "255")):
            edit.setText(value)
        self.overwrite = QCheckBox("overwrite an existing output")
        self.text["dtype"] = combo(DTYPES, editable=True)
        self.text["axis-order"] = line(HINTS["axis-order"])
        for name, step in STEP_SETTINGS.items():  # one control per registered step
            self.text[name] = line(step.metavar, step.help)
        # "": the format the output's extension names, else hdf5 (as the command's --format)
        self.text["format"] = combo(["", *formats()])
        self.text["compression"] = combo([""], editable=True)
        for name in OUTPUT_OPTIONS + RUN_OPTIONS:
            if name not in self.text:
                self.text[name] = line(HINTS.get(name, ""))
        self.text["format"].currentTextChanged.connect(self.format_changed)
        self.format_changed(self.text["format"].currentText())

    def format_changed(self, fmt: str) -> None:
        """Offer the chosen format's compressions (its default first)."""
        box = self.text["compression"]
        assert isinstance(box, QComboBox)
        box.clear()
        box.addItems(["", *(get_writer(fmt).capabilities.compressions if fmt else ())])

    def set_axes(self, axes: tuple[str, ...], shape: tuple[int, ...]) -> None:
        """A start and a stop per axis of the source (kept where the axis was there before)."""
        kept = {a: (s.text(), e.text()) for a, (s, e) in self.roi.items()}
        while self.roi_form.rowCount():
            self.roi_form.removeRow(0)
        self.roi = {}
        for axis, size in zip(axes, shape):
            start, stop = line("0"), line(str(size))
            start.setText(kept.get(axis, ("", ""))[0])
            stop.setText(kept.get(axis, ("", ""))[1])
            self.roi[axis] = (start, stop)
            self.roi_form.addRow(f"{axis} [0, {size})", _pair(start, stop))

    def set_roi(self, bounds: dict[str, tuple[int, int]]) -> None:
        for axis, (lo, hi) in bounds.items():
            if axis in self.roi:
                self.roi[axis][0].setText(str(lo))
                self.roi[axis][1].setText(str(hi))

    def show(self, choices: ExportChoices) -> None:
        """Set the controls to ``choices`` (the inverse of :meth:`read`)."""
        for axis in choices.roi:
            if axis not in self.roi:  # an axis of a source not described yet
                self.roi[axis] = (line("0"), line("end"))
                self.roi_form.addRow(axis, _pair(*self.roi[axis]))
        for axis, (start, stop) in self.roi.items():
            start.setText(choices.roi.get(axis, ("", ""))[0])
            stop.setText(choices.roi.get(axis, ("", ""))[1])
        self.renormalize_mode.setCurrentText(choices.renormalize_mode)
        for edit, value in zip(self.renormalize, choices.renormalize_values):
            edit.setText(value)
        for name, control in self.text.items():
            set_text(control, choices.options.get(name, ""))
        self.overwrite.setChecked(choices.overwrite)

    def read(self, choices: ExportChoices) -> ExportChoices:
        """The choices the controls hold (the source is the widget's to set)."""
        choices.roi = {a: (s.text(), e.text()) for a, (s, e) in self.roi.items()}
        choices.renormalize_mode = self.renormalize_mode.currentText()
        values = [edit.text().strip() for edit in self.renormalize]
        choices.renormalize_values = (values[0], values[1], values[2], values[3])
        choices.options = {name: text_of(control) for name, control in self.text.items()}
        choices.overwrite = self.overwrite.isChecked()
        return choices

    def transformations(self) -> QGroupBox:
        box = QGroupBox("Transformations")
        form = QFormLayout(box)
        form.addRow("convert to", self.text["dtype"])
        form.addRow("renormalize", self.renormalize_mode)
        form.addRow("  from", _pair(*self.renormalize[:2]))
        form.addRow("  to", _pair(*self.renormalize[2:]))
        form.addRow("axis order", self.text["axis-order"])
        for name in STEP_SETTINGS:
            form.addRow(name, self.text[name])
        return box

    def output_info(self) -> QGroupBox:
        box = QGroupBox("Output File Info")
        form = QFormLayout(box)
        for name in OUTPUT_OPTIONS + RUN_OPTIONS:
            form.addRow(name.replace("-", " "), self.text[name])
        form.addRow("", self.overwrite)
        return box


def _pair(first: QWidget, second: QWidget) -> QWidget:
    """Two inputs side by side."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(first)
    layout.addWidget(second)
    return row
