"""Regenerate the screenshots in docs/ (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [NAME ...]

Opens napari as ``sandseg gui`` does (``launch.open_viewer``: bundled sample, widgets docked,
Train in front) and shoots the whole window first (``first_window``). Then it runs a short
training, segments, evaluates with the layers the Evaluate widget picked by itself
(``evaluate_after_segment``: the new segmentation against the masks), goes to the worst
slice, paints a correction, fine-tunes and exports, taking
``viewer.screenshot(canvas_only=False)`` of each widget in use. Last, a zarr copy of the sample
opens lazily and is segmented in streaming mode (``segment_streaming``). Naming shots takes
only those, running the steps up to the last one named (``first_window`` alone trains nothing).
``annotation_layer`` paints a few strokes on a new annotation layer (Train's legend in view)
before any training, and removes the layer again. ``train_preview`` is taken during training,
after the second epoch, with the live preview of the slice in view.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


DOCS = Path(__file__).resolve().parent


import numpy as np  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402


def wait(widget, app, timeout=900.0):
    """Process events until the widget's job has finished."""
    t0 = time.time()
    while widget.job is None or widget.job.running:
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError(type(widget).__name__)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def shoot(viewer, app, name, dock=None):
    # Notifications are shown as toasts over the canvas; close them so the layers show.
    for widget in QApplication.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()
    if dock is not None:
        dock.raise_()
    for _ in range(10):
        app.processEvents()
        time.sleep(0.03)
    path = DOCS / f"{name}.png"
    from imageio.v3 import imwrite  # napari depends on imageio

    imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", path)


def streaming_shot(viewer, app, docks, work: Path, images: Path) -> None:
    """docs/segment_streaming.png: a lazy (zarr) copy of the sample segmented to a file."""
    import zarr

    from napari_sandseg.io import read_volume

    volume = read_volume(images)
    store = work / "scan.zarr"
    chunks = (1,) + volume.shape[1:]
    zarr.open_array(str(store), mode="w", shape=volume.shape, chunks=chunks, dtype=volume.dtype)[:] = volume
    for layer in viewer.layers:
        layer.visible = False
    viewer.open(str(store), plugin="napari-sandseg")  # zarr stores always open lazily (dask)
    seg = docks["Segment"][1]
    docks["Segment"][0].raise_()
    seg.image_picker.setCurrentText("scan")
    seg.uncertainty.setChecked(False)
    seg.probabilities.setChecked(False)
    seg.start()
    wait(seg, app)
    shoot(viewer, app, "segment_streaming", docks["Segment"][0])


def annotation_shot(viewer, app, docks, image_name: str, mask_name: str) -> None:
    """docs/annotation_layer.png: a new annotation layer with a few strokes per class and its legend.

    The strokes sit inside each class of the sample's truth (so they show what a user paints);
    the layer is removed afterwards so the training steps still train on the masks.
    """
    from scipy import ndimage  # a napari dependency

    train = docks["Train"][1]
    docks["Train"][0].raise_()
    z = 20
    truth = viewer.layers[mask_name]
    viewer.layers[mask_name].visible = False
    viewer.dims.set_current_step(0, z)
    layer = train.annotation.new_layer()
    layer.brush_size = 5
    rng = np.random.default_rng(3)
    for value in range(1, 5):
        inside = ndimage.binary_erosion(np.asarray(truth.data[z]) == value, iterations=4)
        ys, xs = np.nonzero(inside)
        for i in rng.choice(ys.size, size=min(3, ys.size), replace=False):
            for step in range(10):  # a short stroke, as a drag paints it
                y, x = ys[i], xs[i] + step
                if inside[y, min(x, inside.shape[1] - 1)]:
                    layer.paint((z, y, x), value)
    app.processEvents()
    row = 2  # quartz: the brush value the shot shows selected
    train.annotation.legend.cellClicked.emit(row, 2)
    train.annotation.suggest()
    shoot(viewer, app, "annotation_layer", docks["Train"][0])
    viewer.layers.remove(layer)
    viewer.layers[mask_name].visible = True
    train.labels_picker.select(mask_name)


