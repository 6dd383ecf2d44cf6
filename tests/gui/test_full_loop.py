"""The whole loop in a real viewer: load, train, segment, evaluate, correct, fine-tune, export."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from napari_sandseg._napari.reader import napari_get_reader
from napari_sandseg._widgets._correct_widget import CorrectWidget
from napari_sandseg._widgets._evaluate_widget import EvaluateWidget
from napari_sandseg._widgets._export_widget import ExportWidget
from napari_sandseg._widgets._segment_widget import CURRENT_SLICE, SegmentWidget
from napari_sandseg._widgets._state import session_for
from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.io import read_volume
from napari_sandseg.metrics import evaluate

pytestmark = [pytest.mark.gui, pytest.mark.slow]

JOB_TIMEOUT_MS = 180_000
# How responsive the event loop stays while the engine trains is test_event_loop.py's check.


def _wait_job(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.wait(50)  # let the returned/finished signals reach the main thread


def _setup_train(widget, epochs=1) -> None:
    widget.backbone.setCurrentText("resnet18")
    widget.epochs.setValue(epochs)
    widget.batch_size.setValue(4)
    widget.val_fraction.setValue(0.25)


def test_whole_loop(tiny_viewer, tiny_files, qtbot, tmp_path, monkeypatch):
    images_path, masks_path = tiny_files
    viewer = tiny_viewer
    assert [type(l).__name__ for l in viewer.layers] == ["Image", "Labels"]
    state = session_for(viewer)

    # ---- train
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    assert train.image_picker.currentText() == "images" and train.labels_picker.currentText() == "masks"
    _setup_train(train)
    # As when the widget is first shown: the engine process starts and reports the device.
    train.detect_device()
    qtbot.waitUntil(lambda: train.device.text() != "Device: detecting...", timeout=JOB_TIMEOUT_MS)
    assert train.device.text() == "Device: CPU: no GPU found" or train.device.text().startswith("Device: GPU: ")
    train.train_button.click()
    _wait_job(qtbot, train)
    assert state.model is not None and state.model.path.exists()
    assert train.plot.series["validation loss"].y.size == 1  # live curves got the epoch
    assert train.epoch_bar.value() == 1
    cmd = train.command.command()
    assert cmd.startswith(f"sandseg train --images {images_path} --masks {masks_path} --out ")
    assert "--backbone resnet18 --epochs 1 --batch-size 4" in cmd

    # ---- segment: whole stack, then re-run with extras: same layers, no pile-up
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg.run_button.click()
    _wait_job(qtbot, seg)
    layer = viewer.layers["images segmentation"]
    assert layer.data.shape == (8, 64, 64) and 1 <= layer.data.min() and layer.data.max() <= 4
    assert "sandseg predict --model" in seg.command.command()
    seg.probabilities.setChecked(True)
    seg.uncertainty.setChecked(True)
    seg.run_button.click()
    _wait_job(qtbot, seg)
    n_layers = len(viewer.layers)
    assert "images uncertainty" in viewer.layers and "images P(pore)" in viewer.layers
    seg.run_button.click()
    _wait_job(qtbot, seg)
    assert len(viewer.layers) == n_layers
    viewer.dims.set_current_step(0, 2)
    seg.scope.setCurrentText(CURRENT_SLICE)
    seg.run_button.click()
    _wait_job(qtbot, seg)
    assert seg.last.z_start == 2 and seg.last.labels.shape[0] == 1

    # ---- evaluate: equals the engine's numbers
    ev = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(ev)
    ev.pred_picker.setCurrentText("images segmentation")
    ev.truth_picker.setCurrentText("masks")
    ev.run_button.click()
    _wait_job(qtbot, ev)
    truth_ids = viewer.layers["masks"].data - 1
    pred_ids = viewer.layers["images segmentation"].data - 1
    expected = evaluate(truth_ids, pred_ids, 4)
    np.testing.assert_allclose(ev.evaluation.report["per_class_iou"], expected["per_class_iou"])
    assert ev.evaluation.report["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert ev.command.command() == f"sandseg evaluate --truth {masks_path} --pred {ev.evaluation.pred_file}"

    # ---- correct: paint a fix on slice 5, it is tracked and autosaved; fine-tune + re-segment
    correct = CorrectWidget(viewer)
    viewer.window.add_dock_widget(correct)
    layer = viewer.layers["images segmentation"]
    correct.labels_picker.setCurrentText(layer.name)
    layer.brush_size = 9
    layer.paint((5, 30, 30), 4)
    assert state.edited_slices(layer) == [5]
    assert correct.edited.count() == 1
    state.flush_autosaves()
    assert list((tmp_path / "autosave").glob("*.npz"))
    painted = np.array(layer.data[5])
    old_model = state.model.path
    correct.epochs.setValue(1)
    correct.run_button.click()
    _wait_job(qtbot, correct)
    assert state.model.path != old_model and state.model.path.exists()
    mask = state.painted(layer)[5]  # the painted pixels are kept; the rest is the new prediction
    assert mask.any() and np.array_equal(viewer.layers["images segmentation"].data[5][mask], painted[mask])
    assert f"--init-model {old_model}" in correct.command.command()

    # ---- cancel a long run after its first epoch: it stops early and keeps the best weights
    _setup_train(train, epochs=200)
    train.patience.setValue(0)
    train.train_button.click()
    qtbot.waitUntil(lambda: len(train._epoch_x) >= 1, timeout=JOB_TIMEOUT_MS)
    seen = len(train._epoch_x)
    train.cancel_button.click()
    _wait_job(qtbot, train)
    # Cancel stops at the next batch: at most the epoch already finishing when the click
    # arrived completes (its message may still have been on the way), never the 200.
    done = len(train._epoch_x)
    assert seen <= done <= seen + 1, (seen, done)
    # "stopped at" names the epoch the cancel cut short, or the last one when it fell between two.
    assert any(train.status.text().startswith(f"Cancelled: stopped at epoch {at} of 200; kept epoch ")
               for at in (done, done + 1)), train.status.text()
    sidecar = json.loads(state.model.path.with_suffix(".json").read_text())
    assert any("cancelled" in note for note in sidecar["notes"])
    assert len(sidecar["history"]["loss"]) == done  # the saved model's history is the run shown

    # ---- export and re-read
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export)
    export.picker.setCurrentText("images segmentation")
    target = tmp_path / "exported.tif"
    export.path_edit.setText(str(target))
    export.export_button.click()
    _wait_job(qtbot, export)
    written = read_volume(target)
    assert set(np.unique(written)) <= {0, 85, 170, 255}
    [(data, kwargs, kind)] = napari_get_reader(str(target))(str(target))
    assert kind == "labels" and np.array_equal(data, viewer.layers["images segmentation"].data)


def test_closing_viewer_stops_training(tiny_viewer, qtbot):
    from napari_sandseg.model import load_model

    viewer = tiny_viewer
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    _setup_train(train, epochs=200)
    train.patience.setValue(0)
    train.train_button.click()
    job = train.job
    out = session_for(viewer).folder / "model-1.keras"
    # Close once the first best checkpoint exists (it is written just after epoch 1).
    qtbot.waitUntil(lambda: out.exists() and len(train._batch_x) > 1, timeout=JOB_TIMEOUT_MS)
    engine_pid = session_for(viewer).engine.pid
    assert engine_pid is not None
    start = time.perf_counter()
    viewer.close()
    closing_s = time.perf_counter() - start
    assert closing_s < 1.0, f"closing the viewer blocked for {closing_s:.2f} s"
    assert job.cancel_event.is_set() and job.done.wait(1.0)
    gone = time.perf_counter()
    while os.path.exists(f"/proc/{engine_pid}") and _state_of(engine_pid) != "Z" and time.perf_counter() - gone < 10:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{engine_pid}") or _state_of(engine_pid) == "Z", "the engine outlived the viewer"
    assert time.perf_counter() - gone < 5.0
    _, info = load_model(out)  # the best checkpoint survives, whole
    assert info.history["loss"]


def _state_of(pid: int) -> str:
    """The /proc state letter of ``pid`` ('Z' for an exited, unreaped process)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
