"""Every command line a widget shows is a real shell command of the CLI (issue 10, outcome 5)."""

from __future__ import annotations

import shlex
import subprocess

import numpy as np
import pytest

from napari_sandseg._napari.layers import labels_layer_data
from napari_sandseg._widgets._common import CommandBox, command_groups, format_command, wrap_command
from napari_sandseg._widgets._files import LayerSnapshot, labels_file, write_sparse_mask
from napari_sandseg.classmap import ClassMap
from napari_sandseg.cli import build_parser
from napari_sandseg.training_inputs import read_sparse_mask
from napari_sandseg.io import read_volume, write_labels

pytestmark = pytest.mark.gui

JOB_TIMEOUT_MS = 240_000
LONG_PATH = "/data/a folder with spaces/and-dashes/scan_2024-01-01.tif"


def _parse(line: str):
    """The CLI's own parse of a command line shown by a widget."""
    words = shlex.split(line)
    assert words[0] == "sandseg"
    return build_parser().parse_args(words[1:])


def test_display_breaks_between_arguments_and_still_runs_in_a_shell():
    args = ["sandseg", "train", "--images", LONG_PATH, "--masks", "m.tif", "--out", "o.keras", "--batch-size", 8,
            "--learning-rate", 0.0005, "--sparse", "--crops-per-epoch", "none"]
    assert command_groups(args)[:2] == ["sandseg train", f"--images {shlex.quote(LONG_PATH)}"]
    shown = wrap_command(args, columns=30)
    assert shown.count("\n") >= 4
    for line in shown.splitlines():  # each line is whole groups: no flag or path is cut
        assert _split_groups(line.strip().removesuffix("\\").strip(), args)
    # The shown text is a valid shell command: the shell hands the program exactly the arguments.
    echoed = subprocess.run(["bash", "-c", "printf '%s\\n' " + shown.split(" ", 1)[1]], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert echoed == [str(a) for a in args[1:]]


def _split_groups(body: str, args) -> list[str]:
    """``body`` as the argument groups it is made of (fails when it cuts into one)."""
    out = []
    for group in command_groups(args):
        if body.startswith(group):
            out.append(group)
            body = body[len(group):].lstrip()
    assert body == "", f"a line break cuts an argument: {body!r}"
    return out


def test_command_box_copies_one_line_and_notes_what_differs(qtbot):
    box = CommandBox()
    qtbot.addWidget(box)
    box.resize(260, 200)
    box.show()
    args = ["sandseg", "evaluate", "--truth", LONG_PATH, "--pred", "/tmp/p.tif"]
    line = box.set_command(args, note="a note")
    assert line == format_command(args) == box.command() and "\n" not in line
    assert "\\\n" in box.text.toPlainText()  # broken for display
    assert box.note.isVisibleTo(box) and box.note.text() == "a note"
    box.copy()
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == line
    box.set_unavailable("no equivalent command: why")
    assert box.command() == "" and box.note.text() == "no equivalent command: why"


def test_no_placeholder_is_passed_through():
    assert format_command(["sandseg", "<note: x>"]) == "sandseg '<note: x>'"


@pytest.mark.parametrize("values", [(0, 1, 2, 3), (0, 85, 170, 255), (1, 2, 3, 4), (85, 170, 255)])
def test_sparse_masks_are_written_as_the_cli_reads_them(tmp_path, values):
    class_map = ClassMap(values)
    layer = np.zeros((3, 16, 16), np.uint8)
    layer[0, :4] = 1
    layer[1, 5:9] = 2
    layer[2, :, :3] = len(values)  # one class left unpainted when there are 3 or more
    path = tmp_path / "painted.tif"
    note = write_sparse_mask(path, layer, class_map)
    targets, cli_map = read_sparse_mask(path)
    painted = [v for i, v in enumerate(values) if np.any(layer == i + 1)]
    np.testing.assert_array_equal(targets > 0, layer > 0)  # the same pixels count
    if 0 in values:  # --sparse cannot say "class value 0": written as 1..K
        assert cli_map.values == tuple(i + 1 for i, v in enumerate(values) if v in painted)
        assert "1..K" in note
    else:
        assert cli_map.values == tuple(painted)
        np.testing.assert_array_equal(read_volume(path)[layer > 0], class_map.decode(layer[layer > 0] - 1))
    assert ("no pixel is painted" in note) == (len(painted) < len(values))


def test_a_dense_file_with_class_zero_is_not_reused_for_a_sparse_run(tmp_path):
    class_map = ClassMap((0, 1, 2, 3))
    ids = np.random.default_rng(0).integers(0, 4, (2, 8, 8)).astype(np.uint8)
    source = write_labels(tmp_path / "masks.tif", ids, class_map)
    snap = LayerSnapshot("masks", labels_layer_data(ids), source, class_map)
    assert labels_file(snap, tmp_path / "session", ids)[0] == source  # dense: the user's file as it is
    path, _ = labels_file(snap, tmp_path / "session")  # sparse: --sparse would drop class 0
    assert path != source and path.exists()
    targets, _ = read_sparse_mask(path)
    assert np.all(targets > 0)  # every pixel stays annotated


def _wait_job(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=JOB_TIMEOUT_MS)
    qtbot.wait(100)  # let the returned/finished signals reach the main thread


@pytest.mark.slow
def test_every_widget_command_parses_with_the_widget_settings(tiny_viewer, tiny_files, qtbot):
    from napari_sandseg._widgets._correct_widget import CorrectWidget
    from napari_sandseg._widgets._evaluate_widget import EvaluateWidget
    from napari_sandseg._widgets._segment_widget import SegmentWidget
    from napari_sandseg._widgets._state import session_for
    from napari_sandseg._widgets._train_widget import TrainWidget

    images_path, masks_path = tiny_files
    viewer = tiny_viewer
    state = session_for(viewer)
    train, seg, ev, correct = (cls(viewer) for cls in (TrainWidget, SegmentWidget, EvaluateWidget, CorrectWidget))
    for widget in (train, seg, ev, correct):
        viewer.window.add_dock_widget(widget)

    # ---- Train, dense, on the files as opened
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(1)
    train.batch_size.setValue(4)
    train.val_fraction.setValue(0.25)
    train.train_button.click()
    _wait_job(qtbot, train)
    args = _parse(train.command.command())
    assert (args.command, args.images, args.masks, args.out) == ("train", images_path, masks_path, state.model.path)
    assert (args.backbone, args.epochs, args.batch_size, args.val_fraction, args.sparse) == ("resnet18", 1, 4, 0.25, False)
    first_model = state.model.path

    # ---- Segment: the model and image of the run
    seg.run_button.click()
    _wait_job(qtbot, seg)
    args = _parse(seg.command.command())
    assert (args.command, args.model, args.images) == ("predict", first_model, images_path)
    assert args.out.name == "images_segmentation.tif"

    # ---- Evaluate: it picked the new segmentation itself; the files hold the layers' values
    assert ev.pred_picker.currentText() == "images segmentation"
    ev.run_button.click()
    _wait_job(qtbot, ev)
    args = _parse(ev.command.command())
    assert (args.command, args.truth) == ("evaluate", masks_path)
    layer = viewer.layers["images segmentation"]
    np.testing.assert_array_equal(read_volume(args.pred), (np.asarray(layer.data) - 1) * 85)

    # ---- Correct: fine-tune from the first model on a painted correction
    assert correct.labels_picker.currentText() == "images segmentation"
    layer.brush_size = 9
    layer.paint((5, 30, 30), 4)
    correct.epochs.setValue(1)
    correct.run_button.click()
    _wait_job(qtbot, correct)
    args = _parse(correct.command.command())
    assert (args.command, args.init_model, args.epochs, args.out) == ("train", first_model, 1, state.model.path)
    assert args.images.exists() and args.masks.exists() and not args.sparse

    # ---- Train, sparse, on strokes painted into an empty layer (class values 0..3: written 1..4)
    painted = viewer.add_labels(np.zeros(layer.data.shape, np.uint8), name="strokes",
                                metadata=dict(viewer.layers["masks"].metadata))
    truth = np.asarray(viewer.layers["masks"].data)
    for z in range(truth.shape[0]):
        painted.data[z, ::4, ::4] = truth[z, ::4, ::4]  # a sparse grid of correct labels
    train.labels_picker.setCurrentText("strokes")
    train.sparse.setChecked(True)
    train.train_button.click()
    _wait_job(qtbot, train)
    args = _parse(train.command.command())
    assert args.sparse and args.epochs == 1 and args.backbone == "resnet18" and args.out == state.model.path
    assert args.masks.parent == state.folder
    targets, _ = read_sparse_mask(args.masks)  # what `sandseg train --sparse` trains on
    np.testing.assert_array_equal(targets, painted.data)
    assert "1..K" in train.command.note.text()
