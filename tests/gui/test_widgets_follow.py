"""Widgets follow the user (issue 10, outcome 4): pickers, refusals, default paths, status lines, Cancel."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._correct_widget import CorrectWidget
from napari_sandseg._widgets._evaluate_widget import EvaluateWidget
from napari_sandseg._widgets._export_widget import ExportWidget
from napari_sandseg._widgets._segment_widget import SegmentWidget
from napari_sandseg._widgets._texts import epoch_text, training_result_text
from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.engine_requests import TrainSummary
from napari_sandseg.classmap import ClassMap
from napari_sandseg.errors import Cancelled, InputError
from napari_sandseg.events import TrainEvent

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 60_000
SHAPE = (4, 32, 32)
CLASSES = ClassMap((0, 1, 2, 3))


def _messages(notes, severity) -> list[str]:
    return [message for level, message in notes if level == severity]


def _ids(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=SHAPE).astype(np.uint8)


def _add_labels(viewer, name: str, ids: np.ndarray, class_map: ClassMap = CLASSES, source: Path | None = None):
    return viewer.add_labels(labels_layer_data(ids), **labels_layer_kwargs(class_map, name, source=source))


def _viewer_as_at_start(make_napari_viewer):
    """An image and its ``masks``, with the five widgets made (as ``sandseg gui`` docks them)."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(SHAPE, np.uint8), name="images")
    _add_labels(viewer, "masks", _ids())
    widgets = {cls: cls(viewer) for cls in (TrainWidget, SegmentWidget, CorrectWidget, EvaluateWidget, ExportWidget)}
    for widget in widgets.values():
        viewer.window.add_dock_widget(widget)
    return viewer, widgets


def _pick_by_hand(picker, name: str) -> None:
    """What choosing an entry in the list does: select it, then Qt's ``activated``."""
    index = picker.findText(name)
    picker.setCurrentIndex(index)
    picker.activated.emit(index)


def test_pickers_adopt_a_new_segmentation_until_the_user_picks_one(make_napari_viewer):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    ev, correct, export = w[EvaluateWidget], w[CorrectWidget], w[ExportWidget]
    # Only the masks exist: everything points at them.
    assert ev.pred_picker.currentText() == ev.truth_picker.currentText() == "masks"
    assert correct.labels_picker.currentText() == export.picker.currentText() == "masks"
    assert Path(export.path_edit.text()).name == "masks.tif"

    seg = _add_labels(viewer, "images segmentation", _ids(1))
    assert ev.pred_picker.currentText() == "images segmentation"
    assert ev.truth_picker.currentText() == "masks"  # the truth does not chase segmentations
    assert correct.labels_picker.currentText() == "images segmentation"
    assert export.picker.currentText() == "images segmentation"
    assert Path(export.path_edit.text()).name == "images_segmentation.tif"
    # Correct tracks the edits of the layer it now shows.
    seg.brush_size = 3
    seg.paint((2, 10, 10), 2)
    assert correct.edited_label.text().startswith("Edited slices: 1")

    # A pick by hand sticks: a newer segmentation no longer moves Evaluate's prediction.
    _pick_by_hand(ev.pred_picker, "masks")
    _add_labels(viewer, "other segmentation", _ids(2))
    assert ev.pred_picker.currentText() == "masks"
    assert correct.labels_picker.currentText() == export.picker.currentText() == "other segmentation"
    # Renaming the picked layer keeps it picked, under its new name.
    viewer.layers["masks"].name = "truth"
    assert ev.pred_picker.currentText() == "truth" and ev.truth_picker.currentText() == "truth"
    # Once the picked layer is gone, the picker follows new segmentations again.
    _pick_by_hand(ev.pred_picker, "images segmentation")
    viewer.layers.remove("images segmentation")
    _add_labels(viewer, "third segmentation", _ids(3))
    assert ev.pred_picker.currentText() == "third segmentation"