#: Every shot, in the order the steps take them.
SHOTS = ("first_window", "annotation_layer", "train_preview", "train", "segment", "evaluate_after_segment", "evaluate", "correct", "export",
         "segment_streaming")


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(SHOTS))
    if unknown:
        print(f"unknown shot(s) {unknown}; choose from {list(SHOTS)}", file=sys.stderr)
        return 2
    wanted = set(names) or set(SHOTS)
    last = max(SHOTS.index(name) for name in wanted)
    work = Path(tempfile.mkdtemp(prefix="sandseg-shots-"))
    os.environ.setdefault("SANDSEG_SESSION_DIR", str(work / "session"))
    os.environ.setdefault("SANDSEG_AUTOSAVE_DIR", str(work / "autosave"))
    from qtpy.QtWidgets import QApplication

    from napari_sandseg.bundled import bundled_sample_paths
    from napari_sandseg._napari.launch import WIDGETS, open_viewer

    viewer = open_viewer(show=True)  # exactly what `sandseg gui` opens
    app = QApplication.instance()
    viewer.window.resize(1560, 960)
    # Already docked by open_viewer: napari hands back the existing (dock, widget) pairs.
    docks = {name: viewer.window.add_plugin_dock_widget("napari-sandseg", name) for name in WIDGETS}
    w = {name: widget for name, (dock, widget) in docks.items()}
    images, masks = bundled_sample_paths()
    image_name, mask_name = images.stem, masks.stem

    def step_done(name: str) -> bool:
        """Shoot ``name`` if wanted; True when no later shot is wanted (stop here)."""
        if name in wanted:
            shoot(viewer, app, name, docks[STEP_DOCK[name]][0] if STEP_DOCK.get(name) else None)
        return SHOTS.index(name) >= last

    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    if step_done("first_window"):
        return finish(viewer)
    if "annotation_layer" in wanted:
        annotation_shot(viewer, app, docks, image_name, mask_name)
    if SHOTS.index("annotation_layer") >= last:
        return finish(viewer)

    viewer.layers[mask_name].visible = False
    viewer.dims.set_current_step(0, 20)
    train = w["Train"]
    docks["Train"][0].raise_()
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(int(os.environ.get("SHOT_EPOCHS", 6)))
    train.batch_size.setValue(8)
    train.patience.setValue(10)
    train.detect_device()
    train.start()
    # The live preview: the slice in view segmented after each epoch, while training goes on.
    from napari_sandseg._widgets._results import preview_name

    t0 = time.time()
    while train.job.running and not (preview_name(image_name) in viewer.layers and len(train._epoch_x) >= 2):
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > 900:
            raise TimeoutError("no preview")
    if "train_preview" in wanted:
        shoot(viewer, app, "train_preview", docks["Train"][0])
    wait(train, app)
    if step_done("train"):
        return finish(viewer)

    seg = w["Segment"]
    docks["Segment"][0].raise_()
    seg.uncertainty.setChecked(True)
    seg.start()
    wait(seg, app)
    viewer.layers[f"{image_name} uncertainty"].visible = False
    if step_done("segment"):
        return finish(viewer)

    # Evaluate as a new user meets it: nothing picked by hand, the new segmentation is the prediction.
    ev = w["Evaluate"]
    docks["Evaluate"][0].raise_()
    assert ev.pred_picker.currentText() == f"{image_name} segmentation", ev.pred_picker.currentText()
    assert ev.truth_picker.currentText() == mask_name, ev.truth_picker.currentText()
    ev.run_button.click()
    wait(ev, app)
    if step_done("evaluate_after_segment"):
        return finish(viewer)
    worst = ev.worst.item(0)
    ev.worst.setCurrentItem(worst)
    ev.worst.itemClicked.emit(worst)
    if step_done("evaluate"):
        return finish(viewer)

    correct = w["Correct and fine-tune"]
    docks["Correct and fine-tune"][0].raise_()
    layer = viewer.layers[f"{image_name} segmentation"]
    assert correct.labels_picker.currentText() == layer.name, correct.labels_picker.currentText()
    z = int(viewer.dims.current_step[0])
    layer.brush_size = 12
    for y, x in ((40, 40), (44, 48), (48, 56), (52, 64)):
        layer.paint((z, y, x), 3)
    layer.paint((z + 1, 60, 60), 2)
    correct.epochs.setValue(2)
    correct.start()
    wait(correct, app)
    viewer.layers.selection.active = layer
    if step_done("correct"):
        return finish(viewer)

    export = w["Export"]
    docks["Export"][0].raise_()
    assert export.picker.currentText() == layer.name, export.picker.currentText()
    export.path_edit.setText(str(work / "segmentation.tif"))
    export.start()
    wait(export, app)
    if step_done("export"):
        return finish(viewer)
    streaming_shot(viewer, app, docks, work, images)
    return finish(viewer)


#: The dock raised for each shot (None: the window as it is).
STEP_DOCK = {
    "first_window": None, "train_preview": "Train", "train": "Train", "segment": "Segment", "evaluate_after_segment": "Evaluate",
    "evaluate": "Evaluate", "correct": "Correct and fine-tune", "export": "Export",
}


def finish(viewer) -> int:
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
