"""Segment widget: current or loaded model, an image layer, whole stack or current slice.

Two ways to run. An in-memory image is copied to the engine process and its labels come back
as arrays (fast, for volumes that fit in memory). A lazy image (a dask or zarr layer, as the
reader opens big files), or any image when "write to a file" is ticked, is *streamed*: only
paths cross to the engine process, which reads the image from its file and writes the labels
slab by slab to a TIFF or zarr output; napari then shows that file lazily.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from ..choices import AUTO, PRECISIONS, PREDICT_BATCH_SIZE
from ..classmap import ClassMap
from ..command_lines import predict_command
from ..engine_process import EngineProcess
from ..engine_requests import PredictFileRequest, SliceProgress
from ..errors import SandsegError
from ..io import TIFF_SUFFIXES
from ..lazy import is_zarr
from ..units import VoxelSize, format_voxel_size
from ._common import CommandBox, LayerPicker, SandsegWidget, VoxelSizeField
from ._files import (
    LayerSnapshot,
    default_output,
    extra_output,
    human_size,
    image_file,
    is_lazy,
    layer_file,
    output_problem,
    safe_name,
    snapshot_layer,
)
from ._jobs import predict_slabs
from ._model_io import ask_open_model, load_model_job
from ._results import Segmentation, StreamedSegmentation, show_segmentation, show_streamed

WHOLE_STACK = "whole stack"
CURRENT_SLICE = "current slice"


def segment_job(engine: EngineProcess, model_path: Path, info: Any, image: LayerSnapshot, z_range: tuple[int, int],
                batch_size: int, probabilities: bool, uncertainty: bool, folder: Path, cancel: threading.Event,
                precision: str = AUTO) -> Generator[SliceProgress, None, tuple[Segmentation, Path]]:
    """Worker: segment slices ``z_range`` of an image; also returns the image's file for the command."""
    z0, z1 = z_range
    labels, probs, unc = yield from predict_slabs(
        engine, model_path, info.n_classes, image.data[z0:z1], batch_size=batch_size, probabilities=probabilities,
        uncertainty=uncertainty, cancel=cancel, precision=precision,
    )
    seg = Segmentation(image.name, info.class_map, labels, z0, probs, unc, tuple(image.data.shape))
    return seg, image_file(image, folder)


@dataclass
class StreamRequest:
    """A streamed segmentation as decided on the main thread: what to read, where to write."""

    image_name: str
    images: Path | LayerSnapshot  # the image's file, or an in-memory copy to save first
    out: Path
    probabilities: Path | None
    uncertainty: Path | None
    overwrite: bool
    class_map: ClassMap
    voxel_size: VoxelSize | None = None  # kept in the outputs; None: the image file's own


def stream_job(engine: EngineProcess, model_path: Path, request: StreamRequest, batch_size: int, folder: Path,
               cancel: threading.Event,
               precision: str = AUTO) -> Generator[SliceProgress, None, StreamedSegmentation]:
    """Worker: the engine streams the image file into the output files; returns lazy views of them.

    Yields :class:`SliceProgress` as the engine reports it. Opening the outputs here (not
    on the main thread) reads only their headers.
    """
    from .._napari.lazy_layers import lazy_array, lazy_labels

    images = request.images if isinstance(request.images, Path) else image_file(request.images, folder)
    summary = yield from engine.run(PredictFileRequest(
        Path(model_path), images, request.out, request.probabilities, request.uncertainty, batch_size,
        request.overwrite, precision, request.voxel_size,
    ), cancel=cancel)
    probs, unc = summary.probabilities, summary.uncertainty
    return StreamedSegmentation(
        request.image_name, request.class_map, images, summary.out, lazy_labels(summary.out, request.class_map),
        summary.nbytes, probs, lazy_array(probs, 4) if probs is not None else None,
        unc, lazy_array(unc, 3) if unc is not None else None,
    )


def engine_reads(path: Path) -> bool:
    """Whether the engine can read an image from ``path`` (TIFF, folder of TIFFs, zarr store)."""
    return path.is_dir() or is_zarr(path) or path.suffix.lower() in TIFF_SUFFIXES


