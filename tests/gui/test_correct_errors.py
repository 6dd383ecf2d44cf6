"""Edit tracking, autosave/restore, and errors shown as notifications (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np

import napari_sandseg._widgets._train_widget as train_module
import napari_sandseg._widgets._workers as workers_module
from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._correct_widget import CorrectWidget
from napari_sandseg._widgets._evaluate_widget import EvaluateWidget
from napari_sandseg._widgets._state import session_for
from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.classmap import ClassMap

SHAPE = (8, 64, 64)


def _seg_layer(viewer, name="img segmentation"):
    cm = ClassMap((0, 1, 2, 3))
    return viewer.add_labels(labels_layer_data(np.zeros(SHAPE, np.uint8)), **labels_layer_kwargs(cm, name))


def test_paint_events_are_tracked_autosaved_and_restored(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _seg_layer(viewer)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    layer.brush_size = 5
    layer.paint((2, 10, 10), 3)
    layer.fill((6, 40, 40), 4)  # whole slice 6 (contiguous region)
    state = session_for(viewer)
    assert state.edited_slices(layer) == [2, 6]
    assert widget.edited.count() == 2
    state.flush_autosaves()
    painted = np.array(layer.data)
    assert list((tmp_path / "autosave").glob("*.npz"))

    # "after a crash": a fresh viewer with the same layer, restored from the autosave
    viewer2 = make_napari_viewer()
    layer2 = _seg_layer(viewer2)
    widget2 = CorrectWidget(viewer2)
    viewer2.window.add_dock_widget(widget2)
    assert widget2.restore() == 2
    assert np.array_equal(layer2.data, painted)
    assert session_for(viewer2).edited_slices(layer2) == [2, 6]
    layer2.undo()  # restoring is an ordinary, undoable edit
    assert not np.array_equal(layer2.data, painted)


def test_errors_become_notifications(make_napari_viewer, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(train_module, "show_error", shown.append)
    monkeypatch.setattr(workers_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(SHAPE, np.uint8), name="img")
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="masks")  # all unpainted: cannot train densely
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    train.start()
    assert shown and "unpainted" in shown[-1] and train.job is None

    # an engine error raised inside a worker: shown, not raised
    cm = ClassMap((0, 1))
    viewer.add_labels(np.ones((2, 8, 8), np.uint8), **labels_layer_kwargs(cm, "small"))
    viewer.add_labels(np.ones((3, 8, 8), np.uint8), **labels_layer_kwargs(cm, "other"))
    ev = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(ev)
    ev.pred_picker.setCurrentText("small")
    ev.truth_picker.setCurrentText("other")
    ev.start()
    qtbot.waitUntil(lambda: not ev.job.running, timeout=30_000)
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=5_000)
    assert "shape" in shown[-1] and ev.evaluation is None
