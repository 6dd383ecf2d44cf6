"""The plugin runs on PyQt6 as well as PyQt5: the five widgets docked in a napari viewer, used a little."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

#: Run in a fresh interpreter: the Qt binding is chosen (QT_API) when qtpy is first imported.
SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import qtpy
    from qtpy.QtWidgets import QApplication

    from napari_sandseg._napari.launch import WIDGETS, open_viewer

    assert qtpy.API_NAME == "PyQt6", qtpy.API_NAME
    viewer = open_viewer(show=True)
    app = QApplication.instance()
    docks = viewer.window._dock_widgets
    widgets = {name: docks[f"{name} (napari-sandseg)"].widget() for name in WIDGETS}
    print("widgets:", {name: type(w).__name__ for name, w in widgets.items()})

    # Enum-heavy paths: the command box, a plot with a legend, a picker chosen by hand.
    train = widgets["Train"]
    train.command.set_command(["sandseg", "train", "--images", "/a/b.tif", "--epochs", 3])
    train.plot.set_series("training loss", [1, 2], [0.5, 0.4], "#3c9be8", points=True)
    train.plot.grab()
    ev = widgets["Evaluate"]
    image, masks = viewer.layers  # the bundled sample
    guess = np.asarray(masks.data).copy()
    guess[:, :8] = 1  # a prediction with some mistakes
    viewer.add_labels(guess, name=f"{image.name} segmentation",
                      metadata={"sandseg_class_map": masks.metadata["sandseg_class_map"]})
    assert ev.pred_picker.currentText() == f"{image.name} segmentation"
    ev.pred_picker.activated.emit(0)
    ev.start()
    while ev.job.running or ev.evaluation is None:
        app.processEvents()
    print("mean IoU", ev.evaluation.report["mean_iou"])
    assert 0.0 < ev.evaluation.report["mean_iou"] < 1.0
    print("PYQT6 OK")
    """
)


def test_widgets_dock_and_work_on_pyqt6(tmp_path):
    if importlib.util.find_spec("PyQt6") is None:
        pytest.skip("PyQt6 is not installed (pip install PyQt6)")
    env = {**os.environ, "QT_API": "pyqt6", "SANDSEG_SESSION_DIR": str(tmp_path / "session"),
           "SANDSEG_AUTOSAVE_DIR": str(tmp_path / "autosave")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert "PYQT6 OK" in done.stdout, output
    assert "TrainWidget" in done.stdout and "ExportWidget" in done.stdout, output
