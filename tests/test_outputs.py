"""Slab writers: a write that fails part-way is one user-facing error and leaves nothing behind."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_sandseg import outputs
from napari_sandseg.errors import OutputError


@pytest.mark.parametrize("name", ["labels.tif", "labels.zarr"])
def test_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch, name):
    def full(self, z0, slab):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs._TiffWriter, "write", full)
    monkeypatch.setattr(outputs._ZarrWriter, "write", full)
    with pytest.raises(OutputError, match="disk is full"):
        with outputs.slab_writer(tmp_path / name, (2, 4, 4), np.uint8) as writer:
            writer.write(0, np.zeros((2, 4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_zarr_label_volume_is_an_ome_zarr_label_image(tmp_path):
    """OME-Zarr 0.5: a group whose array 0 holds the labels, the voxel size as its scale transform
    in the axes' UDUNITS unit, and each class value's colour (the napari layer's) and name."""
    import json

    from napari_sandseg._napari.layers import label_colormap
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.lazy import open_levels, open_volume
    from napari_sandseg.units import read_voxel_size

    class_map = ClassMap((0, 85, 170, 255), colors=((0.0, 0.0, 1.0, 1.0), (0.0, 0.5, 0.0, 0.5), (1.0, 0.0, 0.0),
                                                    (1.0, 1.0, 0.0, 1.0)))
    labels = np.random.default_rng(0).choice(class_map.values, size=(5, 6, 7)).astype(np.uint8)
    path = tmp_path / "labels.zarr"
    with outputs.slab_writer(path, labels.shape, np.uint8, voxel_size=((5.0, 2.5, 2.0), "um"),
                             class_map=class_map) as writer:
        writer.write(0, labels[:3])
        writer.write(3, labels[3:])

    ome = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["version"] == "0.5"
    [multiscale] = ome["multiscales"]
    assert [(a["name"], a["type"], a["unit"]) for a in multiscale["axes"]] == [
        ("z", "space", "micrometer"), ("y", "space", "micrometer"), ("x", "space", "micrometer")]
    assert multiscale["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [5.0, 2.5, 2.0]}]}]
    assert json.loads((path / "0" / "zarr.json").read_text())["dimension_names"] == ["z", "y", "x"]
    napari_colors = label_colormap(class_map).color_dict  # layer value k + 1 shows class k
    image_label = ome["image-label"]
    assert [c["label-value"] for c in image_label["colors"]] == [0, 85, 170, 255]
    for k, color in enumerate(image_label["colors"]):
        np.testing.assert_allclose(np.array(color["rgba"]) / 255, napari_colors[k + 1], atol=0.5 / 255)
    assert image_label["colors"][2]["rgba"] == [255, 0, 0, 255]  # an RGB colour is opaque
    assert image_label["properties"] == [{"label-value": v, "class": n} for v, n in
                                         zip(class_map.values, ("pore", "clay", "quartz", "bright mineral"))]

    # Read back as any OME-Zarr: one level, the same labels and voxel size.
    assert len(open_levels(path)) == 1
    np.testing.assert_array_equal(open_volume(path)[:], labels)
    assert read_voxel_size(path) == ((5.0, 2.5, 2.0), "um")


def test_zarr_outputs_without_classes_or_in_pixels(tmp_path):
    """Probabilities (Z, Y, X, K) stay a plain array with the voxel-size attribute; a label volume in
    pixels is an OME-Zarr label image with unit-less axes and scale 1."""
    import zarr

    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.units import read_voxel_size

    probs = tmp_path / "probs.zarr"
    with outputs.slab_writer(probs, (2, 4, 4, 3), np.float32, voxel_size=((5.0, 2.5, 2.0), "um"),
                             class_map=ClassMap((0, 1, 2))) as writer:
        writer.write(0, np.full((2, 4, 4, 3), 0.5, np.float32))
    assert isinstance(zarr.open(str(probs), mode="r"), zarr.Array)
    assert read_voxel_size(probs) == ((5.0, 2.5, 2.0), "um")

    labels = tmp_path / "labels.zarr"
    with outputs.slab_writer(labels, (2, 4, 4), np.uint8, class_map=ClassMap((0, 1))) as writer:
        writer.write(0, np.ones((2, 4, 4), np.uint8))
    ome = zarr.open_group(str(labels), mode="r").attrs["ome"]
    assert all("unit" not in axis for axis in ome["multiscales"][0]["axes"])
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0]
    assert read_voxel_size(labels) is None
