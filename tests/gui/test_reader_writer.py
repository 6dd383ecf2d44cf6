"""npe2 reader, writer and sample data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg._napari.layers import CLASS_MAP_KEY
from napari_sandseg._napari.reader import looks_like_labels, napari_get_reader
from napari_sandseg._napari.sample_data import bundled_sandstone_sample
from napari_sandseg._napari.writer import write_labels_layer
from napari_sandseg.errors import InputError
from napari_sandseg.io import read_volume, write_volume


def test_reader_opens_image_and_mask(tiny_files, tiny_stack):
    images, masks = tiny_files
    [(data, kwargs, kind)] = napari_get_reader(str(images))(str(images))
    assert kind == "image" and np.array_equal(data, tiny_stack[0])
    [(ids, kwargs, kind)] = napari_get_reader(str(masks))(str(masks))
    assert kind == "labels"
    # layer values are class id + 1; the original values travel in the metadata
    assert kwargs["metadata"][CLASS_MAP_KEY]["values"] == [0, 85, 170, 255]
    assert np.array_equal(ids, tiny_stack[1] + 1)
    assert kwargs["colormap"].map(np.array([1]))[0][3] == 1.0  # classes are opaque
    assert kwargs["colormap"].map(np.array([0]))[0][3] == 0.0  # unpainted is clear


def test_reader_folder_and_integer_heuristic(tmp_path, tiny_stack):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, s in enumerate(tiny_stack[1]):
        write_volume(folder / f"s{z}.tif", s)  # few integer values, name says nothing: labels
    [(data, _, kind)] = napari_get_reader(str(folder))(str(folder))
    assert kind == "labels" and data.shape == tiny_stack[1].shape
    assert napari_get_reader(str(tmp_path / "x.png")) is None
    assert not looks_like_labels(tmp_path / "ct.tif", tiny_stack[0])
    assert looks_like_labels(tmp_path / "ct_labels.tif", tiny_stack[0])


def test_reader_fractional_mask_opens_as_image(tmp_path):
    path = write_volume(tmp_path / "mask.tif", np.full((2, 8, 8), 0.5, np.float32))
    [(_, _, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image"


def test_writer_round_trips_original_values(tmp_path, tiny_files):
    _, masks = tiny_files
    [(data, kwargs, _)] = napari_get_reader(str(masks))(str(masks))
    [out] = write_labels_layer(str(tmp_path / "out.tif"), data, {"name": "m", "metadata": kwargs["metadata"]})
    assert np.array_equal(read_volume(out), read_volume(masks))
    with pytest.raises(InputError, match="unpainted"):
        write_labels_layer(str(tmp_path / "bad.tif"), np.zeros((2, 4, 4), np.uint8), {"name": "m", "metadata": {}})


def test_sample_data_layers():
    image, labels = bundled_sandstone_sample()
    assert image[2] == "image" and labels[2] == "labels"
    assert image[0].shape == labels[0].shape and labels[0].min() >= 1