class SegmentWidget(SandsegWidget):
    """Segment an image layer with the current model into '<image> segmentation'."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.last: Segmentation | StreamedSegmentation | None = None
        self._wants_file = False  # the user's own "write to a file" choice (lazy images force it)
        self._auto_path = True  # the output path follows the image until the user edits it
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.load_button = QPushButton("Load model...")
        self.load_button.clicked.connect(self.load_model)
        self.image_picker = LayerPicker(napari_viewer, Image, prefer=lambda n: not n.endswith("uncertainty") and " P(" not in n)
        self.voxel_size = VoxelSizeField()
        self.scope = QComboBox()
        self.scope.addItems([WHOLE_STACK, CURRENT_SLICE])
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 512)
        self.batch_size.setValue(PREDICT_BATCH_SIZE)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setCurrentText(AUTO)
        self.precision.setToolTip(
            "arithmetic of the model: auto = bfloat16 on CPUs that compute it natively (faster, nearly "
            "identical labels), else float32; float32 gives the same result on every machine"
        )
        self.probabilities = QCheckBox("class-probability layers")
        self.uncertainty = QCheckBox("uncertainty (entropy) layer")
        self._build_output_controls()
        form = QFormLayout()
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.load_button)
        form.addRow("Model", model_row)
        form.addRow("Image", self.image_picker)
        form.addRow("Voxel size", self.voxel_size)
        form.addRow("Segment", self.scope)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Precision", self.precision)
        form.addRow(self.probabilities)
        form.addRow(self.uncertainty)
        form.addRow("Output", self.to_file)
        path_row = QHBoxLayout()
        path_row.addWidget(self.out_edit, 1)
        path_row.addWidget(self.browse_button)
        form.addRow("File", path_row)
        form.addRow("", self.overwrite)
        form.addRow(self.mode_label)
        self.run_button, self.cancel_button, buttons = self.run_cancel_row("Segment")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m slices")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.command = CommandBox()
        layout = self.layout()
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.command)
        layout.addStretch(1)
        self.state.model_changed.connect(self._show_model)
        self.image_picker.currentTextChanged.connect(self._update_output)
        self.scope.currentTextChanged.connect(self._update_output)
        # Connected after the picker's own handlers, so they see its new selection.
        napari_viewer.layers.events.inserted.connect(self._update_output)
        napari_viewer.layers.events.removed.connect(self._update_output)
        self._show_model()
        self._update_output()

    def _build_output_controls(self) -> None:
        self.to_file = QCheckBox("write to a file, slab by slab")
        self.to_file.setToolTip(
            "Stream the labels to a TIFF (BigTIFF when needed) or zarr store and show them from there, "
            "so the volume never has to fit in memory. Lazy (dask / zarr) images are always streamed."
        )
        self.to_file.clicked.connect(self._to_file_clicked)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("labels.tif or labels.zarr")
        self.out_edit.textEdited.connect(self._path_edited)
        self.out_edit.textChanged.connect(self.out_edit.setToolTip)  # the whole path, when it is cut off
        self.browse_button = QPushButton("Browse...")
        self.browse_button.clicked.connect(self._browse)
        self.overwrite = QCheckBox("overwrite existing files")
        self.overwrite.setToolTip("without it, an existing output is never replaced")
        self.mode_label = QLabel("")
        self.mode_label.setWordWrap(True)

    def _show_model(self) -> None:
        m = self.state.model
        self.model_label.setText(f"{m.label} ({m.info.backbone})" if m else "none: train or load one")
        self.run_button.setEnabled(m is not None and (self.job is None or not self.job.running))

    # ------------------------------------------------------------------ output controls

    def _to_file_clicked(self, checked: bool) -> None:
        self._wants_file = checked
        self._update_output()

    def _path_edited(self, text: str) -> None:
        self._auto_path = not text.strip()  # cleared: follow the image again

    def _browse(self) -> None:
        # The overwrite checkbox is the consent, so the dialog must not ask as well.
        path, _ = QFileDialog.getSaveFileName(
            self, "Write the segmentation to", self.out_edit.text(),
            "TIFF stack (*.tif *.tiff);;zarr store (*.zarr)", options=QFileDialog.DontConfirmOverwrite,
        )
        if path:
            self.out_edit.setText(path)
            self._auto_path = False

    def streams(self, image: Any) -> bool:
        """Whether segmenting ``image`` now would stream it to a file (else: in memory)."""
        if image is not None and is_lazy(image):
            return True
        return self._wants_file and self.scope.currentText() == WHOLE_STACK

    def _update_output(self, *_: Any) -> None:
        """Show which way the picked image will be segmented; suggest an output path."""
        image = self.image_picker.layer()
        lazy = image is not None and is_lazy(image)
        busy = self.job is not None and self.job.running
        streaming = self.streams(image)
        self.to_file.setChecked(streaming)
        self.to_file.setEnabled(not busy and not lazy and self.scope.currentText() == WHOLE_STACK)
        for control in (self.out_edit, self.browse_button, self.overwrite):
            control.setEnabled(streaming and not busy)
        source = layer_file(image, self.state) if image is not None else None
        self.voxel_size.follow(image)
        if image is not None and self._auto_path:
            self.out_edit.setText(str(default_output(image.name, source, self.state.folder)))
        self.mode_label.setText(self._mode_text(image, lazy, source))
        where = "written beside the label file and shown from there" if streaming else "kept in memory"
        self.probabilities.setToolTip(f"one hidden float32 layer per class, {where}")
        self.uncertainty.setToolTip(f"normalised entropy 0..1, hidden, {where}")

    def _mode_text(self, image: Any, lazy: bool, source: Path | None) -> str:
        if image is None:
            return ""
        if lazy and source is None:
            return (f"'{image.name}' is not in memory and has no file: save it (.tif or .zarr) or open it "
                    "from a file to segment it.")
        if lazy:
            if self.scope.currentText() == CURRENT_SLICE:
                return f"'{image.name}' is read lazily from {source.name}: segment the whole stack to a file."
            return f"'{image.name}' is read lazily from {source.name}: streamed to the file, shown from there."
        if self.streams(image):
            return "Streamed to the file, then shown from it (the labels never need to fit in memory)."
        return "Result kept in memory; tick 'write to a file' for volumes bigger than memory."

    # ------------------------------------------------------------------ running

    def load_model(self, path: str | Path | None = None) -> None:
        """Load a model file and make it current (shared with the other widgets)."""
        path = path or ask_open_model(self, str(self.state.folder))
        if path:
            self.run_job(load_model_job, self.state.engine, Path(path), on_return=lambda r: self.state.set_model(*r))

    def start(self) -> None:
        """Segment the picked image (whole stack or the current slice) in a worker."""
        m, image = self.state.model, self.image_picker.layer()
        if m is None or image is None:
            show_error("Segment needs a model (train or load one) and an image layer")
            return
        if image.ndim != 3:
            show_error(f"layer '{image.name}' has {image.ndim} dimensions; Segment needs a (Z, Y, X) stack")
            return
        if is_lazy(image) and self.scope.currentText() == CURRENT_SLICE:
            show_error(f"layer '{image.name}' is read lazily from disk: segment the whole stack, streamed to a file "
                       "(a single slice is segmented only for images held in memory)")
            return
        self.voxel_size.follow(image)  # its scale may have changed since it was picked
        try:
            voxel_size = self.voxel_size.value()
        except SandsegError as exc:
            show_error(str(exc))
            return
        if self.voxel_size.typed():
            set_voxel_size(image, voxel_size)  # its results take the image's scale, and lie over it
        if self.streams(image):
            self._start_streaming(m, image, voxel_size)
            return
        n = image.data.shape[0]
        if self.scope.currentText() == CURRENT_SLICE:
            z = int(self.viewer.dims.current_step[0])
            z_range = (z, z + 1)
        else:
            z_range = (0, n)
        snap = snapshot_layer(image, self.state)
        batch_size, precision = self.batch_size.value(), self.precision.currentText()
        self.progress.setRange(0, z_range[1] - z_range[0])
        self.progress.setValue(0)
        self.status.setText(f"segmenting '{image.name}' slices {z_range[0]}..{z_range[1] - 1} ...")
        self.run_job(
            segment_job, self.state.engine, m.path, m.info, snap, z_range, batch_size, self.probabilities.isChecked(),
            self.uncertainty.isChecked(), self.state.folder, precision=precision,
            on_yield=lambda p: self.progress.setValue(p.done),
            on_return=lambda outcome: self._segmented(outcome, batch_size, precision, voxel_size),
        )

    def stream_request(self, image: Any, class_map: ClassMap,
                       voxel_size: VoxelSize | None = None) -> StreamRequest | None:
        """What a streamed run of ``image`` reads and writes; None (after a notification) when it cannot run.

        ``voxel_size`` is kept in the outputs (None: the one the image file carries, if any).
        """
        source = layer_file(image, self.state)
        if is_lazy(image) and (source is None or not engine_reads(source)):
            # Never ship a dask graph (or a huge copy) to the engine: it must read a file itself.
            show_error(
                f"layer '{image.name}' is not held in memory and has no TIFF or zarr file on disk, so it cannot "
                "be segmented: save it (File > Save Selected Layers..., as .tif or .zarr) or open it from a file, "
                "then segment that layer"
            )
            return None
        text = self.out_edit.text().strip()
        if not text:
            show_error("Segment: give an output file (.tif or .zarr) to write the labels to")
            return None
        out = Path(text).expanduser()
        if out.parent == self.state.folder:
            self.state.ensure_folder()  # the default for images without a file: ours to create
        overwrite = self.overwrite.isChecked()
        probs = extra_output(out, "probabilities") if self.probabilities.isChecked() else None
        unc = extra_output(out, "uncertainty") if self.uncertainty.isChecked() else None
        for path in (p for p in (out, probs, unc) if p is not None):
            problem = output_problem(path, overwrite, source)
            if problem is not None:
                show_error(problem)
                return None
        images = source if source is not None and engine_reads(source) else snapshot_layer(image, self.state)
        return StreamRequest(image.name, images, out, probs, unc, overwrite, class_map, voxel_size)

    def _start_streaming(self, m: Any, image: Any, voxel_size: VoxelSize | None = None) -> None:
        request = self.stream_request(image, m.info.class_map, voxel_size)
        if request is None:
            return
        batch_size, precision = self.batch_size.value(), self.precision.currentText()
        self.progress.setRange(0, int(image.data.shape[0]))
        self.progress.setValue(0)
        self.status.setText(f"segmenting '{image.name}' into {request.out} ...")
        self.run_job(
            stream_job, self.state.engine, m.path, request, batch_size, self.state.folder, precision=precision,
            on_yield=lambda p: self.progress.setValue(p.done),
            on_return=lambda result: self._streamed(result, m.path, batch_size, request.overwrite, precision,
                                                    request.voxel_size),
        )

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy and self.state.model is not None)
        self.load_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self._update_output()
            return
        for control in (self.to_file, self.out_edit, self.browse_button, self.overwrite):
            control.setEnabled(False)

    def _segmented(self, outcome: tuple[Segmentation, Path], batch_size: int, precision: str,
                   voxel_size: VoxelSize | None = None) -> None:
        seg, images_file = outcome
        self.last = seg
        layer = show_segmentation(self.viewer, seg, self.state)
        m = self.state.model
        stem = safe_name(seg.image_name)
        out = self.state.folder / f"{stem}_segmentation.tif"
        probs = self.state.folder / f"{stem}_probabilities.tif" if seg.probabilities is not None else None
        self.command.set_command(predict_command(m.path, images_file, out, probs, batch_size=batch_size,
                                                 precision=precision, voxel_size=voxel_size))
        what = "whole stack" if seg.labels.shape[0] == seg.full_shape[0] else f"slice {seg.z_start}"
        extra = " Probability/uncertainty layers were added hidden: tick their eye to show them." if (
            seg.probabilities is not None or seg.uncertainty is not None) else ""
        self.status.setText(f"Segmented the {what} into '{layer.name}'{_in_units(voxel_size)}.{extra}")

    def _streamed(self, seg: StreamedSegmentation, model_path: Path, batch_size: int, overwrite: bool,
                  precision: str, voxel_size: VoxelSize | None = None) -> None:
        self.last = seg
        layer = show_streamed(self.viewer, seg, self.state)
        self.command.set_command(predict_command(
            model_path, seg.images, seg.labels_path, seg.probabilities_path, seg.uncertainty_path,
            batch_size=batch_size, overwrite=overwrite, precision=precision, voxel_size=voxel_size,
        ))
        extra = " Probability/uncertainty layers (files beside it) were added hidden." if (
            seg.probabilities is not None or seg.uncertainty is not None) else ""
        self.status.setText(
            f"Segmented the whole stack into '{layer.name}'{_in_units(voxel_size)}, read lazily from {seg.labels_path} "
            f"({human_size(seg.nbytes)} on disk).{extra}"
        )


def set_voxel_size(layer: Any, voxel_size: VoxelSize | None) -> None:
    """Show ``layer`` in ``voxel_size`` (its ``scale`` and ``units``; pixels: unit ``pixel``).

    Results take their image's scale (``_results.physical_scale``), so a voxel size typed for
    an image goes on the image too: its segmentation then lies over it in napari's world.
    """
    if voxel_size is None:
        return
    sizes, unit = voxel_size
    layer.scale = sizes[-layer.ndim:]
    layer.units = ("pixel" if unit == "px" else unit,) * layer.ndim


def _in_units(voxel_size: VoxelSize | None) -> str:
    """`` (voxel size 2.5um)`` for a status line, or nothing in pixels."""
    return "" if voxel_size is None or voxel_size[1] == "px" else f" (voxel size {format_voxel_size(voxel_size)})"
