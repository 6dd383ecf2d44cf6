"""Export widget: a Labels layer -> TIFF stack with the original class values."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Generator

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QMessageBox, QPushButton

from .._napari.layers import ANNOTATION_KEY, SOURCE_KEY, class_map_from_metadata
from .._napari.writer import class_ids, labels_to_values
from ..classmap import ClassMap, value_dtype
from ..io import write_labels, write_volume
from ..units import layer_voxel_size
from ._common import LayerPicker, SandsegWidget
from ._files import is_lazy, safe_name
from ._results import is_segmentation


#: Slices decoded and written per step when exporting a lazy (file-backed) layer.
EXPORT_SLAB_BYTES = 64 * 2**20


def export_job(data: np.ndarray, metadata: dict[str, Any], name: str, path: Path, overwrite: bool,
               cancel: threading.Event, voxel_size=None) -> Generator[str, None, Path]:
    """Worker: decode the layer to its original class values and write the stack atomically.

    An annotation layer (scribbles) is written as painted: its values 1..K with 0 where nothing
    was painted, the form ``sandseg train --sparse`` reads back. ``voxel_size``
    (``((z, y, x), unit)``, the layer's scale) is kept as the TIFF's ImageJ spacing and unit.
    """
    yield "writing"
    if metadata.get(ANNOTATION_KEY):
        return write_volume(path, np.asarray(data), overwrite=overwrite, compression="zlib", voxel_size=voxel_size)
    ids, class_map = labels_to_values(data, metadata, name)
    return write_labels(path, ids, class_map, overwrite=overwrite, compression="zlib", voxel_size=voxel_size)


def export_lazy_job(data: Any, metadata: dict[str, Any], name: str, path: Path, overwrite: bool,
                    cancel: threading.Event, voxel_size=None) -> Generator[str, None, Path]:
    """Worker: stream a lazy ``(Z, Y, X)`` Labels layer (dask/zarr) to a TIFF a slab at a time.

    A streamed segmentation can be larger than memory, so it is never read whole: each slab
    of slices is read, decoded to the original class values and appended to a temporary
    (Big)TIFF that replaces ``path`` only when every slice is written. Cancelling (or any
    error) leaves ``path`` as it was. ``voxel_size`` as in :func:`export_job`.
    """
    from ..errors import Cancelled
    from ..outputs import slab_writer

    n = int(data.shape[0])
    per_slice = int(np.prod(data.shape[1:])) * np.dtype(data.dtype).itemsize
    step = max(1, EXPORT_SLAB_BYTES // max(per_slice, 1))
    class_map = class_map_from_metadata(metadata)
    if class_map is None:  # values 1..max are the classes: one streaming pass finds max
        top = max((int(np.max(np.asarray(data[z : z + step]))) for z in range(0, n, step)), default=1)
        class_map = ClassMap(tuple(range(max(top, 1))))
    with slab_writer(path, tuple(data.shape), value_dtype(class_map.values), overwrite=overwrite,
                     voxel_size=voxel_size, class_map=class_map) as writer:
        for z0 in range(0, n, step):
            if cancel.is_set():
                raise Cancelled(f"export of '{name}' cancelled; {path} was not changed")
            z1 = min(n, z0 + step)
            writer.write(z0, class_map.decode(class_ids(np.asarray(data[z0:z1]), class_map, name)))
            yield f"writing {path.name}: slices {z1} / {n}"
    return path


def default_export_path(layer_name: str, folder: Path) -> Path:
    """Where a layer is exported unless the user says otherwise: ``<folder>/<layer name>.tif``."""
    return folder / f"{safe_name(layer_name)}.tif"


class ExportWidget(SandsegWidget):
    """Write the predicted (or corrected) labels as a TIFF stack; asks before overwriting."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._suggested = ""  # the last default path shown; any other path is the user's choice
        self.picker = LayerPicker(napari_viewer, Labels, prefer=is_segmentation, follow=True)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("labels.tif")
        self.path_edit.textChanged.connect(self.path_edit.setToolTip)  # the whole path, when it is cut off
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Labels layer", self.picker)
        form.addRow("File", row)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.start)
        self.status = QLabel("Writes the original class values (e.g. 0/85/170/255), one page per slice.")
        self.status.setWordWrap(True)
        layout = self.layout()
        layout.addLayout(form)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.picker.currentTextChanged.connect(self._suggest)
        self._suggest()

    def _suggest(self, *_: Any) -> None:
        """Follow the picked layer with the default path, unless the user chose another path."""
        layer = self.picker.layer()
        if layer is not None and self.path_edit.text().strip() in ("", self._suggested):
            self._suggested = str(default_export_path(layer.name, self.state.folder))
            self.path_edit.setText(self._suggested)

    def _browse(self) -> None:
        # The Export button asks about overwriting, so the dialog need not (it would ask twice).
        path, _ = QFileDialog.getSaveFileName(
            self, "Export labels", self.path_edit.text(), "TIFF (*.tif *.tiff)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        if path:
            self.path_edit.setText(path)

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask before replacing ``path`` (tests monkeypatch QMessageBox.question)."""
        answer = QMessageBox.question(
            self, "Replace file?", f"{path} already exists.\nReplace it?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def start(self) -> None:
        """Export the picked layer to the chosen file."""
        layer = self.picker.layer()
        text = self.path_edit.text().strip()
        if layer is None or not text:
            show_error("Export needs a Labels layer and a file name")
            return
        path = Path(text).expanduser()
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_suffix(".tif")
        if path.is_dir():
            show_error(f"{path}: is a folder; give a file name such as {path / 'labels.tif'}")
            return
        overwrite = False
        if path.exists():
            if not self.confirm_overwrite(path):
                self.status.setText("Not exported: the file exists and was kept.")
                return
            overwrite = True
        if not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder should be, no permission, ...
                show_error(f"{path}: cannot create the folder {path.parent} ({exc.strerror or exc}); "
                           "choose a folder you can write to")
                return
        name = layer.name
        self.status.setText(f"writing {path} ...")
        # A lazy layer (a streamed segmentation) may not fit in memory: stream it instead.
        job, data = (export_lazy_job, layer.data) if is_lazy(layer) else (export_job, np.array(layer.data))
        self.run_job(
            job, data, dict(layer.metadata), name, path, overwrite,
            voxel_size=layer_voxel_size(layer.scale, layer.units),
            on_yield=self.status.setText, on_return=lambda written: self._exported(name, written),
        )

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.export_button.setEnabled(not busy)

    def _exported(self, name: str, path: Path) -> None:
        self.status.setText(f"Exported '{name}' to {path}")
        if name in self.viewer.layers:
            self.viewer.layers[name].metadata[SOURCE_KEY] = str(path)
        show_info(f"exported {name} to {path}")
