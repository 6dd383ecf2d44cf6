"""Segment widget, streaming mode: lazy images are segmented file to file and shown lazily.

The model is made (and the expected labels computed with ``predict.predict_volume``) in a
separate Python process, so TensorFlow never loads in the viewer's process (see conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from napari.layers import Labels
from napari.utils.notifications import NotificationSeverity

import napari_sandseg._napari.reader as reader_module
from napari_sandseg._napari.layers import CLASS_MAP_KEY, SOURCE_KEY, label_colormap
from napari_sandseg._widgets._common import format_command
from napari_sandseg._widgets._segment_widget import CURRENT_SLICE, SegmentWidget
from napari_sandseg._widgets._state import session_for
from napari_sandseg.classmap import ClassMap
from napari_sandseg.io import read_volume, write_volume
from napari_sandseg.lazy import open_volume
from napari_sandseg.model import read_info
from napari_sandseg.sample import make_sandstone

pytestmark = [pytest.mark.gui, pytest.mark.slow]

JOB_TIMEOUT_MS = 240_000
CLASS_MAP = ClassMap((0, 85, 170, 255))
VOLUME = make_sandstone((8, 64, 64), seed=3)[0][:6]  # at least 8 slices are made

# Runs in its own process: an untrained (seeded) resnet18 is enough to check the plumbing, and
# the expected labels come from predict_volume on the very same file and model, in the precision the
# widget uses by default ("auto").
MAKE_MODEL = r"""
import sys
from pathlib import Path

import numpy as np

from napari_sandseg._tf import tf
from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.lazy import open_volume
from napari_sandseg.model import ModelInfo, build_model, load_model, save_model
from napari_sandseg.predict import predict_volume

folder = Path(sys.argv[1])
tf().keras.utils.set_random_seed(0)
info = ModelInfo(config={}, class_map=ClassMap((0, 85, 170, 255)), normalization=Normalization(0.0, 255.0),
                 backbone="resnet18", n_classes=4)
save_model(build_model("resnet18", 4), folder / "model.keras", info)
model, info = load_model(folder / "model.keras")
# precision "auto", as the widget's default: the engine decides it on this same machine.
expected = predict_volume(model, open_volume(folder / "scan.tif"), info, batch_size=8, precision="auto")
np.save(folder / "expected.npy", expected.labels)
exact = predict_volume(model, open_volume(folder / "scan.tif"), info, batch_size=8, precision="float32")
np.save(folder / "expected_float32.npy", exact.labels)
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """``(model.keras, expected class ids of VOLUME)``, made in a subprocess."""
    folder = tmp_path_factory.mktemp("model")
    write_volume(folder / "scan.tif", VOLUME)
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(folder)], check=True, timeout=900)
    expected = np.load(folder / "expected.npy")
    assert len(np.unique(expected)) >= 2  # else "equal labels" would prove little
    return folder / "model.keras", expected


def _errors(notes) -> list[str]:
    return [message for severity, message in notes if severity >= NotificationSeverity.ERROR]


def _widget(viewer, qtbot, model: Path, load: bool = True) -> SegmentWidget:
    """A docked Segment widget with ``model`` current (loaded by the engine, or just its sidecar)."""
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    if load:
        widget.load_model(model)
        _wait(qtbot, widget)
    else:  # enough for checks that refuse before the engine is asked anything
        session_for(viewer).set_model(read_info(model), model)
    assert session_for(viewer).model is not None
    return widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running and widget.load_button.isEnabled(),
                    timeout=JOB_TIMEOUT_MS)
    qtbot.wait(50)  # let the returned/finished signals reach the main thread


def _open_lazily(viewer, path: Path, monkeypatch):
    """Open ``path`` through the plugin reader as a dask layer (the reader's size threshold lowered)."""
    monkeypatch.setattr(reader_module, "LAZY_BYTES", 0)
    [layer] = viewer.open(str(path), plugin="napari-sandseg")
    assert isinstance(layer.data, da.Array)
    return layer


