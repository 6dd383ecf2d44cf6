"""Train widget: settings, Train/Cancel, progress, live loss curves, device, save/load model."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from .._napari.layers import class_map_from_metadata, default_class_map, dense_ids, labels_layer_data
from ..classmap import ClassMap
from ..command_lines import train_command
from ..engine_process import EngineProcess
from ..engine_requests import PREVIEW_UNCERTAINTY, PREVIEW_Z, DeviceRequest, TrainRequest
from ..errors import SandsegError
from ..metrics import changed_share, metric_label
from ._annotation import AnnotationPanel, is_annotation
from ._common import CommandBox, LayerPicker, SandsegWidget, VoxelSizeField, plain_metric_names
from ._files import LayerSnapshot, image_file, labels_file, snapshot_layer
from ._model_io import (
    ask_export_package,
    ask_open_model,
    ask_save_model,
    export_package_job,
    load_model_job,
    save_model_job,
)
from ._plots import LinePlot
from ._results import show_preview
from ._state import TrainingData
from ._texts import epoch_text, training_result_text
from ._workers import Job


#: Said next to validation figures of a run on painted labels: they score how well the strokes
#: are reproduced (0.97 while whole held-out slices scored 0.67 in benchmarks/interactive.py),
#: not the segmentation.
PAINTED_ONLY = "on the painted pixels only; not the segmentation's quality"
#: The plotted share of the previewed slice that changed since the previous preview.
PREVIEW_CHANGE = "share of the preview slice changed"


@dataclass
class TrainOutcome:
    """A finished training run and the files its command line names."""

    result: Any
    images_file: Path
    masks_file: Path
    note: str = ""  # what the command line cannot repeat of the run (see write_sparse_mask)


#: The sparse checkbox's words; error messages name the setting by them.
SPARSE_LABEL = "train only on painted pixels"
#: What a dense run on a partly painted layer should do instead.
SPARSE_HINT = f"to train on the painted pixels alone, tick '{SPARSE_LABEL}'"


def device_job(engine: EngineProcess, cancel: threading.Event) -> Generator[str, None, str]:
    """Worker: start the engine process; it configures the GPU and describes the device."""
    return (yield from engine.run(DeviceRequest(), cancel=cancel))


def train_job(engine: EngineProcess, image: LayerSnapshot, labels: LayerSnapshot, targets: np.ndarray,
              class_map: ClassMap, config: Any, out_path: Path, folder: Path, init_model: Path | None,
              cancel: threading.Event, preview_z: int | None = None,
              preview_uncertainty: bool = False, voxel_size: Any = None) -> Generator[Any, None, TrainOutcome]:
    """Worker: run the engine's training in the engine process, then write the command's files.

    With ``preview_z``, the live-preview events carry that slice (moved with the viewer: see
    ``TrainWidget._on_step``) segmented with the current weights, and its uncertainty while
    ``preview_uncertainty`` is on (switched with ``TrainWidget._on_preview_uncertainty``).
    ``voxel_size`` (of the image) goes into the model's sidecar, the voxel size trained on.
    """
    request = TrainRequest(image.data, targets, class_map, config, Path(out_path), init_model, preview_z,
                           preview_uncertainty, voxel_size)
    summary = yield from engine.run(request, cancel=cancel)
    images_file = image_file(image, folder)
    # Dense labels are written with their original values; sparse ones with 0 = not annotated.
    masks_file, note = labels_file(labels, folder, None if config.sparse else targets)
    return TrainOutcome(summary, images_file, masks_file, note)


class TrainWidget(SandsegWidget):
    """Train a UNet on an image layer and a (dense or painted) Labels layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        from ..config import MONITORS, PRECISIONS, TrainConfig
        from ..model import SUPPORTED_BACKBONES

        defaults = TrainConfig.default()
        self._run = 0
        self._busy = False
        self._device_job: Job | None = None
        self.image_picker = LayerPicker(napari_viewer, Image)
        self.voxel_size = VoxelSizeField(fallback="none recorded")
        self.voxel_size.setToolTip(self.voxel_size.toolTip() + "; recorded in the model as the voxel size trained on")
        self.image_picker.currentTextChanged.connect(lambda *_: self.voxel_size.follow(self.image_picker.layer()))
        self.voxel_size.follow(self.image_picker.layer())
        self.labels_picker = LayerPicker(
            napari_viewer, Labels, prefer=lambda n: any(w in n.lower() for w in ("mask", "truth", "label"))
        )
        self.backbone = QComboBox()
        self.backbone.addItems(list(SUPPORTED_BACKBONES))
        self.backbone.setCurrentText(defaults.backbone)
        self.epochs = _spin(1, 10_000, defaults.epochs)
        self.batch_size = _spin(1, 1024, defaults.batch_size)
        self.patience = _spin(0, 1000, defaults.patience)
        self.patience.setToolTip("stop after this many epochs without a better validation figure (0 = never)")
        self.monitor = QComboBox()  # shows plain labels; the item data is the internal name
        for name in MONITORS:
            self.monitor.addItem(metric_label(name), name)
        self.monitor.setCurrentIndex(self.monitor.findData(defaults.monitor))
        self.monitor.setToolTip("validation figure that picks the kept (best) epoch and drives early stopping")
        self.precision = _combo(PRECISIONS, defaults.precision)
        self.precision.setToolTip(
            "auto: bfloat16 on CPUs that compute it natively (faster), else float32; the saved model is float32"
        )
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.01, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(defaults.val_fraction)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(6)
        self.learning_rate.setRange(1e-6, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setValue(defaults.learning_rate)
        self.augment = QCheckBox("augmentation (flips, 90° rotations)")
        self.augment.setChecked(defaults.augment)
        self.sparse = QCheckBox(f"{SPARSE_LABEL} (unpainted = 0 is ignored)")
        self.sparse.setChecked(defaults.sparse)
        self.sparse_reason = QLabel("")  # why the box was ticked for the user (an annotation layer)
        self.sparse_reason.setWordWrap(True)
        self.sparse_reason.setVisible(False)
        self._sparse_before: bool | None = None  # the user's own choice while an annotation layer is picked
        self.annotation = AnnotationPanel(napari_viewer, self.image_picker, self.labels_picker)

        form = QFormLayout()
        form.addRow("Image", self.image_picker)
        form.addRow("Labels", self.labels_picker)
        form.addRow("Voxel size", self.voxel_size)
        form.addRow("Backbone", self.backbone)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Patience", self.patience)
        form.addRow("Validation fraction", self.val_fraction)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow(self.augment)
        form.addRow(self.sparse)
        form.addRow(self.sparse_reason)
        advanced = QHBoxLayout()  # settings most users leave at the project recipe's values
        advanced.addWidget(QLabel("best epoch by"))
        advanced.addWidget(self.monitor)
        advanced.addWidget(QLabel("precision"))
        advanced.addWidget(self.precision)
        form.addRow("Advanced", advanced)

        self.train_button, self.cancel_button, buttons = self.run_cancel_row("Train")
        self.cancel_button.setText("Stop and keep")
        self.cancel_button.setToolTip("stop at the next batch and keep the best weights so far")
        self._preview: tuple[str, tuple[int, ...], ClassMap] | None = None  # image name, shape, classes
        napari_viewer.dims.events.current_step.connect(self._on_step)
        self.preview_uncertainty = QCheckBox("preview uncertainty too")
        self.preview_uncertainty.setToolTip("show where the model in training is unsure, beside the live preview")
        self.preview_uncertainty.toggled.connect(self._on_preview_uncertainty)
        self.epoch_bar = QProgressBar()
        self.epoch_bar.setFormat("epoch %v / %m")
        self.batch_bar = QProgressBar()
        self.batch_bar.setFormat("batch %v / %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LinePlot(f"loss and {metric_label('val_mean_iou')}", "epoch", "loss / IoU")
        self.device = QLabel("Device: detected when first shown")
        self.model_label = QLabel("Model: none")
        self.model_label.setWordWrap(True)
        self.save_button = QPushButton("Save model...")
        self.save_button.clicked.connect(self.save_model)
        self.export_button = QPushButton("Export for bioimage.io...")
        self.export_button.setToolTip("write the model as a bioimage.io package (.zip) for ilastik, "
                                      "deepImageJ, QuPath; checked with bioimageio.core")
        self.export_button.clicked.connect(self.export_package)
        self.load_button = QPushButton("Load model...")
        self.load_button.clicked.connect(self.load_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.save_button)
        model_row.addWidget(self.export_button)
        model_row.addWidget(self.load_button)
        self.command = CommandBox()

        layout = self.layout()
        layout.addWidget(self.annotation)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.preview_uncertainty)
        bars = QHBoxLayout()  # side by side: the room goes to the plot and the command line
        bars.addWidget(self.epoch_bar)
        bars.addWidget(self.batch_bar)
        layout.addLayout(bars)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addWidget(self.device)
        layout.addWidget(self.model_label)
        layout.addLayout(model_row)
        layout.addWidget(self.command)
        self.state.model_changed.connect(self._show_model)
        self.labels_picker.currentTextChanged.connect(self._follow_annotation)
        self._follow_annotation()
        self._show_model()
        self._reset_curves()

    # ------------------------------------------------------------------ annotation layers

    def _follow_annotation(self, *_: Any) -> None:
        """Train only on painted pixels when the picked labels are an annotation layer, and say why.

        The user's own setting comes back when a labels layer of another kind is picked.
        """
        layer = self.labels_picker.layer()
        if is_annotation(layer):
            if self._sparse_before is None:
                self._sparse_before = self.sparse.isChecked()
            self.sparse.setChecked(True)
            self.sparse_reason.setText("ticked: the labels are an annotation layer (unpainted pixels have no class)")
            self.sparse_reason.setVisible(True)
        elif self._sparse_before is not None:
            self.sparse.setChecked(self._sparse_before)
            self._sparse_before = None
            self.sparse_reason.setVisible(False)

    # ------------------------------------------------------------------ device

    def showEvent(self, event: Any) -> None:  # noqa: D102
        super().showEvent(event)
        self.detect_device()

    def detect_device(self) -> None:
        """Find the device on a worker (importing TensorFlow takes seconds), once."""
        if self._device_job is not None:
            return
        self.device.setText("Device: detecting...")
        self._device_job = Job(
            device_job, self.state.engine, on_return=lambda text: self.device.setText(f"Device: {text}")
        ).start()

    # ------------------------------------------------------------------ training

    def config(self) -> Any:
        """The :class:`TrainConfig` the controls describe."""
        from ..config import TrainConfig

        return TrainConfig.default(
            backbone=self.backbone.currentText(), epochs=self.epochs.value(), batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value(), patience=self.patience.value(),
            val_fraction=round(self.val_fraction.value(), 4),
            # The widget trains on everything the user labelled; test the model with Evaluate.
            test_fraction=0.0, augment=self.augment.isChecked(), sparse=self.sparse.isChecked(),
            monitor=self.monitor.currentData(), precision=self.precision.currentText(),
        )

    def start(self) -> None:
        """Check the inputs and start training in a worker."""
        image, labels = self.image_picker.layer(), self.labels_picker.layer()
        if image is None or labels is None:
            show_error("Train needs an image layer and a labels layer")
            return
        if tuple(image.data.shape) != tuple(labels.data.shape):  # found now, not after the engine starts
            show_error(
                f"image layer '{image.name}' has shape {tuple(image.data.shape)} but labels layer "
                f"'{labels.name}' has shape {tuple(labels.data.shape)}; pick an image and labels of the same "
                "(Z, Y, X) shape"
            )
            return
        try:
            config = self.config()
            config.validate()
            self.voxel_size.follow(image)  # its scale may have changed since it was picked
            voxel_size = self.voxel_size.value()
            if voxel_size is not None and voxel_size[1] == "px":
                voxel_size = None  # pixels: no voxel size to record
            class_map = class_map_from_metadata(labels.metadata) or default_class_map(labels.data)
            layer_values = np.asarray(labels.data)
            targets = layer_values if config.sparse else dense_ids(layer_values, labels.name, SPARSE_HINT)
        except SandsegError as exc:
            show_error(str(exc))
            return
        self._run += 1
        out_path = self.state.ensure_folder() / f"model-{self._run}.keras"
        image_snap = snapshot_layer(image, self.state)
        labels_snap = snapshot_layer(labels, self.state, class_map)
        self._pending = (image_snap, labels_snap, targets, class_map, config)
        self._cut_short: int | None = None
        self._reset_curves()
        self.status.setText(f"starting: {config.backbone}, up to {config.epochs} epochs ...")
        # Live preview of the slice in view (3D stacks): it follows the viewer while training.
        preview_z = self._current_slice() if image.ndim == 3 else None
        self._preview = None if preview_z is None else (image.name, tuple(image.data.shape), class_map)
        self.run_job(
            train_job, self.state.engine, image_snap, labels_snap, targets, class_map, config, out_path,
            self.state.folder, None, on_yield=self._on_event, on_return=self._on_trained, preview_z=preview_z,
            preview_uncertainty=self.preview_uncertainty.isChecked(), voxel_size=voxel_size,
        )

    def _current_slice(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def _on_step(self, event: Any = None) -> None:
        """The user moved to another slice: preview that one from the next epoch on."""
        if self._preview is not None and self.job is not None and self.job.running:
            self.state.engine.set_control(PREVIEW_Z, self._current_slice())

    def _on_preview_uncertainty(self, on: bool) -> None:
        """Switched during a run: the next previews carry the uncertainty (or stop carrying it)."""
        if self._preview is not None and self.job is not None and self.job.running:
            self.state.engine.set_control(PREVIEW_UNCERTAINTY, bool(on))

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self._busy = busy
        for w in (self.train_button, self.load_button):
            w.setEnabled(not busy)
        for w in (self.save_button, self.export_button):
            w.setEnabled(not busy and self.state.model is not None)
        self.cancel_button.setEnabled(busy)

    def _reset_curves(self) -> None:
        self._batch_x: list[float] = []
        self._batch_loss: list[float] = []
        self._epoch_x: list[float] = []
        self._epoch_loss: list[float] = []
        self._epoch_val: list[float] = []
        self._epoch_iou: list[float] = []
        self._change_x: list[float] = []
        self._change: list[float] = []
        self._last_preview: tuple[int, np.ndarray] | None = None  # (z, class ids)
        self._preview_note = ""
        self.plot.clear()

    def _on_event(self, ev: Any) -> None:
        """Main thread: one TrainEvent -> progress bars, curves, status.

        Only ``epoch`` events are plotted as epochs: an epoch a cancel cut short comes as a
        ``stopped`` event, and its figures do not count.
        """
        if ev.kind == "start":
            self.epoch_bar.setRange(0, ev.epochs)
            self.epoch_bar.setValue(0)
            self.batch_bar.setRange(0, max(ev.batches, 1))
            self.batch_bar.setValue(0)
            self.show_progress(plain_metric_names(ev.message))
        elif ev.kind == "batch":
            self.batch_bar.setValue(ev.batch + 1)
            self.epoch_bar.setValue(ev.epoch)
            if ev.loss is not None:
                self._batch_x.append(ev.epoch + (ev.batch + 1) / max(ev.batches, 1))
                self._batch_loss.append(ev.loss)
                self.plot.set_series(f"{metric_label('loss')} (per batch)", self._batch_x, self._batch_loss, "#9db4c8")
            if ev.preview is not None:  # a preview within a long epoch
                self._show_preview(ev, ev.epoch + (ev.batch + 1) / max(ev.batches, 1))
                self.show_progress(f"{ev.message}: {self._preview_note}")
        elif ev.kind == "epoch":
            self.epoch_bar.setValue(ev.epoch + 1)
            self._epoch_x.append(ev.epoch + 1)
            self._epoch_loss.append(ev.loss if ev.loss is not None else np.nan)
            self._epoch_val.append(ev.val_loss if ev.val_loss is not None else np.nan)
            self.plot.set_series(metric_label("loss"), self._epoch_x, self._epoch_loss, "#3c9be8", points=True)
            self.plot.set_series(metric_label("val_loss"), self._epoch_x, self._epoch_val, "#f08c28", points=True)
            iou = ev.logs.get("val_mean_iou")
            self._epoch_iou.append(iou if iou is not None else np.nan)
            if not np.all(np.isnan(self._epoch_iou)):
                self.plot.set_series(self._iou_label(), self._epoch_x, self._epoch_iou, "#3aa655", points=True)
            if ev.preview is not None:
                self._show_preview(ev, ev.epoch + 1)
            text = epoch_text(ev)
            if self._sparse_run():
                text += f" ({PAINTED_ONLY})"
            if ev.preview is not None:
                text += f"; {self._preview_note}"
            self.show_progress(text)
        elif ev.kind == "stopped":
            self._cut_short = ev.epoch
            self.set_status(f"stopping: epoch {ev.epoch + 1} of {ev.epochs} was cut short (not used); "
                            "saving the kept weights ...")
        elif ev.kind == "done":
            self.show_progress(plain_metric_names(ev.message))

    def _show_preview(self, ev: Any, x: float) -> None:
        """Show a live preview, and plot how much of the slice changed since the last one.

        The change needs no labels and looks at every pixel of the slice, so with painted
        labels it says more about the segmentation than the validation IoU on the strokes: the
        segmentation is still moving while it is high, and more of the same training will not
        change what the user sees once it stays near 0.
        """
        if self._preview is None:
            return
        name, shape, class_map = self._preview
        show_preview(self.viewer, name, class_map, ev.preview_z, ev.preview, shape, ev.preview_uncertainty)
        before = self._last_preview
        self._last_preview = (ev.preview_z, np.asarray(ev.preview))
        if before is None or before[0] != ev.preview_z:
            self._preview_note = f"preview of slice {ev.preview_z} shown"
            return
        share = changed_share(before[1], ev.preview)
        self._change_x.append(x)
        self._change.append(share)
        self.plot.set_series(PREVIEW_CHANGE, self._change_x, self._change, "#b05cc8", points=True)
        self._preview_note = f"preview of slice {ev.preview_z}: {100 * share:.1f} % of it changed since the last one"

    def _sparse_run(self) -> bool:
        """Whether the running (or last) training learnt from painted pixels only."""
        pending = getattr(self, "_pending", None)
        return bool(pending and pending[4].sparse)

    def _iou_label(self) -> str:
        """The validation IoU's label: with painted labels it scores the strokes, and says so."""
        label = metric_label("val_mean_iou")
        return f"{label} ({PAINTED_ONLY})" if self._sparse_run() else label

    def _on_trained(self, outcome: TrainOutcome) -> None:
        """Main thread: make the trained model current and show the command line."""
        result = outcome.result
        image_snap, labels_snap, targets, class_map, config = self._pending
        self.state.set_model(result.info, result.path)
        # Targets are kept in the Labels-layer convention (0 = unpainted) for fine-tuning.
        kept = targets if config.sparse else labels_layer_data(targets)
        self.state.training = TrainingData(
            image_snap.data, kept, class_map, config, image_snap.name, labels_snap.name,
            outcome.images_file, outcome.masks_file,
        )
        # The precision "auto" decided on (stored in the sidecar), so the command repeats the run exactly.
        used = config.replace(precision=result.info.config.get("precision", config.precision))
        self.command.set_command(train_command(used, outcome.images_file, outcome.masks_file, result.path,
                                               voxel_size=result.info.voxel_size), outcome.note)
        text = training_result_text(result, config.monitor, config.epochs, self._cut_short)
        self.status.setText(f"{text}. Model: {result.path}")
        show_info(f"{text}. Model written to {result.path}")

    # ------------------------------------------------------------------ model files

    def _show_model(self) -> None:
        m = self.state.model
        self.model_label.setText(f"Model: {m.label} ({m.info.backbone}, {m.info.n_classes} classes)" if m else "Model: none")
        for w in (self.save_button, self.export_button):
            w.setEnabled(m is not None and not self._busy)

    def save_model(self, path: str | Path | None = None) -> None:
        """Save the current model (asks where when ``path`` is not given)."""
        m = self.state.model
        if m is None:
            show_error("no model to save yet: train or load one first")
            return
        path = path or ask_save_model(self, str(self.state.folder / "model.keras"))
        if not path:
            return
        self.run_job(save_model_job, m.path, Path(path), on_return=self._saved)

    def _saved(self, path: Path) -> None:
        self.state.model.path = Path(path)
        self.state.model.label = Path(path).name
        self._show_model()
        show_info(f"model saved to {path}")

    def export_package(self, target: str | Path | None = None, metadata: Any = None) -> None:
        """Write the current model as a bioimage.io package; the reference checks run in the export's own process.

        Asks for the package's details and where to write it when ``target`` is not given.
        """
        from ..model_package import PackageMetadata

        m = self.state.model
        if m is None:
            show_error("no model to export yet: train or load one first")
            return
        if target is None:
            answer = ask_export_package(self, str(self.state.folder / f"{Path(m.path).stem}.zip"))
            if answer is None:
                return
            target, metadata = answer
        target = Path(target)
        # The package's test tensors come from the image in Train when it was opened from a TIFF
        # (else from the bundled sample).
        source = getattr(getattr(self.image_picker.layer(), "source", None), "path", None)
        images = Path(source) if source and Path(source).suffix.lower() in (".tif", ".tiff") else None
        self.run_job(export_package_job, m.path, target, metadata or PackageMetadata(), images,
                     on_return=lambda _summary: show_info(f"bioimage.io package written to {target}; "
                                                          "it passed bioimageio.core's model test"))

    def load_model(self, path: str | Path | None = None) -> None:
        """Load a model file and make it current (asks which when ``path`` is not given)."""
        path = path or ask_open_model(self, str(self.state.folder))
        if not path:
            return
        self.run_job(load_model_job, self.state.engine, Path(path), on_return=lambda r: self.state.set_model(*r))


def _combo(items: Any, value: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setCurrentText(value)
    return box


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    return box
