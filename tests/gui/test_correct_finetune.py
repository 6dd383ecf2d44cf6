"""One click fine-tunes on what the user painted (issue 11, outcome 4), end to end in a viewer.

Train (sparse: the slice to correct has no ground truth), segment, paint one stroke, click:
the targets sent to the engine are the stroke on that slice and the training targets elsewhere;
the slice in view is shown re-segmented before the rest of the stack; painted pixels stay as
painted; the command line is a real ``sandseg train --sparse --init-model`` command whose files
hold exactly what was trained on.
"""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from napari_sandseg._napari.layers import labels_layer_data, labels_layer_kwargs
from napari_sandseg._widgets._correct_widget import CorrectWidget, SliceReady
from napari_sandseg._widgets._segment_widget import SegmentWidget
from napari_sandseg._widgets._state import session_for
from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.classmap import ClassMap
from napari_sandseg.cli import build_parser
from napari_sandseg.training_inputs import read_training_pair
from napari_sandseg.data import split_indices
from napari_sandseg.engine_requests import TrainRequest
from napari_sandseg.io import read_volume

pytestmark = [pytest.mark.gui, pytest.mark.slow]

JOB_TIMEOUT_MS = 300_000
Z = 5  # the slice corrected (and in view)
CLASSES = ClassMap((10, 20, 30, 40))  # no class value 0, so --sparse can write every class


def _wait_job(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.wait(100)  # let the returned/finished signals reach the main thread


def test_finetune_learns_from_the_stroke_and_shows_the_slice_in_view_first(make_napari_viewer, qtbot, tiny_stack,
                                                                           monkeypatch):
    image, truth_ids = tiny_stack
    viewer = make_napari_viewer()
    viewer.add_image(image, name="images")
    known = labels_layer_data(truth_ids)
    known[Z] = 0  # the model never sees the truth of the slice that will be corrected
    viewer.add_labels(known, **labels_layer_kwargs(CLASSES, "masks"))
    state = session_for(viewer)
    train, seg, correct = TrainWidget(viewer), SegmentWidget(viewer), CorrectWidget(viewer)
    for widget in (train, seg, correct):
        viewer.window.add_dock_widget(widget)

    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(1)
    train.batch_size.setValue(4)
    train.val_fraction.setValue(0.25)
    train.sparse.setChecked(True)
    train.train_button.click()
    _wait_job(qtbot, train)
    first_model = state.model.path
    seg.run_button.click()
    _wait_job(qtbot, seg)
    layer = viewer.layers["images segmentation"]
    assert correct.labels_picker.currentText() == layer.name

    # Paint one stroke of class 4 on slice Z, in view
    viewer.dims.set_current_step(0, Z)
    layer.brush_size = 10
    with layer.block_history():  # a drag: one paint event
        for x in range(12, 40, 4):
            layer.paint((Z, 30, x), 4)
    painted = state.painted(layer)[Z].copy()
    assert list(state.painted(layer)) == [Z] and 100 < painted.sum() < 64 * 64 // 4
    # Mark what is on screen before the click (written directly: not a paint, not tracked): the slice
    # shown first must replace it on Z only, and the whole stack everywhere later.
    sentinel = np.where(painted, np.asarray(layer.data[Z]), 1)
    layer.data[:] = 1
    layer.data[Z] = sentinel
    layer.refresh()

    sent = {}
    run = state.engine.run

    def spy(request, **kwargs):
        if isinstance(request, TrainRequest):
            sent.update(images=request.images, targets=request.targets, config=request.config,
                        init=request.init_model)
        return run(request, **kwargs)

    monkeypatch.setattr(state.engine, "run", spy)
    on_screen = {}
    show_slice = correct._show_slice

    def record(ready: SliceReady) -> None:
        show_slice(ready)
        on_screen.update(z=ready.z, data=np.array(layer.data))

    monkeypatch.setattr(correct, "_show_slice", record)
    correct.epochs.setValue(1)
    correct.run_button.click()
    _wait_job(qtbot, correct)
    timings = correct.timings
    print(f"\nclick to slice on screen: {timings['slice'] - timings['click']:.1f} s; "
          f"whole stack: {timings['stack'] - timings['click']:.1f} s (8 x 64 x 64, resnet18, 1 epoch)")

    # ---- the targets sent to the engine: sparse, the stroke on Z, the training targets elsewhere (replay)
    config = sent["config"]
    assert config.sparse and config.epochs == 1 and sent["init"] == first_model
    images, targets = sent["images"], sent["targets"]
    origin = [int(np.flatnonzero((image == s).all(axis=(1, 2)))[0]) for s in images]  # stack slice -> image slice
    assert sorted(origin) == list(range(image.shape[0]))  # the same image: its stack, reordered at most
    at = origin.index(Z)
    assert np.array_equal(targets[at][painted], np.full(painted.sum(), 4))
    assert np.all(targets[at][~painted] == 0)  # never the model's own prediction
    for i, z in enumerate(origin):
        if z != Z:
            assert np.array_equal(targets[i], known[z])
    _, val, _ = split_indices(len(origin), config.val_fraction, config.test_fraction, config.seed)
    assert at not in set(val.tolist())  # the correction is trained on, not only validated on

    # ---- the slice in view first: Z re-segmented, the other slices still as before the click
    assert on_screen["z"] == Z
    assert np.all(on_screen["data"][np.arange(8) != Z] == 1)
    final = np.asarray(layer.data)
    assert np.array_equal(on_screen["data"][Z], final[Z])  # what the whole stack then shows there too
    assert not np.array_equal(final[Z][~painted], sentinel[~painted])  # the model's new prediction shows
    assert np.all(final[Z][painted] == 4)  # painted pixels stay as painted
    assert not np.all(final[np.arange(8) != Z] == 1)  # the whole stack followed
    assert timings["click"] < timings["slice"] < timings["stack"]
    assert state.model.path != first_model and list(state.painted(layer)) == [Z]

    # ---- the command line: a real sparse fine-tune command whose files hold what was trained on
    args = build_parser().parse_args(shlex.split(correct.command.command())[1:])
    assert (args.command, args.sparse, args.init_model, args.out) == ("train", True, first_model, state.model.path)
    assert np.array_equal(read_volume(args.images), images)
    _, mask_targets, _ = read_training_pair(args.images, args.masks, sparse=True, model_map=CLASSES,
                                            init_model=args.init_model)
    assert np.array_equal(mask_targets, targets)