def _files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative name -> bytes), temp files included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lazy_tiff_streams_to_a_tif_and_shows_it_lazily(make_napari_viewer, qtbot, tmp_path, model_files,
                                                        monkeypatch, notes):
    model, expected = model_files
    scan = write_volume(tmp_path / "scan.tif", VOLUME)
    viewer = make_napari_viewer()
    _open_lazily(viewer, scan, monkeypatch)
    seg = _widget(viewer, qtbot, model)
    assert seg.to_file.isChecked() and not seg.to_file.isEnabled()  # lazy: always streamed
    out = tmp_path / "scan_segmentation.tif"
    assert Path(seg.out_edit.text()) == out

    seg.run_button.click()
    _wait(qtbot, seg)
    assert _errors(notes) == []
    layer = viewer.layers["scan segmentation"]
    assert isinstance(layer, Labels) and isinstance(layer.data, da.Array)
    np.testing.assert_array_equal(np.asarray(layer.data), expected + 1)  # layer value = class id + 1
    np.testing.assert_array_equal(read_volume(out), CLASS_MAP.decode(expected))  # original values on disk
    assert layer.metadata[SOURCE_KEY] == str(out) and layer.metadata[CLASS_MAP_KEY] == CLASS_MAP.to_dict()
    assert layer.opacity == 0.5
    values = np.arange(5)
    np.testing.assert_allclose(layer.colormap.map(values), label_colormap(CLASS_MAP).map(values))
    assert seg.command.command() == format_command(
        ["sandseg", "predict", "--model", model, "--images", scan, "--out", out])
    assert str(out) in seg.status.text() and "KiB on disk" in seg.status.text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.tif", "scan_segmentation.tif"]  # no temp file

    # Again, with consent to overwrite and the extras: the same layer takes the new file.
    seg.overwrite.setChecked(True)
    seg.probabilities.setChecked(True)
    seg.uncertainty.setChecked(True)
    n_layers = len(viewer.layers)
    seg.run_button.click()
    _wait(qtbot, seg)
    assert _errors(notes) == []
    assert viewer.layers["scan segmentation"] is layer and isinstance(layer.data, da.Array)
    np.testing.assert_array_equal(np.asarray(layer.data), expected + 1)
    probs = viewer.layers["scan P(pore)"]
    unc = viewer.layers["scan uncertainty"]
    assert len(viewer.layers) == n_layers + 5 and not probs.visible and not unc.visible
    assert isinstance(probs.data, da.Array) and probs.data.shape == VOLUME.shape
    assert probs.metadata[SOURCE_KEY] == str(tmp_path / "scan_probabilities.tif")
    total = sum(np.asarray(viewer.layers[f"scan P({name})"].data) for name in CLASS_MAP.names)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    u = np.asarray(unc.data)
    assert u.shape == VOLUME.shape and 0.0 <= u.min() and u.max() <= 1.0
    assert viewer.layers[-1] is layer  # the segmentation stays on top of its probabilities
    assert seg.command.command().endswith(
        f"--probabilities {tmp_path / 'scan_probabilities.tif'} --uncertainty {tmp_path / 'scan_uncertainty.tif'} "
        "--overwrite")

    # An in-memory image without a file, with "write to a file" ticked: saved, then streamed.
    viewer.add_image(VOLUME.copy(), name="memory")
    seg.image_picker.setCurrentText("memory")
    assert not seg.to_file.isChecked() and seg.to_file.isEnabled()
    seg.to_file.click()
    seg.probabilities.setChecked(False)
    seg.uncertainty.setChecked(False)
    seg.run_button.click()
    _wait(qtbot, seg)
    assert _errors(notes) == []
    result = viewer.layers["memory segmentation"]
    assert isinstance(result.data, da.Array)
    np.testing.assert_array_equal(np.asarray(result.data), expected + 1)
    assert Path(result.metadata[SOURCE_KEY]).parent == session_for(viewer).folder


