"""Segment widget: current or loaded model, an image layer, whole stack or current slice."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Generator

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from ._common import CommandBox, LayerPicker, SandsegWidget
from ._engine import EngineProcess
from ._files import LayerSnapshot, image_file, safe_name, snapshot_layer
from ._model_io import ask_open_model, load_model_job
from ._results import Segmentation, show_segmentation

WHOLE_STACK = "whole stack"
CURRENT_SLICE = "current slice"


def predict_slabs(engine: EngineProcess, model_path: Path, n_classes: int, volume: np.ndarray, *, batch_size: int,
                  probabilities: bool, uncertainty: bool,
                  cancel: threading.Event) -> Generator[tuple[int, int], None, Any]:
    """Worker helper: the engine's slab-wise prediction (in the engine process) gathered into arrays.

    Yields ``(done, total)`` slices after each slab; returns ``(labels, probs, unc)``.
    """
    n = volume.shape[0]
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty(volume.shape + (n_classes,), np.float32) if probabilities else None
    unc = np.empty(volume.shape, np.float32) if uncertainty else None
    slabs = engine.run("predict", model_path, volume, batch_size, probabilities, uncertainty, cancel=cancel)
    for z0, z1, lab, p, u in slabs:
        labels[z0:z1] = lab
        if probs is not None:
            probs[z0:z1] = p
        if unc is not None:
            unc[z0:z1] = u
        yield z1, n
    return labels, probs, unc


def segment_job(engine: EngineProcess, model_path: Path, info: Any, image: LayerSnapshot, z_range: tuple[int, int],
                batch_size: int, probabilities: bool, uncertainty: bool, folder: Path,
                cancel: threading.Event) -> Generator[tuple[int, int], None, tuple[Segmentation, Path]]:
    """Worker: segment slices ``z_range`` of an image; also returns the image's file for the command."""
    z0, z1 = z_range
    labels, probs, unc = yield from predict_slabs(
        engine, model_path, info.n_classes, image.data[z0:z1], batch_size=batch_size, probabilities=probabilities,
        uncertainty=uncertainty, cancel=cancel,
    )
    seg = Segmentation(image.name, info.class_map, labels, z0, probs, unc, tuple(image.data.shape))
    return seg, image_file(image, folder)


def predict_command(model_path: Path, images: Path, out: Path, probabilities: Path | None) -> list[Any]:
    """The ``sandseg predict`` arguments for a segmentation."""
    args: list[Any] = ["sandseg", "predict", "--model", model_path,
                       "--images", images, "--out", out]
    if probabilities is not None:
        args += ["--probabilities", probabilities]
    return args


class SegmentWidget(SandsegWidget):
    """Segment an image layer with the current model into '<image> segmentation'."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.last: Segmentation | None = None
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.load_button = QPushButton("Load model...")
        self.load_button.clicked.connect(self.load_model)
        self.image_picker = LayerPicker(napari_viewer, Image, prefer=lambda n: not n.endswith("uncertainty") and " P(" not in n)
        self.scope = QComboBox()
        self.scope.addItems([WHOLE_STACK, CURRENT_SLICE])
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 512)
        self.batch_size.setValue(8)
        self.probabilities = QCheckBox("class-probability layers")
        self.uncertainty = QCheckBox("uncertainty (entropy) layer")
        form = QFormLayout()
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.load_button)
        form.addRow("Model", model_row)
        form.addRow("Image", self.image_picker)
        form.addRow("Segment", self.scope)
        form.addRow("Batch size", self.batch_size)
        form.addRow(self.probabilities)
        form.addRow(self.uncertainty)
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
        self._show_model()

    def _show_model(self) -> None:
        m = self.state.model
        self.model_label.setText(f"{m.label} ({m.info.backbone})" if m else "none: train or load one")
        self.run_button.setEnabled(m is not None and (self.job is None or not self.job.running))

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
        n = image.data.shape[0]
        if self.scope.currentText() == CURRENT_SLICE:
            z = int(self.viewer.dims.current_step[0])
            z_range = (z, z + 1)
        else:
            z_range = (0, n)
        snap = snapshot_layer(image, self.state)
        self.progress.setRange(0, z_range[1] - z_range[0])
        self.progress.setValue(0)
        self.status.setText(f"segmenting '{image.name}' slices {z_range[0]}..{z_range[1] - 1} ...")
        self.run_job(
            segment_job, self.state.engine, m.path, m.info, snap, z_range, self.batch_size.value(), self.probabilities.isChecked(),
            self.uncertainty.isChecked(), self.state.folder,
            on_yield=lambda p: self.progress.setValue(p[0]), on_return=self._segmented,
        )

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy and self.state.model is not None)
        self.load_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _segmented(self, outcome: tuple[Segmentation, Path]) -> None:
        seg, images_file = outcome
        self.last = seg
        layer = show_segmentation(self.viewer, seg, self.state)
        m = self.state.model
        stem = safe_name(seg.image_name)
        out = self.state.folder / f"{stem}_segmentation.tif"
        probs = self.state.folder / f"{stem}_probabilities.tif" if seg.probabilities is not None else None
        self.command.set_command(predict_command(m.path, images_file, out, probs))
        what = "whole stack" if seg.labels.shape[0] == seg.full_shape[0] else f"slice {seg.z_start}"
        extra = " Probability/uncertainty layers were added hidden: tick their eye to show them." if (
            seg.probabilities is not None or seg.uncertainty is not None) else ""
        self.status.setText(f"Segmented the {what} into '{layer.name}'.{extra}")
