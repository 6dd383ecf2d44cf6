"""Evaluate and Export widgets in a real viewer."""

from __future__ import annotations

import json

import numpy as np
from qtpy.QtWidgets import QMessageBox

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._evaluate_widget import EvaluateWidget, worst_slices
from napari_sandseg._widgets._export_widget import ExportWidget
from napari_sandseg.classmap import ClassMap
from napari_sandseg.io import read_volume
from napari_sandseg.metrics import evaluate

JOB_TIMEOUT_MS = 60_000


def _add_truth_and_pred(viewer, labels):
    class_map = ClassMap((0, 85, 170, 255))
    pred = labels.copy()
    pred[3, :20] = (pred[3, :20] + 1) % 4  # damage slice 3
    viewer.add_labels(labels_layer_data(labels), **labels_layer_kwargs(class_map, "truth"))
    viewer.add_labels(labels_layer_data(pred), **labels_layer_kwargs(class_map, "img segmentation"))
    return class_map, pred


def test_evaluate_matches_engine_and_navigates(make_napari_viewer, qtbot, tiny_stack, tmp_path):
    viewer = make_napari_viewer()
    image, labels = tiny_stack
    viewer.add_image(image, name="img")
    class_map, pred = _add_truth_and_pred(viewer, labels)
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.pred_picker.currentText() == "img segmentation"
    assert widget.truth_picker.currentText() == "truth"
    widget.start()
    qtbot.waitUntil(lambda: widget.evaluation is not None, timeout=JOB_TIMEOUT_MS)

    expected = evaluate(labels, pred, 4, class_map.values, class_map.names)
    got = widget.evaluation.report
    np.testing.assert_allclose(got["per_class_iou"], expected["per_class_iou"])
    assert got["mean_iou"] == expected["mean_iou"]
    assert got["pixel_accuracy"] == expected["pixel_accuracy"]
    np.testing.assert_array_equal(got["confusion_matrix"], expected["confusion_matrix"])
    assert widget.table.item(0, 2).text() == f"{expected['per_class_iou'][0]:.3f}"  # IoU to 3 decimals
    assert worst_slices(got["per_slice_iou"])[0] == 3

    widget.worst.itemClicked.emit(widget.worst.item(0))  # the worst slice: 3
    assert viewer.dims.current_step[0] == 3
    widget.go_to_slice(5)
    assert viewer.dims.current_step[0] == 5

    cmd = widget.command.command()
    assert cmd.startswith("sandseg evaluate --truth ") and "--pred" in cmd
    assert read_volume(widget.evaluation.pred_file).max() == 255  # saved with the original values

    out = widget.save_figures("json", tmp_path / "eval.json")
    saved = json.loads(out.read_text())
    assert abs(saved["mean_iou"] - expected["mean_iou"]) < 1e-12
    widget.save_figures("csv", tmp_path / "eval.csv")
    assert (tmp_path / "eval_per_slice.csv").read_text().count("\n") == 1 + labels.shape[0]


def test_export_asks_before_overwriting(make_napari_viewer, qtbot, tiny_stack, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    _, labels = tiny_stack
    _add_truth_and_pred(viewer, labels)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    target = tmp_path / "export.tif"
    widget.picker.setCurrentText("truth")
    widget.path_edit.setText(str(target))
    widget.start()
    qtbot.waitUntil(lambda: target.exists() and widget.export_button.isEnabled(), timeout=JOB_TIMEOUT_MS)
    assert np.array_equal(read_volume(target), labels.astype(np.uint8) * 85)

    before = target.stat().st_mtime_ns
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.No)
    widget.start()
    assert asked and target.stat().st_mtime_ns == before  # refused: untouched

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    widget.picker.setCurrentText("img segmentation")
    widget.start()
    qtbot.waitUntil(lambda: target.stat().st_mtime_ns != before and widget.export_button.isEnabled(), timeout=JOB_TIMEOUT_MS)
    assert not np.array_equal(read_volume(target), labels.astype(np.uint8) * 85)
