"""napari shows the voxel size a TIFF carries: layer scale and units, results laid over their image."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sandseg.classmap import ClassMap
from napari_sandseg.io import read_volume
from napari_sandseg.units import read_voxel_size

pytestmark = pytest.mark.gui

VOXEL = ((5.0, 2.5, 2.0), "um")
CLASS_MAP = ClassMap((0, 85, 170, 255))


class _State:
    """The one call of the session state that showing a segmentation makes."""

    def clear_edits(self, layer) -> None:
        pass


def _write_scan(path, volume):
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 2.0, 1 / 2.5),
                     metadata={"spacing": 5.0, "unit": "micron", "axes": "ZYX"})
    return path


def test_reader_sets_scale_and_results_take_it(make_napari_viewer, qtbot, tiny_stack, tmp_path):
    from napari_sandseg._widgets._export_widget import ExportWidget
    from napari_sandseg._widgets._results import Segmentation, preview_name, show_preview, show_segmentation

    image, labels = tiny_stack
    viewer = make_napari_viewer()
    viewer.open(str(_write_scan(tmp_path / "scan.tif", image)), plugin="napari-sandseg")
    viewer.open(str(_write_scan(tmp_path / "scan_mask.tif", labels.astype(np.uint8) * 85)), plugin="napari-sandseg")
    scan, mask = viewer.layers["scan"], viewer.layers["scan_mask"]
    for layer in (scan, mask):
        np.testing.assert_allclose(layer.scale, (5.0, 2.5, 2.0))
        assert [str(u) for u in layer.units] == ["micrometer"] * 3
    assert not viewer.scale_bar.visible  # the user's choice until a result is shown in physical units

    seg = Segmentation("scan", CLASS_MAP, labels.astype(np.uint8), probabilities=np.full(labels.shape + (4,), 0.25,
                       np.float32), uncertainty=np.zeros(labels.shape, np.float32))
    layer = show_segmentation(viewer, seg, _State())
    for shown in (layer, viewer.layers["scan P(pore)"], viewer.layers["scan uncertainty"]):
        np.testing.assert_allclose(shown.scale, scan.scale)
        assert shown.units == scan.units
    assert viewer.scale_bar.visible
    preview = show_preview(viewer, "scan", CLASS_MAP, 3, labels[3].astype(np.uint8), labels.shape)
    assert viewer.layers[preview_name("scan")] is preview
    np.testing.assert_allclose(preview.scale, scan.scale)

    scan.scale = (4.0, 2.0, 2.0)  # the user corrects the voxel size: the next result follows
    layer = show_segmentation(viewer, seg, _State())
    np.testing.assert_allclose(layer.scale, (4.0, 2.0, 2.0))

    export = ExportWidget(viewer)
    target = tmp_path / "exported.tif"
    export.picker.setCurrentText(layer.name)
    export.path_edit.setText(str(target))
    export.start()
    qtbot.waitUntil(lambda: target.exists() and export.export_button.isEnabled(), timeout=60_000)
    assert read_voxel_size(target) == ((4.0, 2.0, 2.0), "um")
    np.testing.assert_array_equal(read_volume(target), CLASS_MAP.decode(labels.astype(np.uint8)))


def test_a_file_without_voxel_size_stays_in_pixels(make_napari_viewer, tiny_files):
    from napari_sandseg._widgets._results import Segmentation, show_segmentation

    viewer = make_napari_viewer()
    viewer.open(str(tiny_files[0]), plugin="napari-sandseg")
    image = viewer.layers["images"]
    np.testing.assert_allclose(image.scale, (1.0, 1.0, 1.0))
    layer = show_segmentation(viewer, Segmentation("images", CLASS_MAP, np.zeros(image.data.shape, np.uint8)),
                              _State())
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0))
    assert not viewer.scale_bar.visible


def test_evaluate_shows_physical_accuracy_in_the_layers_unit(make_napari_viewer, qtbot, tmp_path):
    """Truth: a pore layer 5 voxels thick (porosity 1/4); prediction: the same plus 8 isolated pore
    voxels (+0.2 pp porosity, all isolated). The widget's table, note, JSON and command say so."""
    import json

    from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
    from napari_sandseg._widgets._evaluate_widget import EvaluateWidget

    class_map = ClassMap((0, 255))
    truth = np.ones((10, 20, 20), np.uint8)  # class ids: 0 pore, 1 solid
    truth[..., 5:10] = 0
    pred = truth.copy()
    pred[4:6, 4:6, 14:16] = 0
    viewer = make_napari_viewer()
    physical = {"scale": (2.0, 2.0, 2.0), "units": ("um",) * 3}
    viewer.add_labels(labels_layer_data(truth), **labels_layer_kwargs(class_map, "truth"), **physical)
    viewer.add_labels(labels_layer_data(pred), **labels_layer_kwargs(class_map, "scan segmentation"), **physical)
    widget = EvaluateWidget(viewer)
    widget.start()
    qtbot.waitUntil(lambda: widget.evaluation is not None, timeout=60_000)

    rows = {widget.physical.item(i, 0).text(): [widget.physical.item(i, j).text() for j in (1, 2, 3)]
            for i in range(widget.physical.rowCount())}
    assert rows["porosity"] == ["25.00 %", "25.20 %", "+0.20 pp"]
    assert rows["connected porosity"] == ["25.00 %", "25.00 %", "+0.00 pp"]
    assert rows["isolated porosity"][2] == "+0.20 pp"
    assert rows["mean pore size"][0].endswith(" um") and rows["pore-size distribution distance"][2].endswith(" um")
    assert "voxel size 2 x 2 x 2 um" in widget.physical_note.text()
    assert "--voxel-size 2um" in widget.command.command()
    saved = json.loads(widget.save_figures("json", tmp_path / "eval.json").read_text())
    assert saved["physical"]["difference"]["porosity_pp"] == pytest.approx(0.2)
    assert saved["physical"]["unit"] == "um" and saved["mean_iou"] > 0.99


