"""Export for bioimage.io from the widgets: the dialog, the export job, saving a loaded package (issue 15).

The export runs as ``sandseg export-model`` in its own process, so these tests never load
TensorFlow into the test process (a viewer test may follow); the model is built in a
subprocess too.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import zipfile

import pytest

from napari_sandseg.command_lines import export_command
from napari_sandseg.errors import Cancelled, SandsegError
from napari_sandseg.model_package import SIDECAR_NAME, WEIGHTS_NAME, PackageMetadata
from napari_sandseg._widgets._model_io import (
    ExportDialog,
    export_package_job,
    save_model_job,
)

from _helpers import drain

pytestmark = pytest.mark.gui

_BUILD = """
import sys
from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.model import ModelInfo, build_model, save_model
info = ModelInfo(config={"backbone": "resnet18"}, class_map=ClassMap((0, 1, 2, 3)),
                 normalization=Normalization(0.0, 255.0), backbone="resnet18", n_classes=4)
save_model(build_model("resnet18", 4), sys.argv[1], info)
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    pytest.importorskip("bioimageio.core")
    path = tmp_path_factory.mktemp("gui_model") / "m.keras"
    subprocess.run([sys.executable, "-c", _BUILD, str(path)], check=True, capture_output=True, timeout=300)
    return path


def test_dialog_collects_the_metadata_and_refuses_a_bad_voxel_size(qtbot):
    dialog = ExportDialog()
    qtbot.addWidget(dialog)
    dialog.name.setText("Sandstone phases")
    dialog.authors.setText("Ada Lovelace, Alan Turing ,")
    dialog.license.setCurrentText("MIT")
    dialog.voxel_size.setText("2.5um")
    meta = dialog.metadata()
    assert meta == PackageMetadata("Sandstone phases", ("Ada Lovelace", "Alan Turing"), "MIT", ((2.5, 2.5, 2.5), "um"))
    assert export_command("m.keras", "m.zip", meta) == [
        "sandseg", "export-model", "--model", "m.keras", "--out", "m.zip", "--name", "Sandstone phases",
        "--author", "Ada Lovelace", "--author", "Alan Turing", "--license", "MIT", "--voxel-size", "2.5um",
        "--overwrite"]
    dialog.voxel_size.setText("big")
    dialog.accept()
    assert dialog.result() != ExportDialog.Accepted and "voxel size 'big'" in dialog.problem.text()


def test_export_job_writes_a_tested_package_and_save_extracts_it(model_file, tmp_path):
    target = tmp_path / "m.zip"
    _, summary = drain(export_package_job(model_file, target, PackageMetadata(authors=("Ada Lovelace",)), None,
                                          cancel=threading.Event(), test=False))  # tests/test_model_package.py runs it
    assert "| status          | valid-format" in summary  # the spec's validation, run in the export process
    with zipfile.ZipFile(target) as zf:
        assert {"rdf.yaml", WEIGHTS_NAME, SIDECAR_NAME} <= set(zf.namelist())
    saved = drain(save_model_job(target, tmp_path / "back.keras", cancel=threading.Event()))[1]
    assert saved.read_bytes() == zipfile.ZipFile(target).read(WEIGHTS_NAME)
    assert (tmp_path / "back.json").read_bytes() == zipfile.ZipFile(target).read(SIDECAR_NAME)


def test_export_job_reports_the_cli_error_line_and_cancels_cleanly(model_file, tmp_path):
    with pytest.raises(SandsegError, match="^licence 'nope' is not an SPDX licence identifier"):
        drain(export_package_job(model_file, tmp_path / "a.zip", PackageMetadata(license="nope"), None,
                                 cancel=threading.Event()))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="no package written"):
        drain(export_package_job(model_file, tmp_path / "b.zip", PackageMetadata(), None, cancel=cancel))
    assert list(tmp_path.iterdir()) == []


def test_the_train_widget_exports_the_current_model_with_the_image_in_view(make_napari_viewer, qtbot, model_file,
                                                                             tiny_files, tmp_path, monkeypatch):
    """*Export for bioimage.io...* beside *Save model...*: off without a model; writes a tested package."""
    from napari_sandseg._widgets import _train_widget
    from napari_sandseg._widgets._state import session_for
    from napari_sandseg._widgets._train_widget import TrainWidget
    from napari_sandseg.model import read_info

    viewer = make_napari_viewer()
    viewer.open(str(tiny_files[0]), plugin="napari-sandseg")
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    assert not train.export_button.isEnabled()
    state = session_for(viewer)
    state.set_model(read_info(model_file), model_file)
    assert train.export_button.isEnabled()
    asked = {}
    real_job = _train_widget.export_package_job

    def job(source, target, metadata, images, cancel, test=True):
        asked.update(source=source, images=images)
        return (yield from real_job(source, target, metadata, images, cancel, test=False))

    monkeypatch.setattr(_train_widget, "export_package_job", job)
    target = tmp_path / "shared.zip"
    train.export_package(target, PackageMetadata(name="tiny sandstone"))
    qtbot.waitUntil(lambda: train.job is not None and not train.job.running, timeout=300_000)
    assert asked == {"source": model_file, "images": tiny_files[0]}
    with zipfile.ZipFile(target) as package:
        assert {WEIGHTS_NAME, SIDECAR_NAME, "rdf.yaml"} <= set(package.namelist())
