"""Analyze widget in a real viewer: the engine's figures, plots saved as PNG, the command line."""

from __future__ import annotations

import json

import pytest

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._analyze_widget import AnalyzeWidget
from napari_sandseg.analyze import analyze, analyze_pair
from napari_sandseg.classmap import ClassMap
from napari_sandseg.cli import build_parser

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 60_000
CLASS_MAP = ClassMap((0, 85, 170, 255))


def _add(viewer, ids, name):
    return viewer.add_labels(labels_layer_data(ids), **labels_layer_kwargs(CLASS_MAP, name))


def test_analyze_matches_engine_saves_plots_and_shows_command(make_napari_viewer, qtbot, tiny_stack, tmp_path):
    viewer = make_napari_viewer()
    _, ids = tiny_stack
    _add(viewer, ids, "img segmentation")
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.pore_class.currentData() == 0  # the class named "pore"
    widget.voxel_size.setText("2.5 µm")
    widget.start()
    qtbot.waitUntil(lambda: widget.analysis is not None, timeout=JOB_TIMEOUT_MS)

    expected = analyze(CLASS_MAP.decode(ids), (2.5, 2.5, 2.5), "um", names=CLASS_MAP.names)
    got = widget.analysis.report
    for key in ("porosity", "connected_porosity", "euler_number", "percolates", "rev_size"):
        assert got[key] == expected[key]
    assert got["pore_size"]["mean"] == pytest.approx(expected["pore_size"]["mean"])
    rows = {widget.table.item(i, 0).text(): widget.table.item(i, 1).text() for i in range(widget.table.rowCount())}
    assert rows["porosity"] == f"{100 * expected['porosity']:.2f} %"
    assert rows["fraction of pore (0)"] == rows["porosity"]  # the class map's names
    assert widget.profile_plot.series["labels"].y.size == ids.shape[0]
    assert widget.size_plot.xlabel == "local thickness (um)"

    args = build_parser().parse_args(widget.command.command().split()[1:])
    assert args.command == "analyze" and args.voxel_size == "2.5um" and args.pore_class == "0"

    written = widget.save_report(tmp_path / "rock.json")
    assert [p.name for p in written] == ["rock.json", "rock.csv", "rock_porosity_profile.png", "rock_pore_sizes.png",
                                         "rock_rev.png"]
    assert json.loads(written[0].read_text())["porosity"] == pytest.approx(expected["porosity"])
    for png in written[2:]:
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_compare_with_truth_and_refusals(make_napari_viewer, qtbot, tiny_stack, notes):
    viewer = make_napari_viewer()
    _, ids = tiny_stack
    pred = ids.copy()
    pred[:, :8] = 0  # more pore in the prediction
    _add(viewer, ids, "truth")
    _add(viewer, pred, "img segmentation")
    widget = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.labels_picker.currentText() == "img segmentation"

    widget.voxel_size.setText("2.5 furlongs")
    widget.start()
    assert widget.job is None and any("voxel size '2.5 furlongs'" in m for _, m in notes)

    widget.voxel_size.setText("")  # no file, no field: pixels
    assert not widget.truth_picker.isEnabled()
    widget.compare.setChecked(True)
    assert widget.truth_picker.isEnabled()
    widget.truth_picker.select("truth")
    widget.start()
    qtbot.waitUntil(lambda: widget.analysis is not None, timeout=JOB_TIMEOUT_MS)
    report = widget.analysis.report
    expected = analyze_pair(CLASS_MAP.decode(ids), CLASS_MAP.decode(pred), names=CLASS_MAP.names)
    assert report["unit"] == "px" and "lengths are in pixels" in widget.status.text()
    assert report["difference"]["porosity_pp"] == pytest.approx(expected["difference"]["porosity_pp"])
    assert report["difference"]["porosity_pp"] > 0
    assert set(widget.profile_plot.series) == {"truth", "prediction"}
    assert "--truth" in widget.command.command()

    widget.pore_sizes.setChecked(False)  # the slow, memory-hungry measure left out
    widget.analysis = None
    widget.start()
    qtbot.waitUntil(lambda: widget.analysis is not None, timeout=JOB_TIMEOUT_MS)
    assert widget.analysis.report["prediction"]["pore_size"]["histogram"] == []
    assert build_parser().parse_args(widget.command.command().split()[1:]).no_pore_sizes

    layer = viewer.layers["img segmentation"]
    layer.data[0, 0, 0] = 0  # an unpainted pixel
    widget.analysis = None
    widget.start()
    qtbot.waitUntil(lambda: not widget.job.running and widget.run_button.isEnabled(), timeout=JOB_TIMEOUT_MS)
    assert widget.analysis is None
    assert "unpainted pixels" in widget.status.text()
