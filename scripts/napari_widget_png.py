"""Grab the napari export widget into a PNG (docs/napari_widget.png), offscreen, no display.

    QT_QPA_PLATFORM=offscreen python scripts/napari_widget_png.py docs/napari_widget.png

The widget is shown on a napari ViewerModel with the demo's probability map as an image layer
(``zyxc``, generated lazily: nothing is computed), with a few choices made and the plan shown, as
a user would see it. tests/test_napari_widget.py runs :func:`grab` too.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def grab(path: str) -> tuple[int, int]:
    """Draw the widget into ``path``; return the picture's (width, height)."""
    from napari.components import ViewerModel
    from qtpy.QtWidgets import QApplication

    from lazyexport.demo import sample_volume
    from lazyexport.napari_controls import set_text
    from lazyexport.napari_widget import ExportWidget

    app = QApplication.instance() or QApplication([])
    viewer = ViewerModel()
    viewer.add_image(
        sample_volume((64, 256, 256)).data, name="probabilities", axis_labels=("z", "y", "x", "c")
    )
    widget = ExportWidget(viewer)
    widget.layer_box.setCurrentText("probabilities")
    widget.controls.set_roi({"z": (16, 48)})
    set_text(widget.controls.text["dtype"], "uint8")
    widget.controls.renormalize_mode.setCurrentText("fixed")
    set_text(widget.controls.text["axis-order"], "czyx")
    set_text(widget.controls.text["bin"], "y=2,x=2")
    set_text(widget.controls.text["output"], "{nickname}_{roi}.ome.zarr")
    widget.show_plan()
    widget.resize(560, widget.sizeHint().height())
    widget.show()
    app.processEvents()
    picture = widget.grab()
    if not picture.save(path):
        raise OSError(f"cannot write {path}")
    widget.close()
    return picture.width(), picture.height()


if __name__ == "__main__":
    print(grab(sys.argv[1] if len(sys.argv) > 1 else "docs/napari_widget.png"))
