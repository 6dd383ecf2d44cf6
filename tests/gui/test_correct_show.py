"""New predictions after a fine-tune keep every painted pixel, and only those (issue 11, outcome 4).

The widget's main-thread side, without the engine: a 'slice ready' item and the whole stack are
shown as :func:`finetune_job` hands them over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._correct_widget import CorrectWidget, SliceReady, _Run
from napari_sandseg._widgets._results import Segmentation
from napari_sandseg._widgets._state import session_for
from napari_sandseg.classmap import ClassMap

pytestmark = pytest.mark.gui

SHAPE = (5, 32, 30)
CLASSES = ClassMap((0, 1, 2, 3))


def _setup(make_napari_viewer, dtype=np.uint8):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(SHAPE, np.uint8), name="img")
    seg = viewer.add_labels(labels_layer_data(np.zeros(SHAPE, np.uint8)).astype(dtype),
                            **labels_layer_kwargs(CLASSES, "img segmentation"))
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, seg, widget


def _run(widget, layer) -> None:
    """What start() leaves for the main-thread handlers."""
    widget._run = _Run(None, Path("m.keras"), "img", CLASSES, layer, SHAPE, None)
    widget.timings = {"click": 0.0}


def _stack(class_id: int) -> Segmentation:
    return Segmentation("img", CLASSES, np.full(SHAPE, class_id, np.uint8), 0, full_shape=SHAPE)


def test_the_slice_then_the_stack_keep_the_painted_pixels_even_those_painted_meanwhile(make_napari_viewer):
    viewer, seg, widget = _setup(make_napari_viewer)
    state = session_for(viewer)
    seg.brush_size = 5
    seg.paint((2, 10, 10), 4)
    seg.paint((4, 20, 20), 3)
    _run(widget, seg)
    widget._show_slice(SliceReady(2, np.full(SHAPE[1:], 1, np.uint8)))  # the new model says class 1 (value 2)
    painted = state.painted(seg)
    data = np.asarray(seg.data)
    assert np.all(data[2][painted[2]] == 4) and np.all(data[2][~painted[2]] == 2)
    assert np.all(data[4][painted[4]] == 3) and np.all(data[4][~painted[4]] == 1)  # not yet re-segmented
    assert np.all(data[[0, 1, 3]] == 1) and "slice" in widget.timings

    seg.paint((0, 5, 5), 2)  # painted while the rest of the stack is being segmented
    widget._show(_stack(3))
    painted = state.painted(seg)
    data = np.asarray(seg.data)
    assert sorted(painted) == [0, 2, 4]
    for z, value in ((0, 2), (2, 4), (4, 3)):
        assert np.all(data[z][painted[z]] == value) and np.all(data[z][~painted[z]] == 4)
    assert np.all(data[[1, 3]] == 4)


def test_painted_pixels_of_a_separate_corrections_layer_and_of_the_segmentation_are_both_kept(make_napari_viewer):
    viewer, seg, widget = _setup(make_napari_viewer)
    state = session_for(viewer)
    strokes = viewer.add_labels(np.zeros(SHAPE, np.uint8), **labels_layer_kwargs(CLASSES, "strokes"))
    strokes.brush_size = 7
    strokes.paint((1, 15, 15), 3)
    seg.brush_size = 3
    seg.paint((1, 15, 15), 2)  # the segmentation's own paint, inside the stroke: it wins there
    _run(widget, strokes)
    widget._show(_stack(0))
    data = np.asarray(seg.data)
    own, theirs = state.painted(seg)[1], state.painted(strokes)[1]
    assert np.all(data[1][own] == 2) and np.all(data[1][theirs & ~own] == 3)
    assert np.all(data[1][~(own | theirs)] == 1) and np.all(data[[0, 2, 3, 4]] == 1)


def test_a_segmentation_layer_of_another_dtype_waits_for_the_stack_and_keeps_its_edits(make_napari_viewer):
    viewer, seg, widget = _setup(make_napari_viewer, dtype=np.int32)
    state = session_for(viewer)
    seg.brush_size = 5
    seg.paint((3, 10, 10), 4)
    painted = state.painted(seg)[3].copy()
    _run(widget, seg)
    widget._show_slice(SliceReady(3, np.zeros(SHAPE[1:], np.uint8)))
    assert viewer.layers["img segmentation"] is seg and "slice" not in widget.timings  # left alone, not emptied
    widget._show(_stack(1))
    new = viewer.layers["img segmentation"]
    assert new is not seg  # replaced (show_segmentation's rule for another dtype) ...
    assert np.array_equal(state.painted(new)[3], painted)  # ... with its painted pixels still known as such
    assert np.all(np.asarray(new.data)[3][painted] == 4) and np.all(np.asarray(new.data)[3][~painted] == 2)