def test_analyze_takes_the_layers_scale_unless_typed(make_napari_viewer, qtbot, tiny_stack):
    """A labels layer in micrometres is measured in them; a typed voxel size wins; pixels say so."""
    from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
    from napari_sandseg._widgets._analyze_widget import AnalyzeWidget
    from napari_sandseg.cli import build_parser

    _, ids = tiny_stack
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels_layer_data(ids), **labels_layer_kwargs(CLASS_MAP, "scan segmentation"),
                              scale=(5.0, 2.5, 2.0), units=("um",) * 3)
    widget = AnalyzeWidget(viewer)
    widget.pore_sizes.setChecked(False)  # the slow measure; the voxel size is what is checked here
    assert widget.voxel_size.placeholderText().startswith("5,2.5,2um (the layer's own")

    def run() -> dict:
        widget.analysis = None
        widget.start()
        qtbot.waitUntil(lambda: widget.analysis is not None, timeout=60_000)
        return widget.analysis.report

    report = run()
    assert (report["voxel_size"], report["unit"]) == ([5.0, 2.5, 2.0], "um")
    assert build_parser().parse_args(widget.command.command().split()[1:]).voxel_size == "5,2.5,2um"
    # Specific surface area is area / volume: halving every edge doubles it.
    surface = report["specific_surface_area"]

    widget.voxel_size.setText("2.5, 1.25, 1 um")
    report = run()
    assert (report["voxel_size"], report["unit"]) == ([2.5, 1.25, 1.0], "um")
    for value, area in report["specific_surface_area"].items():
        assert area == pytest.approx(2 * surface[value])

    widget.voxel_size.setText("")
    layer.scale, layer.units = (1.0, 1.0, 1.0), ("pixel",) * 3  # the user took the scale off the layer
    report = run()
    assert report["unit"] == "px" and "lengths are in pixels" in widget.status.text()
    assert "--voxel-size" not in widget.command.command()


@pytest.mark.slow
def test_train_and_segment_take_a_typed_voxel_size(tiny_viewer, qtbot, tmp_path):
    """images.tif carries no voxel size: Train records the typed one in the model, Segment puts
    it on the image, its Labels layer and the file it writes; both command lines repeat it."""
    from napari_sandseg._widgets._segment_widget import SegmentWidget
    from napari_sandseg._widgets._state import session_for
    from napari_sandseg._widgets._train_widget import TrainWidget
    from napari_sandseg.cli import build_parser
    from napari_sandseg.lazy import open_volume
    from napari_sandseg.model import read_info

    viewer = tiny_viewer
    image = viewer.layers["images"]
    state = session_for(viewer)

    def wait(widget) -> None:
        qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=300_000)
        qtbot.wait(50)

    def parsed(widget):
        return build_parser().parse_args(widget.command.command().split()[1:])

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    assert train.voxel_size.placeholderText().endswith("(empty: none recorded)")
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(1)
    train.batch_size.setValue(4)
    train.val_fraction.setValue(0.25)
    train.voxel_size.setText("5,2.5,2 µm")
    train.train_button.click()
    wait(train)
    assert read_info(state.model.path).voxel_size == VOXEL
    assert parsed(train).voxel_size == "5,2.5,2um"
    np.testing.assert_allclose(image.scale, (1.0, 1.0, 1.0))  # training does not rescale the image

    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg.run_button.click()  # nothing typed, nothing on the layer: pixels, as before
    wait(seg)
    np.testing.assert_allclose(viewer.layers["images segmentation"].scale, (1.0, 1.0, 1.0))
    assert "--voxel-size" not in seg.command.command()

    out = tmp_path / "images_labels.zarr"
    seg.voxel_size.setText("5,2.5,2um")
    seg.to_file.click()
    seg.out_edit.setText(str(out))
    seg.out_edit.textEdited.emit(str(out))
    seg.run_button.click()
    wait(seg)
    labels = viewer.layers["images segmentation"]
    for layer in (image, labels):  # the segmentation lies over its image, in micrometres
        np.testing.assert_allclose(layer.scale, VOXEL[0])
        assert [str(u) for u in layer.units] == ["micrometer"] * 3
    assert read_voxel_size(out) == VOXEL
    assert open_volume(out).shape == image.data.shape
    assert parsed(seg).voxel_size == "5,2.5,2um" and parsed(seg).out == out
    assert "(voxel size 5,2.5,2um)" in seg.status.text()
