"""Painting made obvious (issue 11, outcome 6): annotation layers, their legend, sparse training, suggestions."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_sandseg._napari.layers import CLASS_MAP_KEY, UNPAINTED_NAME, class_map_from_metadata
from napari_sandseg._widgets._annotation import annotation_class_map, suggest_slices
from napari_sandseg._widgets._export_widget import ExportWidget
from napari_sandseg._widgets._train_widget import SPARSE_LABEL, TrainWidget
from napari_sandseg.classmap import DEFAULT_COLORS, SANDSTONE_NAMES
from napari_sandseg.io import read_volume

pytestmark = pytest.mark.gui

SHAPE = (6, 32, 40)


@pytest.fixture
def errors():
    """Error notifications shown during the test (messages, in order)."""
    seen: list[str] = []

    def record(event) -> None:
        notification = getattr(event, "value", event)
        if notification.severity >= "error":
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def train(make_napari_viewer):
    """A Train widget in a viewer holding one image 'scan' and an annotation layer made by its button."""
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(0, 255, SHAPE, dtype=np.uint8), name="scan")
    widget = TrainWidget(viewer)
    widget.annotation.new_layer()
    return widget


def _layer(widget):
    return widget.viewer.layers["scan annotations"]


def _legend(widget) -> list[tuple[str, str, str]]:
    """(value, class, painted) of each legend row, once pending recounts have run."""
    QApplication.processEvents()
    table = widget.annotation.legend
    return [tuple(table.item(r, c).text() for c in (1, 2, 3)) for r in range(table.rowCount())]


def test_new_layer_has_the_image_shape_the_class_colours_names_and_class_map(train):
    layer = _layer(train)
    assert layer.data.shape == SHAPE and layer.data.dtype == np.uint8 and not layer.data.any()
    assert train.labels_picker.currentText() == layer.name  # picked for training at once
    quartz = SANDSTONE_NAMES.index("quartz")  # class 2, painted as 3
    np.testing.assert_allclose(layer.colormap.map(np.array([quartz + 1]))[0], DEFAULT_COLORS[quartz], atol=1e-6)
    assert layer.colormap.map(np.array([0]))[0][3] == 0  # unpainted stays clear
    assert list(layer.features["index"]) == [0, 1, 2, 3, 4]
    assert list(layer.features["class"]) == [UNPAINTED_NAME, *SANDSTONE_NAMES]
    class_map = class_map_from_metadata(layer.metadata)
    assert class_map == annotation_class_map() and class_map.values == (1, 2, 3, 4)
    # napari's status bar reads the class name from the features
    layer.data[2, 5, 5] = quartz + 1
    assert "class: quartz" in layer.get_status((2, 5, 5))["value"]
    assert (layer.mode, layer.selected_label) == ("paint", 1)


def test_legend_counts_follow_paint_events(train):
    layer = _layer(train)
    assert [row[2] for row in _legend(train)] == ["0"] * 4
    layer.brush_size = 1
    layer.paint((1, 10, 10), 3)
    layer.paint((4, 20, 20), 3)
    layer.paint((4, 21, 21), 1)
    rows = _legend(train)
    assert rows[0] == ("1", "pore", "1") and rows[2] == ("3", "quartz", "2") and rows[1][2] == "0"
    layer.brush_size = 5
    layer.paint((1, 10, 10), 3)  # a bigger stroke over the first one
    expected = np.bincount(layer.data.ravel(), minlength=5)
    assert [int(row[2].replace(",", "")) for row in _legend(train)] == expected[1:].tolist()


def test_clicking_a_legend_row_picks_the_brush_value(train, qtbot):
    layer = _layer(train)
    table = train.annotation.legend
    rect = table.visualRect(table.model().index(2, 2))
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())
    assert layer.selected_label == 3 and layer.mode == "paint"
    layer.selected_label = 4  # chosen in napari's own controls: the legend follows
    assert table.selectionModel().selectedRows()[0].row() == 3


def test_rename_and_add_class_update_names_colours_and_metadata(train, errors):
    layer, panel = _layer(train), train.annotation
    panel.legend.selectRow(1)
    panel.name_edit.setText("kaolinite")
    panel.rename_button.click()
    panel.name_edit.setText("pyrite")
    panel.add_button.click()
    class_map = class_map_from_metadata(layer.metadata)
    assert class_map.names == ("pore", "kaolinite", "quartz", "bright mineral", "pyrite")
    assert class_map.values == (1, 2, 3, 4, 5)
    assert list(layer.features["class"]) == [UNPAINTED_NAME, *class_map.names]
    np.testing.assert_allclose(layer.colormap.map(np.array([5]))[0], DEFAULT_COLORS[4], atol=1e-6)
    assert _legend(train)[4] == ("5", "pyrite", "0")
    layer.brush_size = 1
    layer.paint((0, 3, 3), 5)  # the new class counts too
    assert _legend(train)[4][2] == "1"
    panel.name_edit.setText("quartz")  # taken
    panel.add_button.click()
    assert len(class_map_from_metadata(layer.metadata).names) == 5 and "already" in errors[-1]


def test_sparse_is_ticked_for_an_annotation_layer_and_restored_after(train, make_napari_viewer):
    viewer = train.viewer
    assert train.sparse.isChecked() and not train.sparse_reason.isHidden()
    assert "annotation layer" in train.sparse_reason.text()
    viewer.add_labels(np.ones(SHAPE, np.uint8), name="truth", metadata={})
    train.labels_picker.select("truth")
    assert not train.sparse.isChecked() and train.sparse_reason.isHidden()  # the user's setting again


def test_dense_training_on_a_partly_painted_layer_names_the_setting(train, errors):
    train.sparse.setChecked(False)  # the user unticks it
    train.start()
    assert train.job is None and f"tick '{SPARSE_LABEL}'" in errors[-1] and "unpainted" in errors[-1]


def test_suggestions_follow_uncertainty_else_the_least_painted_slices(train):
    panel, layer = train.annotation, _layer(train)
    layer.brush_size = 3
    layer.paint((0, 10, 10), 1)
    layer.paint((5, 10, 10), 2)
    QApplication.processEvents()
    texts = [panel.suggestions.item(i).text() for i in range(panel.suggestions.count())]
    assert texts[0] == "slice 2: 0 painted pixels"  # unpainted, farthest from the painted slices 0 and 5
    assert sorted(int(t.split(":")[0].split()[1]) for t in texts[:4]) == [1, 2, 3, 4]  # painted ones last
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[4] = 0.9
    uncertainty[1] = 0.5
    train.viewer.add_image(uncertainty, name="scan uncertainty")
    panel.suggest_button.click()
    zs = [panel.suggestions.item(i).data(Qt.UserRole) for i in range(panel.suggestions.count())]
    assert zs[:2] == [4, 1]
    panel.suggestions.itemClicked.emit(panel.suggestions.item(1))
    assert train.viewer.dims.current_step[0] == 1


def test_suggest_slices_pure():
    assert [z for z, _ in suggest_slices(np.array([0, 0, 0, 0, 5]), n=2)] == [0, 2]  # far from 4, then from 0
    assert [z for z, _ in suggest_slices(np.zeros(9), n=3)] == [0, 8, 4]  # spread over an unpainted stack
    assert [z for z, _ in suggest_slices(np.array([9, 0, 3]), np.array([0.1, 0.2, 0.7]))] == [2, 1, 0]


def test_an_annotation_layer_exports_its_values_as_painted(train, qtbot, tmp_path, errors):
    layer = _layer(train)
    layer.brush_size = 1
    layer.paint((2, 4, 4), 3)
    layer.paint((3, 8, 9), 4)
    export = ExportWidget(train.viewer)
    export.picker.select(layer.name)
    export.path_edit.setText(str(tmp_path / "scribbles.tif"))
    export.start()
    qtbot.waitUntil(lambda: export.job is None or not export.job.running, timeout=20_000)
    assert not errors, errors
    np.testing.assert_array_equal(read_volume(tmp_path / "scribbles.tif"), layer.data)  # 0 = unpainted
    assert CLASS_MAP_KEY in layer.metadata