def test_zarr_store_streams_to_a_zarr_store(make_napari_viewer, qtbot, tmp_path, model_files, notes):
    model, expected = model_files
    store = tmp_path / "scan.zarr"
    zarr.open_array(str(store), mode="w", shape=VOLUME.shape, chunks=(1, 64, 64), dtype="u1")[:] = VOLUME
    viewer = make_napari_viewer()
    [image] = viewer.open(str(store), plugin="napari-sandseg")  # zarr always opens lazily
    assert isinstance(image.data, da.Array)
    seg = _widget(viewer, qtbot, model)
    seg.probabilities.setChecked(True)
    out = tmp_path / "scan_segmentation.zarr"
    assert Path(seg.out_edit.text()) == out
    seg.run_button.click()
    _wait(qtbot, seg)
    assert _errors(notes) == []
    layer = viewer.layers["scan segmentation"]
    assert isinstance(layer.data, da.Array)
    np.testing.assert_array_equal(np.asarray(layer.data), expected + 1)
    np.testing.assert_array_equal(open_volume(out)[:], CLASS_MAP.decode(expected))  # an OME-Zarr label image
    probs = zarr.open_array(str(tmp_path / "scan_probabilities.zarr"), mode="r")
    assert probs.shape == VOLUME.shape + (4,)
    np.testing.assert_array_equal(probs[:].argmax(-1), expected)
    assert seg.command.command() == format_command(
        ["sandseg", "predict", "--model", model, "--images", store, "--out", out,
         "--probabilities", tmp_path / "scan_probabilities.zarr"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.zarr", "scan_probabilities.zarr",
                                                         "scan_segmentation.zarr"]

    # float32 chosen: the engine computes in float32 (labels as predict_volume's) and the command says so.
    assert seg.precision.currentText() == "auto"
    seg.precision.setCurrentText("float32")
    seg.overwrite.setChecked(True)
    seg.run_button.click()
    _wait(qtbot, seg)
    assert _errors(notes) == []
    exact = np.load(model.parent / "expected_float32.npy")
    np.testing.assert_array_equal(open_volume(out)[:], CLASS_MAP.decode(exact))
    assert seg.command.command() == format_command(
        ["sandseg", "predict", "--model", model, "--images", store, "--out", out,
         "--probabilities", tmp_path / "scan_probabilities.zarr", "--precision", "float32", "--overwrite"])


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_an_existing_output_is_kept_without_consent(make_napari_viewer, qtbot, tmp_path, model_files,
                                                    monkeypatch, notes, suffix):
    model, _ = model_files
    scan = write_volume(tmp_path / "scan.tif", VOLUME)
    out = tmp_path / f"scan_segmentation{suffix}"
    if suffix == ".tif":
        write_volume(out, np.full((2, 8, 8), 7, np.uint8))
    else:
        zarr.open_array(str(out), mode="w", shape=(2, 8, 8), dtype="u1")[:] = 7
    before = _files(tmp_path)
    viewer = make_napari_viewer()
    _open_lazily(viewer, scan, monkeypatch)
    seg = _widget(viewer, qtbot, model, load=False)
    seg.out_edit.setText(str(out))
    seg.run_button.click()
    assert seg.job is None  # refused before anything ran
    assert len(_errors(notes)) == 1 and str(out) in _errors(notes)[0] and "already exists" in _errors(notes)[0]
    assert "overwrite" in _errors(notes)[0]
    assert "scan segmentation" not in viewer.layers
    assert _files(tmp_path) == before  # byte-identical, nothing added

    seg.out_edit.setText(str(tmp_path / "no such folder" / "labels.tif"))
    seg.run_button.click()
    assert seg.job is None and "does not exist" in _errors(notes)[-1]
    seg.out_edit.setText(str(scan))
    seg.overwrite.setChecked(True)
    seg.run_button.click()  # consent to overwrite never extends to the image itself
    assert seg.job is None and "is also an input" in _errors(notes)[-1]
    assert _files(tmp_path) == before
    assert session_for(viewer).engine.pid is None  # the engine process was never started


def test_cancel_or_an_engine_error_leaves_no_output(make_napari_viewer, qtbot, tmp_path, model_files, monkeypatch,
                                                   notes):
    model, _ = model_files
    long = make_sandstone((40, 96, 96), seed=4)[0]
    scan = write_volume(tmp_path / "scan.tif", long)
    viewer = make_napari_viewer()
    _open_lazily(viewer, scan, monkeypatch)
    seg = _widget(viewer, qtbot, model)
    seg.batch_size.setValue(1)  # one slice per slab: many chances to stop
    seen_mid_run: list[list[str]] = []

    def cancel_on_first_slab(progress) -> None:
        if not seen_mid_run:
            seen_mid_run.append(sorted(p.name for p in tmp_path.iterdir()))
            seg.cancel_button.click()

    seg.run_button.click()
    seg.job.worker.yielded.connect(cancel_on_first_slab)
    _wait(qtbot, seg)
    assert seen_mid_run and any(".tmp" in name for name in seen_mid_run[0])  # it was writing when cancelled
    assert seg.progress.value() < len(long)
    assert any("cancelled" in message for _, message in notes), notes
    assert _errors(notes) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.tif"]  # no output, no temp file
    assert "scan segmentation" not in viewer.layers

    # A volume the model cannot take (16-bit data, 8-bit model): the engine's error, as a notification.
    hot = write_volume(tmp_path / "hot.tif", (long[:4].astype(np.uint16) + 1000))
    _open_lazily(viewer, hot, monkeypatch)
    seg.image_picker.setCurrentText("hot")
    seg.run_button.click()
    _wait(qtbot, seg)
    [message] = _errors(notes)
    assert "hot.tif" in message and "do not overlap" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hot.tif", "scan.tif"]
    assert "hot segmentation" not in viewer.layers and seg.run_button.isEnabled()


def test_a_lazy_layer_without_a_file_gets_a_clear_notification(make_napari_viewer, qtbot, model_files, notes):
    model, _ = model_files
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(VOLUME, chunks=(1, 64, 64)), name="console")
    seg = _widget(viewer, qtbot, model, load=False)
    assert seg.to_file.isChecked() and "has no file" in seg.mode_label.text()
    seg.run_button.click()
    assert seg.job is None
    [message] = _errors(notes)
    assert "'console'" in message and "no TIFF or zarr file" in message and "save it" in message
    assert "open it from a file" in message
    seg.scope.setCurrentText(CURRENT_SLICE)  # a single slice of a lazy layer is refused too
    seg.run_button.click()
    assert seg.job is None and "whole stack" in _errors(notes)[-1]
    assert session_for(viewer).engine.pid is None  # nothing (no dask graph) went to the engine
    assert [layer.name for layer in viewer.layers] == ["console"]
