"""Pixel-level edit tracking (issue 11, outcome 4): which pixels each napari paint call changed.

Real paint calls on a real Labels layer, for both atom forms napari 0.9 emits: mask-based atoms
(``paint``, ``fill``, a brush stroke) and ``(indices, old, new)`` tuples (``data_setitem``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._correct_widget import CorrectWidget
from napari_sandseg._widgets._edits import painted_pixels
from napari_sandseg._widgets._state import session_for
from napari_sandseg.autosave import autosave_path, load_painted
from napari_sandseg.classmap import ClassMap

pytestmark = pytest.mark.gui

SHAPE = (6, 48, 40)


def _layer(viewer, name="img segmentation", fill=1):
    ids = np.full(SHAPE, fill - 1, np.uint8)
    return viewer.add_labels(labels_layer_data(ids), **labels_layer_kwargs(ClassMap((0, 1, 2, 3)), name))


def _events(layer) -> list:
    seen: list = []
    layer.events.paint.connect(lambda event: seen.append(event.value))
    return seen


def _as_volume(patches, shape=SHAPE) -> np.ndarray:
    out = np.zeros(shape, bool)
    for z, box, mask in patches:
        assert mask.dtype == bool and mask.shape == out[z][box].shape
        out[z][box] |= mask
    return out


def _changed(before: np.ndarray, layer) -> np.ndarray:
    return np.asarray(layer.data) != before


def test_each_paint_call_reports_exactly_the_pixels_it_changed(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _layer(viewer)
    seen = _events(layer)

    layer.brush_size = 10  # one dab: a disc on slice 2
    before = np.array(layer.data)
    layer.paint((2, 20, 20), 3)
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert got.sum() > 50 and np.array_equal(got, _changed(before, layer))

    # A brush stroke: several dabs committed as one paint event (as a mouse drag is)
    before = np.array(layer.data)
    n_events = len(seen)
    with layer.block_history():
        for x in range(5, 35, 3):
            layer.paint((4, 30, x), 2)
    assert len(seen) == n_events + 1 and len(seen[-1]) > 1  # one event, several atoms
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert np.array_equal(got, _changed(before, layer)) and set(np.flatnonzero(got.any(axis=(1, 2)))) == {4}

    # Painting over pixels that already hold the label changes (and reports) only the rest
    before = np.array(layer.data)
    layer.paint((2, 24, 20), 3)
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert 0 < got.sum() < 80 and np.array_equal(got, _changed(before, layer))

    # A fill of a whole slice: napari drops the mask when every pixel of the box changed
    before = np.array(layer.data)
    layer.fill((5, 1, 1), 4)
    assert seen[-1][0].mask is None
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert got[5].all() and np.array_equal(got, _changed(before, layer))

    # data_setitem: the (indices, old, new) tuple form, spread over two slices, values per pixel
    before = np.array(layer.data)
    index = (np.array([1, 1, 3, 3, 3]), np.array([0, 47, 5, 6, 7]), np.array([0, 39, 9, 9, 9]))
    layer.data_setitem(index, [2, 3, 4, 4, 4])
    assert isinstance(seen[-1][0], tuple)
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert np.array_equal(got, _changed(before, layer)) and got.sum() == 5

    # A 3D brush (n_edit_dimensions=3) paints a ball across slices: each slice gets its pixels
    before = np.array(layer.data)
    layer.n_edit_dimensions = 3
    layer.brush_size = 5
    layer.paint((2, 10, 30), 2)
    got = _as_volume(painted_pixels(seen[-1], SHAPE))
    assert set(np.flatnonzero(got.any(axis=(1, 2)))) == {0, 1, 2, 3, 4}
    assert np.array_equal(got, _changed(before, layer))


def test_legacy_tuple_atoms_and_other_ndims():
    index = (np.array([1, 1, 4]), np.array([0, 1, 2]), np.array([3, 3, -1]))  # -1: the last column
    got = _as_volume(painted_pixels([(index, np.zeros(3), 2)], SHAPE))
    want = np.zeros(SHAPE, bool)
    want[1, 0, 3] = want[1, 1, 3] = want[4, 2, SHAPE[2] - 1] = True
    assert np.array_equal(got, want)
    assert list(painted_pixels([(index[1:], np.zeros(3), 2)], SHAPE[1:])) == []  # a 2D layer has no slices


def test_the_state_keeps_one_mask_per_edited_slice_and_autosaves_it(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _layer(viewer)
    state = session_for(viewer)
    layer.brush_size = 3
    before = np.array(layer.data)
    layer.paint((2, 10, 10), 3)
    layer.paint((2, 30, 30), 4)
    layer.data_setitem((np.array([5]), np.array([1]), np.array([1])), 2)
    painted = state.painted(layer)
    assert sorted(painted) == state.edited_slices(layer) == [2, 5]  # nothing kept for untouched slices
    assert all(mask.shape == SHAPE[1:] and mask.dtype == bool for mask in painted.values())
    assert np.array_equal(np.stack([painted.get(z, np.zeros(SHAPE[1:], bool)) for z in range(SHAPE[0])]),
                          _changed(before, layer))

    state.flush_autosaves()
    [path] = (tmp_path / "autosave").glob("*.npz")
    saved = load_painted(path)
    assert sorted(saved) == [2, 5] and all(np.array_equal(saved[z], painted[z]) for z in saved)


def test_restore_puts_back_the_painted_pixels_only_and_tracks_them(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _layer(viewer)
    state = session_for(viewer)
    layer.brush_size = 5
    layer.paint((3, 20, 20), 4)
    layer.paint((3, 20, 23), 1)  # partly over the 4s: the user painted class value 1 back there
    painted = state.painted(layer)[3].copy()
    assert np.any(np.asarray(layer.data)[3][painted] == 1)
    state.flush_autosaves()

    # "after a crash": a new segmentation (another model: 4 everywhere) of the same image, then Restore
    viewer2 = make_napari_viewer()
    layer2 = _layer(viewer2, fill=4)
    widget2 = CorrectWidget(viewer2)
    viewer2.window.add_dock_widget(widget2)
    assert widget2.restore() == 1
    data = np.asarray(layer2.data)
    assert np.array_equal(data[3][painted], np.asarray(layer.data)[3][painted])  # the user's pixels
    assert np.all(data[3][~painted] == 4) and np.all(data[np.arange(SHAPE[0]) != 3] == 4)  # the new prediction
    # All painted pixels are tracked, also those the new segmentation already held (no paint event for them).
    assert np.array_equal(session_for(viewer2).painted(layer2)[3], painted)
    layer2.undo()  # restoring is an ordinary, undoable edit
    assert np.all(np.asarray(layer2.data) == 4)


def test_an_autosave_without_painted_masks_still_restores_whole_slices(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _layer(viewer)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    old = np.full(SHAPE[1:], 2, np.uint8)
    old[:5, :5] = 4
    # A file as format 1 wrote it: slice indices, slices and the header, no painted masks
    path = autosave_path(tmp_path / "autosave", layer.name, SHAPE)
    path.parent.mkdir()
    header = {"version": 1, "layer_name": layer.name, "shape": list(SHAPE), "slices": [1], "saved_at": 1.0,
              "class_map": None, "source": None}
    np.savez_compressed(path, z=np.array([1]), slices=old[None], header=np.asarray(json.dumps(header)))
    assert load_painted(path) is None
    assert widget.restore() == 1
    assert np.array_equal(np.asarray(layer.data)[1], old)
    # Unknown strokes: the pixels that differ from the layer count as painted
    assert np.array_equal(session_for(viewer).painted(layer)[1], old != 1)
