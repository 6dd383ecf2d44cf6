"""The bad-input matrix in napari (issue #5): the reader and the widgets.

A bad file or a bad layer choice must end as one napari error notification that names the file
(or layer) and the problem: no exception escaping into napari, no reader dialog with a
traceback, no job left running, and no existing file changed.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._napari.reader import NO_LAYERS, napari_get_reader
from napari_sandseg._widgets._export_widget import ExportWidget
from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.classmap import ClassMap
from napari_sandseg.io import write_volume

JOB_TIMEOUT_MS = 60_000


@pytest.fixture
def errors(monkeypatch):
    """The error notifications napari receives during the test (messages, in order)."""
    seen: list[str] = []

    def record(event) -> None:
        notification = getattr(event, "value", event)
        if notification.severity >= NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, word the message must hold)."""
    good = write_volume(tmp / "good.tif", np.zeros((4, 16, 16), np.uint8) + np.arange(16, dtype=np.uint8))
    cut = tmp / "cut.tif"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "photo.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    tifffile.imwrite(tmp / "rgb.tif", np.zeros((2, 16, 16, 3), np.uint8), photometric="rgb")
    write_volume(tmp / "nan.tif", np.full((2, 8, 8), np.nan, np.float32))
    return {
        "missing file": (tmp / "nope.tif", "not found"),
        "empty file": (tmp / "empty.tif", "empty"),
        "truncated TIFF": (cut, "truncated"),
        "not a TIFF": (tmp / "photo.tif", "not a TIFF"),
        "RGB stack": (tmp / "rgb.tif", "RGB"),
        "NaN pixels": (tmp / "nan.tif", "NaN"),
    }


CASES = ["missing file", "empty file", "truncated TIFF", "not a TIFF", "RGB stack", "NaN pixels"]


@pytest.mark.parametrize("case", CASES)
def test_reader_turns_a_bad_file_into_one_notification(case, tmp_path, errors):
    path, word = _bad_files(tmp_path)[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    reader = napari_get_reader(str(path))
    assert reader is not None
    assert reader(str(path)) == NO_LAYERS  # napari's "read, no layers": no dialog, nothing raised
    assert len(errors) == 1 and path.name in errors[0] and word in errors[0], errors
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_viewer_open_of_a_bad_file_adds_nothing_and_notifies(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    path, _ = _bad_files(tmp_path)["truncated TIFF"]
    assert viewer.open(str(path), plugin="napari-sandseg") == []
    assert len(viewer.layers) == 0
    assert len(errors) == 1 and "cut.tif" in errors[0] and "truncated" in errors[0]


def test_reader_ignores_what_it_does_not_read(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without TIFFs


# ----------------------------------------------------------------------------- widgets


def _labels(viewer, shape=(4, 16, 16), name="segmentation"):
    data = np.zeros(shape, np.uint8)
    data[:, :8] = 1
    return viewer.add_labels(labels_layer_data(data), **labels_layer_kwargs(ClassMap((0, 255)), name))


def _export(viewer, qtbot, target: Path):
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picker.setCurrentText("segmentation")
    widget.path_edit.setText(str(target))
    widget.start()
    if widget.job is not None:
        qtbot.waitUntil(lambda: not widget.job.running and widget.export_button.isEnabled(), timeout=JOB_TIMEOUT_MS)
    return widget


def test_export_to_a_folder_or_below_a_file_notifies(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    _labels(viewer)
    (tmp_path / "out.tif").mkdir()
    (tmp_path / "plain").write_text("a file, not a folder")
    widget = _export(viewer, qtbot, tmp_path / "out.tif")
    assert widget.job is None and len(errors) == 1 and "out.tif" in errors[0] and "folder" in errors[0]
    widget = _export(viewer, qtbot, tmp_path / "plain" / "sub" / "labels.tif")
    assert widget.job is None and len(errors) == 2 and "plain" in errors[1] and "cannot create" in errors[1]
    widget = _export(viewer, qtbot, tmp_path / "plain" / "labels.tif")  # checked by the engine, in the job
    qtbot.waitUntil(lambda: len(errors) == 3, timeout=5_000)
    assert "plain" in errors[2] and "does not exist" in errors[2]
    assert (tmp_path / "plain").read_text() == "a file, not a folder"


def test_export_disk_full_keeps_the_previous_file(make_napari_viewer, qtbot, tmp_path, errors, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    viewer = make_napari_viewer()
    _labels(viewer)
    target = write_volume(tmp_path / "labels.tif", np.full((4, 16, 16), 7, np.uint8))
    before = target.read_bytes()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", full)
    _export(viewer, qtbot, target)
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=5_000)
    assert "labels.tif" in errors[0] and "disk is full" in errors[0]
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_train_settings_outside_their_range_cannot_be_entered(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    for box, bad, clamped in ((widget.epochs, 0, 1), (widget.batch_size, -4, 1),
                              (widget.val_fraction, 0.0, 0.01), (widget.val_fraction, 1.5, 0.9)):
        box.setValue(bad)
        assert box.value() == pytest.approx(clamped)
    widget.config().validate()  # whatever the boxes show is a valid configuration


def test_train_without_layers_notifies(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.start()
    assert widget.job is None and len(errors) == 1 and "labels layer" in errors[0]


def test_train_on_image_and_labels_of_different_shapes_notifies(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 16, 16), np.uint8), name="img")
    _labels(viewer, (4, 16, 24), name="masks")
    widget = TrainWidget(viewer)
    widget.start()
    assert widget.job is None, "the mismatch must be found before any worker starts"
    assert len(errors) == 1 and "'img'" in errors[0] and "'masks'" in errors[0] and "shape" in errors[0]
    assert widget.train_button.isEnabled()
