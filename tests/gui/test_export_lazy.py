"""Export of lazy (file-backed) Labels layers: streamed slab by slab, never read whole."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest

import napari_sandseg._widgets._export_widget as export_module
from napari_sandseg._napari.layers import CLASS_MAP_KEY
from napari_sandseg._widgets._export_widget import ExportWidget, export_lazy_job
from napari_sandseg.classmap import ClassMap
from napari_sandseg.errors import Cancelled, InputError
from napari_sandseg.io import read_volume

pytestmark = pytest.mark.gui

CLASS_MAP = ClassMap((0, 85, 170, 255))


def _layer_values(shape=(6, 24, 20), seed=0) -> np.ndarray:
    """Labels-layer values 1..4 (class id + 1), every pixel painted."""
    return np.random.default_rng(seed).integers(1, 5, shape, dtype=np.uint8)


def test_widget_streams_a_lazy_layer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    values = _layer_values()
    lazy = da.from_array(values, chunks=(1, 24, 20))
    viewer = make_napari_viewer()
    viewer.add_labels(lazy, name="scan segmentation", metadata={CLASS_MAP_KEY: CLASS_MAP.to_dict()})
    # Two slices per slab: the export must take several steps, each reported.
    monkeypatch.setattr(export_module, "EXPORT_SLAB_BYTES", 2 * 24 * 20)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    seen: list[str] = []
    monkeypatch.setattr(widget.status, "setText", lambda text: seen.append(text))
    target = tmp_path / "out.tif"
    widget.picker.setCurrentText("scan segmentation")
    widget.path_edit.setText(str(target))
    widget.start()
    qtbot.waitUntil(lambda: target.exists() and widget.export_button.isEnabled(), timeout=60_000)
    assert np.array_equal(read_volume(target), CLASS_MAP.decode(values - 1))
    progress = [t for t in seen if t.startswith("writing out.tif: slices")]
    assert progress == [f"writing out.tif: slices {z} / 6" for z in (2, 4, 6)]
    assert isinstance(viewer.layers["scan segmentation"].data, da.Array)  # still lazy


def test_lazy_export_without_class_map_uses_layer_values(tmp_path):
    values = _layer_values(seed=1)
    job = export_lazy_job(da.from_array(values, chunks=(2, 24, 20)), {}, "painted", tmp_path / "p.tif", False,
                          threading.Event())
    with pytest.raises(StopIteration) as done:
        while True:
            next(job)
    assert done.value.value == tmp_path / "p.tif"
    assert np.array_equal(read_volume(tmp_path / "p.tif"), values - 1)  # classes 0..3 are their own values


def test_cancelled_lazy_export_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.tif"
    target.write_bytes(b"previous export")
    monkeypatch.setattr(export_module, "EXPORT_SLAB_BYTES", 24 * 20)
    cancel = threading.Event()
    job = export_lazy_job(da.from_array(_layer_values(), chunks=(1, 24, 20)),
                          {CLASS_MAP_KEY: CLASS_MAP.to_dict()}, "seg", target, True, cancel)
    assert next(job) == "writing keep.tif: slices 1 / 6"
    cancel.set()
    with pytest.raises(Cancelled, match="keep.tif was not changed"):
        next(job)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]  # no temp file left


def test_unpainted_pixels_in_a_lazy_layer_are_refused(tmp_path):
    values = _layer_values()
    values[3, 5, 5] = 0
    job = export_lazy_job(da.from_array(values, chunks=(1, 24, 20)), {CLASS_MAP_KEY: CLASS_MAP.to_dict()},
                          "seg", tmp_path / "x.tif", False, threading.Event())
    with pytest.raises(InputError, match="unpainted"):
        list(job)
    assert not any(tmp_path.iterdir())


def test_lazy_export_to_zarr_is_an_ome_label_image(tmp_path):
    """A .zarr export is the same OME-Zarr label image as a streamed segmentation: the class
    values, each named, and the layer's voxel size."""
    import zarr

    from napari_sandseg.lazy import open_volume
    from napari_sandseg.units import read_voxel_size

    values = _layer_values(seed=2)
    voxel = ((2.0, 1.0, 1.0), "um")
    job = export_lazy_job(da.from_array(values, chunks=(2, 24, 20)), {CLASS_MAP_KEY: CLASS_MAP.to_dict()},
                          "seg", tmp_path / "seg.zarr", False, threading.Event(), voxel_size=voxel)
    with pytest.raises(StopIteration):
        while True:
            next(job)
    assert np.array_equal(open_volume(tmp_path / "seg.zarr")[:], CLASS_MAP.decode(values - 1))
    assert read_voxel_size(tmp_path / "seg.zarr") == voxel
    image_label = zarr.open_group(str(tmp_path / "seg.zarr"), mode="r").attrs["ome"]["image-label"]
    assert [(p["label-value"], p["class"]) for p in image_label["properties"]] == list(
        zip(CLASS_MAP.values, CLASS_MAP.names))
