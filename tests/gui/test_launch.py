"""The launcher opens the bundled sample with every widget docked; npe2 finds our contributions."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QTabBar

from napari_sandseg._napari.launch import WIDGETS, dock_widgets, open_viewer

pytestmark = pytest.mark.gui


def test_launcher_layout(make_napari_viewer):
    from napari_sandseg.bundled import bundled_sample_paths

    viewer = make_napari_viewer()
    images, masks = bundled_sample_paths()
    viewer.open(images, plugin="napari-sandseg")
    viewer.open(masks, plugin="napari-sandseg")
    docks = dock_widgets(viewer)
    assert list(docks) == list(WIDGETS)
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert viewer.layers[masks.stem].metadata["sandseg_class_map"]["values"] == [0, 1, 2, 3]


def _tab_bar(viewer) -> QTabBar:
    bars = [bar for bar in viewer.window._qt_window.findChildren(QTabBar) if bar.count() == len(WIDGETS)]
    assert len(bars) == 1
    return bars[0]


def test_sandseg_gui_opens_with_short_tabs_train_in_front_and_no_qt_notice(qtbot, monkeypatch):
    """As ``sandseg gui`` opens it: shown, so napari's first ``showEvent`` runs."""
    from napari._qt import qt_main_window
    from napari.utils.notifications import notification_manager

    # napari shows its PyQt5 notice once per process: pretend this is the first window.
    monkeypatch.setattr(qt_main_window, "SHOW_QT_WARNING", qt_main_window.SHOW_QT_WARNING or _qt5())
    before = len(notification_manager.records)
    viewer = open_viewer(show=True)
    try:
        qtbot.wait(100)
        bar = _tab_bar(viewer)
        assert [bar.tabText(i) for i in range(bar.count())] == ["Train", "Segment", "Correct", "Evaluate", "Analyze", "Export"]
        assert bar.tabText(bar.currentIndex()) == "Train"
        assert [str(n.message) for n in notification_manager.records[before:]] == []
    finally:
        viewer.close()


def _qt5() -> bool:
    from qtpy import QT5

    return bool(QT5)


def test_manifest_contributions():
    import npe2

    pm = npe2.PluginManager.instance()
    manifest = pm.get_manifest("napari-sandseg")
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == set(WIDGETS)
    assert manifest.contributions.sample_data[0].display_name == "Sandstone, synthetic 1600 x 128 x 128"
