"""The launcher opens the bundled sample with every widget docked; npe2 finds our contributions."""

from __future__ import annotations

from napari_sandseg.launch import WIDGETS, dock_widgets


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


def test_manifest_contributions():
    import npe2

    pm = npe2.PluginManager.instance()
    manifest = pm.get_manifest("napari-sandseg")
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == set(WIDGETS)
    assert manifest.contributions.sample_data[0].display_name == "Sandstone, synthetic 1600 x 128 x 128"
