"""Jobs that load, save and export models, and the dialogs that pick them (shared by widgets)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Generator

from qtpy.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QLabel, QLineEdit, QWidget

from ..command_lines import export_command
from ..engine_process import EngineProcess
from ..engine_requests import LoadRequest
from ..errors import Cancelled, SandsegError
from ..io import atomic_write
from ..model import sidecar_path
from ..model_package import DEFAULT_LICENSE, PACKAGE_SUFFIX, PackageMetadata, extract_package, is_package


def load_model_job(engine: EngineProcess, path: Path, cancel: threading.Event) -> Generator[Any, None, tuple[Any, Path]]:
    """Worker: load a model artefact in the engine process (safe mode) -> ``(info, path)``."""
    info = yield from engine.run(LoadRequest(Path(path)), cancel=cancel)
    return info, Path(path)


def save_model_job(source: Path, target: Path, cancel: threading.Event) -> Generator[str, None, Path]:
    """Worker: copy the current model artefact (``.keras`` + ``.json`` sidecar) atomically.

    The artefact on disk is self-describing (the sidecar records the model file's checksum),
    so saving is a copy of both files; no TensorFlow needed. A model loaded from a bioimage.io
    package is saved as the artefact the package carries.
    """
    yield f"saving {target}"
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        return target
    if is_package(source):
        return extract_package(source, target, overwrite=True)
    for src, dst in ((source, target), (sidecar_path(source), sidecar_path(target))):
        with atomic_write(dst, overwrite=True) as tmp:
            shutil.copyfile(src, tmp)
    return target


def ask_open_model(parent: QWidget, start: str) -> str:
    """File dialog for a ``.keras`` model or a bioimage.io package (``.zip``) to load ('' when cancelled)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load model", start,
                                          "napari-sandseg model (*.keras *.zip);;Keras model (*.keras);;"
                                          "bioimage.io package (*.zip)")
    return path


def ask_save_model(parent: QWidget, start: str) -> str:
    """File dialog for where to save the model (it confirms overwriting itself)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save model", start, "Keras model (*.keras)")
    if path and not path.endswith(".keras"):
        path += ".keras"
    return path


# ---------------------------------------------------------------------------------- bioimage.io

#: How ``sandseg`` starts the one line it prints for a problem the user can fix (``cli.main``).
ERROR_PREFIX = "sandseg: error: "


def export_package_job(source: Path, target: Path, metadata: PackageMetadata, images: Path | None,
                       cancel: threading.Event, test: bool = True) -> Generator[str, None, str]:
    """Worker: write a bioimage.io package and run the reference checks -> their summary.

    The export runs as ``sandseg export-model`` in a process of its own, so TensorFlow and
    bioimageio.core never load into napari's process. Cancelling interrupts it (Ctrl-C: the
    package is written atomically, so nothing is left behind).

    ``test=False`` skips bioimageio.core's model test (the spec's validation still runs).

    Raises
    ------
    SandsegError
        What ``sandseg export-model`` reported (its ``sandseg: error:`` line), or
        :class:`Cancelled`.
    """
    yield f"exporting {Path(target).name}" + (" and testing it with bioimageio.core" if test else "")
    command = [sys.executable, "-m", "napari_sandseg.cli", *export_command(source, target, metadata, images, test)[1:]]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            if cancel.is_set():
                proc.send_signal(signal.SIGINT)  # runs the export's clean-up, unlike SIGTERM
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise Cancelled(f"export of {Path(target).name} cancelled; no package written")
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        summary, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        lines = [line for line in errors.splitlines() if line.startswith(ERROR_PREFIX)]
        message = lines[-1][len(ERROR_PREFIX):] if lines else (errors.strip().splitlines() or ["no message"])[-1]
        raise SandsegError(message)
    return summary


#: Licences offered in the export dialog (any SPDX identifier may be typed instead).
COMMON_LICENSES = (DEFAULT_LICENSE, "CC-BY-SA-4.0", "CC0-1.0", "MIT", "BSD-3-Clause", "Apache-2.0")


class ExportDialog(QDialog):
    """Asks what bioimage.io wants to know that the model does not: name, authors, licence, voxel size."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export for bioimage.io")
        self.name = QLineEdit()
        self.name.setPlaceholderText("default: napari-sandseg <backbone> Unet micro-CT")
        self.authors = QLineEdit()
        self.authors.setPlaceholderText("e.g. Ada Lovelace, Alan Turing")
        self.license = QComboBox()
        self.license.setEditable(True)
        self.license.addItems(COMMON_LICENSES)
        self.voxel_size = QLineEdit()
        self.voxel_size.setPlaceholderText("e.g. 2.5um (optional)")
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        form = QFormLayout(self)
        for label, field in (("Name", self.name), ("Authors", self.authors), ("Licence (SPDX)", self.license),
                             ("Voxel size", self.voxel_size)):
            form.addRow(label, field)
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def metadata(self) -> PackageMetadata:
        """The fields as :class:`PackageMetadata` (:class:`ConfigError` for a voxel size that does not parse)."""
        from ..units import parse_voxel_size

        voxel = self.voxel_size.text().strip()
        return PackageMetadata(
            name=self.name.text().strip() or None,
            authors=tuple(a.strip() for a in self.authors.text().split(",") if a.strip()),
            license=self.license.currentText().strip() or DEFAULT_LICENSE,
            voxel_size=parse_voxel_size(voxel) if voxel else None,
        )

    def accept(self) -> None:  # type: ignore[override]
        """Close only with fields that parse; else say what is wrong in the dialog."""
        try:
            self.metadata()
        except SandsegError as exc:
            self.problem.setText(str(exc))
            return
        super().accept()


def ask_export_package(parent: QWidget, start: str) -> tuple[Path, PackageMetadata] | None:
    """The export dialog, then where to write the package; None when either is cancelled."""
    dialog = ExportDialog(parent)
    if dialog.exec() != QDialog.Accepted:
        return None
    path, _ = QFileDialog.getSaveFileName(parent, "Export for bioimage.io", start, "bioimage.io package (*.zip)")
    if not path:
        return None
    return Path(path if path.endswith(PACKAGE_SUFFIX) else path + PACKAGE_SUFFIX), dialog.metadata()