def test_evaluate_refuses_one_layer_or_one_file_as_both(make_napari_viewer, qtbot, notes, tmp_path):
    from napari_sandseg.io import write_labels

    viewer, w = _viewer_as_at_start(make_napari_viewer)
    ev = w[EvaluateWidget]
    ev.start()
    errors = _messages(notes, NotificationSeverity.ERROR)
    assert ev.job is None and len(errors) == 1
    assert "'masks' is picked as both the prediction and the ground truth" in errors[0]

    path = write_labels(tmp_path / "truth.tif", _ids(), CLASSES)
    _add_labels(viewer, "first copy", _ids(), source=path)
    _add_labels(viewer, "second copy", _ids(), source=path)
    ev.pred_picker.setCurrentText("first copy")
    ev.truth_picker.setCurrentText("second copy")
    ev.start()
    errors = _messages(notes, NotificationSeverity.ERROR)
    assert ev.job is None and len(errors) == 2 and f"both read from {path}" in errors[1]


def test_export_path_follows_the_layer_until_the_user_gives_one(make_napari_viewer, tmp_path):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    export = w[ExportWidget]
    _add_labels(viewer, "images segmentation", _ids(1))
    assert Path(export.path_edit.text()).name == "images_segmentation.tif"
    mine = str(tmp_path / "mine.tif")
    export.path_edit.setText(mine)
    export.picker.setCurrentText("masks")
    assert export.path_edit.text() == mine  # the user's path is never replaced
    export.path_edit.setText("")  # cleared: the default follows the layer again
    export.picker.setCurrentText("images segmentation")
    assert Path(export.path_edit.text()).name == "images_segmentation.tif"


def _fails(cancel):
    yield "working"
    raise InputError("images.tif: the file is empty")


def _waits_for_cancel(cancel):
    while not cancel.is_set():
        yield "working"
        time.sleep(0.02)
    time.sleep(0.2)  # the engine finishes its batch
    raise Cancelled("segmentation cancelled; nothing was written")


@pytest.mark.parametrize("cls", [TrainWidget, SegmentWidget, CorrectWidget, EvaluateWidget, ExportWidget])
def test_a_failed_run_resets_the_status_line(make_napari_viewer, qtbot, cls):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    widget = w[cls]
    widget.set_status("writing ...")
    widget.run_job(_fails, on_yield=widget.set_status)
    qtbot.waitUntil(lambda: not widget.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.status_line().text() == "Failed: images.tif: the file is empty", timeout=5_000)


def test_real_failures_reset_evaluate_and_export(make_napari_viewer, qtbot, tmp_path):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    ev, export = w[EvaluateWidget], w[ExportWidget]
    _add_labels(viewer, "short segmentation", _ids()[:2])  # 2 slices against 4: refused by the engine
    ev.start()
    assert ev.summary.text() == "evaluating..."
    qtbot.waitUntil(lambda: ev.summary.text() != "evaluating...", timeout=JOB_TIMEOUT_MS)
    assert ev.summary.text().startswith("Failed: ") and "shape" in ev.summary.text()

    (tmp_path / "plain").write_text("a file, not a folder")
    export.path_edit.setText(str(tmp_path / "plain" / "labels.tif"))  # checked in the job
    export.start()
    qtbot.waitUntil(lambda: not export.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: export.status.text().startswith("Failed: "), timeout=5_000)
    assert "does not exist" in export.status.text()


@pytest.mark.parametrize("cls", [TrainWidget, SegmentWidget, CorrectWidget])
def test_cancel_says_stopping_and_stays_disabled_until_the_job_ends(make_napari_viewer, qtbot, cls):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    widget = w[cls]
    widget.run_job(_waits_for_cancel, on_yield=widget.show_progress)
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    assert widget.status.text() == "stopping..." and not widget.cancel_button.isEnabled()
    qtbot.wait(50)  # progress that still arrives does not replace "stopping..."
    assert widget.job.running and widget.status.text() == "stopping..." and not widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.status.text() != "stopping...", timeout=5_000)
    assert widget.status.text() == "Segmentation cancelled; nothing was written"
    assert not widget.cancel_button.isEnabled()


def _summary(history, best, cancelled):
    return TrainSummary(None, Path("model.keras"), history, cancelled, best)


