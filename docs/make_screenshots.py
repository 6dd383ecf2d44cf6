"""Regenerate the widget screenshots in docs/ (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [NAME ...]

Opens napari like ``sandseg gui`` (bundled sample, widgets docked), runs a short training,
segments, evaluates, paints a correction, fine-tunes and exports, taking
``viewer.screenshot(canvas_only=False)`` of each widget in use. Last, a zarr copy of the sample
opens lazily and is segmented in streaming mode (``segment_streaming``). Naming shots
(``segment_streaming``) trains, then takes only those.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


DOCS = Path(__file__).resolve().parent


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


def main(names: list[str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="sandseg-shots-"))
    os.environ.setdefault("SANDSEG_SESSION_DIR", str(work / "session"))
    os.environ.setdefault("SANDSEG_AUTOSAVE_DIR", str(work / "autosave"))
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sandseg.launch import dock_widgets
    from napari_sandseg.bundled import bundled_sample_paths

    viewer = napari.Viewer(title="napari-sandseg", show=True)
    app = QApplication.instance()
    viewer.window.resize(1560, 960)
    images, masks = bundled_sample_paths()
    viewer.open(images, plugin="napari-sandseg")
    viewer.open(masks, plugin="napari-sandseg")
    docks = dock_widgets(viewer)
    w = {name: widget for name, (dock, widget) in docks.items()}
    image_name, mask_name = images.stem, masks.stem
    viewer.layers[mask_name].visible = False
    viewer.dims.set_current_step(0, 20)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)

    train = w["Train"]
    docks["Train"][0].raise_()
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(int(os.environ.get("SHOT_EPOCHS", 6)))
    train.batch_size.setValue(8)
    train.patience.setValue(10)
    train.detect_device()
    train.start()
    wait(train, app)
    if names:
        if "train" in names:
            shoot(viewer, app, "train", docks["Train"][0])
        if "segment_streaming" in names:
            streaming_shot(viewer, app, docks, work, images)
        viewer.close()
        return 0
    shoot(viewer, app, "train", docks["Train"][0])

    seg = w["Segment"]
    docks["Segment"][0].raise_()
    seg.uncertainty.setChecked(True)
    seg.start()
    wait(seg, app)
    viewer.layers[f"{image_name} uncertainty"].visible = False
    shoot(viewer, app, "segment", docks["Segment"][0])

    ev = w["Evaluate"]
    docks["Evaluate"][0].raise_()
    ev.pred_picker.setCurrentText(f"{image_name} segmentation")
    ev.truth_picker.setCurrentText(mask_name)
    ev.start()
    wait(ev, app)
    worst = ev.worst.item(0)
    ev.worst.setCurrentItem(worst)
    ev.worst.itemClicked.emit(worst)
    shoot(viewer, app, "evaluate", docks["Evaluate"][0])

    correct = w["Correct and fine-tune"]
    docks["Correct and fine-tune"][0].raise_()
    layer = viewer.layers[f"{image_name} segmentation"]
    correct.labels_picker.setCurrentText(layer.name)
    z = int(viewer.dims.current_step[0])
    layer.brush_size = 12
    for y, x in ((40, 40), (44, 48), (48, 56), (52, 64)):
        layer.paint((z, y, x), 3)
    layer.paint((z + 1, 60, 60), 2)
    correct.epochs.setValue(2)
    correct.start()
    wait(correct, app)
    viewer.layers.selection.active = layer
    shoot(viewer, app, "correct", docks["Correct and fine-tune"][0])

    export = w["Export"]
    docks["Export"][0].raise_()
    export.picker.setCurrentText(layer.name)
    export.path_edit.setText(str(work / "segmentation.tif"))
    export.start()
    wait(export, app)
    shoot(viewer, app, "export", docks["Export"][0])
    streaming_shot(viewer, app, docks, work, images)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