def test_training_result_line_names_the_kept_epoch():
    history = {"loss": [1.2, 0.9], "val_loss": [1.1, 1.0], "val_mean_iou": [0.7, 0.81234]}
    assert (training_result_text(_summary(history, 1, True), "val_mean_iou", 20, cut_short=2)
            == "Cancelled: stopped at epoch 3 of 20; kept epoch 2 (validation mean IoU 0.812)")
    assert (training_result_text(_summary(history, 0, False), "val_loss", 2)
            == "Done: 2 epoch(s); kept epoch 1 (validation loss 1.1)")
    assert "stopped early after epoch 2 of 5" in training_result_text(_summary(history, 1, False), "val_loss", 5)
    assert (training_result_text(_summary({}, None, True), "val_mean_iou", 5, cut_short=0)
            == "Cancelled: stopped at epoch 1 of 5; no epoch finished, so the partly trained weights were kept")
    assert training_result_text(_summary({}, None, True), "val_mean_iou", 5).startswith("Cancelled before the first epoch;")


def test_train_widget_plots_only_whole_epochs_and_rounds_figures(make_napari_viewer):
    viewer, w = _viewer_as_at_start(make_napari_viewer)
    train = w[TrainWidget]
    epoch = TrainEvent("epoch", 0, 20, -1, 4, 1.4756016731262207, 1.2345678, {"val_mean_iou": 0.81234567})
    assert epoch_text(epoch) == ("epoch 1/20: training loss 1.476, validation loss 1.235, "
                                 "validation mean IoU 0.812")
    train._on_event(epoch)
    assert train.status.text() == epoch_text(epoch)
    train._on_event(TrainEvent("batch", 1, 20, 0, 4, 1.1))
    train._on_event(TrainEvent("stopped", 1, 20, -1, 4, 1.0))
    assert train.plot.series["validation loss"].x.tolist() == [1.0]  # the cut-short epoch is no point
    assert train.plot.series["training loss"].x.tolist() == [1.0]
    assert "epoch 2 of 20 was cut short" in train.status.text()
    assert set(train.plot.series) == {"training loss (per batch)", "training loss", "validation loss",
                                      "validation mean IoU"}


def test_train_widget_says_a_sparse_validation_figure_scores_the_strokes(make_napari_viewer):
    from napari_sandseg._widgets._train_widget import PAINTED_ONLY
    from napari_sandseg.config import TrainConfig

    viewer, w = _viewer_as_at_start(make_napari_viewer)
    train = w[TrainWidget]
    epoch = TrainEvent("epoch", 0, 20, -1, 4, 1.4, 1.2, {"val_mean_iou": 0.96})
    train._pending = (None, None, None, None, TrainConfig.default(sparse=True))
    train._on_event(epoch)
    assert train.status.text().endswith(f"validation mean IoU 0.960 ({PAINTED_ONLY})")
    assert f"validation mean IoU ({PAINTED_ONLY})" in train.plot.series
    train._reset_curves()
    train._pending = (None, None, None, None, TrainConfig.default(sparse=False))
    train._on_event(epoch)
    assert "painted" not in train.status.text() and "validation mean IoU" in train.plot.series


def test_evaluate_warns_when_the_class_values_differ(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    ids = _ids()
    _add_labels(viewer, "truth", ids, ClassMap((1, 2, 3, 4)))
    _add_labels(viewer, "images segmentation", ids, ClassMap((0, 1, 2, 3)))
    ev = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(ev)
    ev.start()
    qtbot.waitUntil(lambda: ev.evaluation is not None, timeout=JOB_TIMEOUT_MS)
    warnings = _messages(notes, NotificationSeverity.WARNING)
    assert len(warnings) == 1
    assert "'truth' holds class values [1, 2, 3, 4]" in warnings[0] and "holds [0, 1, 2, 3]" in warnings[0]
    assert "Warning:" in ev.summary.text()


def test_evaluate_shows_rounded_figures_without_a_warning_for_matching_values(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    truth, pred = _ids(), _ids()
    pred[0] = (pred[0] + 1) % 4
    _add_labels(viewer, "truth", truth)
    _add_labels(viewer, "images segmentation", pred)
    ev = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(ev)
    ev.start()
    qtbot.waitUntil(lambda: ev.evaluation is not None, timeout=JOB_TIMEOUT_MS)
    assert not _messages(notes, NotificationSeverity.WARNING)
    mean = ev.evaluation.report["mean_iou"]
    assert ev.summary.text().startswith(f"mean IoU {mean:.3f}    pixel accuracy ")
