"""Correct and fine-tune: paint fixes into the segmentation, fine-tune on them, re-segment.

Edited slices come from the Labels layer's paint events (tracked by the session state, which
also autosaves them). One click fine-tunes the current model on the edited slices plus the
data it was trained on, then segments the image again; the hand-corrected slices are put back
over the new prediction, so no correction is ever lost.
"""

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
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from .._layers import class_map_from_metadata
from ..autosave import autosave_dir, find_autosave, load_edits
from ..classmap import ClassMap
from ..io import write_labels, write_volume
from ._files import sparse_mask_problem, write_sparse_mask
from ._common import CommandBox, LayerPicker, SandsegWidget, plain_metric_names
from ._engine import EngineProcess
from ._results import Segmentation, is_segmentation, show_segmentation
from ._segment_widget import predict_slabs
from ._state import TrainingData
from ._train_widget import epoch_text, train_command, training_result_text

_USER_ROLE = 256


@dataclass
class FineTuneData:
    """Training stacks for a fine-tune: the original data with the corrected slices merged in."""

    images: np.ndarray
    targets: np.ndarray  # Labels-layer convention: 0 = unpainted, k = class k-1
    n_corrected: int
    n_original: int


def merge_corrections(image: np.ndarray, corrections: np.ndarray, slices: list[int], image_name: str,
                      training: TrainingData | None) -> FineTuneData:
    """Stack the corrected slices with the data the model was trained on.

    When the model was trained on this same image, its targets on the corrected slices are
    replaced by the corrections (never two answers for one slice); otherwise the corrected
    slices are appended to the original training stack when the slice size matches.
    """
    own_images, own_targets = image[slices], corrections[slices]
    if training is None:
        return FineTuneData(own_images, own_targets, len(slices), 0)
    same_image = training.image_name == image_name and training.images.shape == image.shape
    if same_image:
        targets = np.array(training.targets, copy=True)
        targets[slices] = own_targets
        return FineTuneData(training.images, targets, len(slices), training.images.shape[0] - len(slices))
    if training.images.shape[1:] != image.shape[1:]:
        return FineTuneData(own_images, own_targets, len(slices), 0)
    return FineTuneData(
        np.concatenate([training.images, own_images]),
        np.concatenate([training.targets.astype(own_targets.dtype), own_targets]),
        len(slices), training.images.shape[0],
    )


@dataclass
class FineTuneOutcome:
    """Fine-tuned model, the new segmentation, and the files of the command line."""

    result: Any
    segmentation: Segmentation | None
    images_file: Path
    masks_file: Path | None  # None: the --sparse convention cannot express these corrections
    note: str = ""  # why there is no command, when masks_file is None


def finetune_job(engine: EngineProcess, data: FineTuneData, class_map: ClassMap, config: Any, init_model: Path,
                 out_path: Path, image: np.ndarray, image_name: str, batch_size: int, folder: Path,
                 cancel: threading.Event) -> Generator[Any, None, FineTuneOutcome]:
    """Worker: fine-tune from ``init_model`` on ``data``, then segment the whole image again."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = out_path.stem
    # The exact stacks trained on, so the command line reproduces this fine-tune.
    images_file = write_volume(folder / f"{stem}_images.tif", data.images, overwrite=True)
    masks_file: Path | None = folder / f"{stem}_masks.tif"
    targets = data.targets
    note = ""
    if not config.sparse:  # everything labelled: train densely and write the original class values
        targets = targets.astype(np.int64) - 1
        write_labels(masks_file, targets, class_map, overwrite=True, compression="zlib")
    elif (problem := sparse_mask_problem(class_map)) is None:
        # With --init-model the CLI maps the painted values onto the model's classes, so the
        # note about unpainted classes does not apply here.
        write_sparse_mask(masks_file, targets, class_map)
    else:
        masks_file, note = None, problem
    summary = yield from engine.run("train", data.images, targets, class_map, config, out_path, init_model,
                                    cancel=cancel)
    if summary.cancelled:
        return FineTuneOutcome(summary, None, images_file, masks_file, note)
    labels, _, _ = yield from predict_slabs(engine, summary.path, class_map.n_classes, image, batch_size=batch_size,
                                            probabilities=False, uncertainty=False, cancel=cancel)
    seg = Segmentation(image_name, class_map, labels, 0, full_shape=tuple(image.shape))
    return FineTuneOutcome(summary, seg, images_file, masks_file, note)


class CorrectWidget(SandsegWidget):
    """Track hand corrections, fine-tune on them in one click, re-segment; restore autosaves."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._runs = 0
        self.image_picker = LayerPicker(napari_viewer, Image, prefer=lambda n: not n.endswith("uncertainty") and " P(" not in n)
        self.labels_picker = LayerPicker(napari_viewer, Labels, prefer=is_segmentation, follow=True)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(3)
        self.include_original = QCheckBox("also train on the original training data")
        self.include_original.setChecked(True)
        form = QFormLayout()
        form.addRow("Image", self.image_picker)
        form.addRow("Corrections in", self.labels_picker)
        form.addRow("Fine-tune epochs", self.epochs)
        form.addRow(self.include_original)
        self.edited_label = QLabel()
        self.edited = QListWidget()
        self.edited.setMaximumHeight(100)
        self.edited.itemClicked.connect(lambda item: self.viewer.dims.set_current_step(0, int(item.data(_USER_ROLE))))
        self.run_button, self.cancel_button, buttons = self.run_cancel_row(
            "Fine-tune on edited slices and re-segment", run_stretch=1
        )
        self.progress = QProgressBar()
        self.status = QLabel("Paint corrections into the segmentation (Labels layer, paint mode); "
                             "edited slices are listed here and autosaved.")
        self.status.setWordWrap(True)
        self.autosave_label = QLabel()
        self.autosave_label.setWordWrap(True)
        self.restore_button = QPushButton("Restore autosaved edits")
        self.restore_button.clicked.connect(self.restore)
        self.command = CommandBox()
        layout = self.layout()
        layout.addLayout(form)
        layout.addWidget(self.edited_label)
        layout.addWidget(self.edited)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.autosave_label)
        layout.addWidget(self.restore_button)
        layout.addWidget(self.command)
        layout.addStretch(1)
        self.state.edits_changed.connect(lambda _name: self.refresh_edits())
        self.labels_picker.currentTextChanged.connect(lambda _t: self.refresh_edits())
        self.refresh_edits()

    # ------------------------------------------------------------------ edits

    def refresh_edits(self) -> None:
        """Show the edited slices of the picked layer and where they are autosaved."""
        layer = self.labels_picker.layer()
        zs = self.state.edited_slices(layer) if layer is not None else []
        self.edited_label.setText(f"Edited slices: {len(zs)}" + (" (click to go there)" if zs else ""))
        self.edited.clear()
        for z in zs:
            item = QListWidgetItem(f"slice {z}")
            item.setData(_USER_ROLE, z)
            self.edited.addItem(item)
        self.autosave_label.setText(f"Autosave: {autosave_dir()}")

    def restore(self) -> int:
        """Put the autosaved edits of the picked layer back (undoable, tracked, re-autosaved).

        Returns
        -------
        int
            Number of slices restored.
        """
        layer = self.labels_picker.layer()
        if layer is None:
            show_error("pick the Labels layer to restore edits into")
            return 0
        record = find_autosave(autosave_dir(), layer.name, tuple(layer.data.shape))
        if record is None:
            show_info(f"no autosaved edits for a {tuple(layer.data.shape)} layer in {autosave_dir()}")
            return 0
        slices, record = load_edits(record.path)
        for z, values in slices.items():
            changed = np.nonzero(np.asarray(layer.data[z]) != values)
            if changed[0].size:
                index = (np.full(changed[0].size, z),) + changed
                # data_setitem records undo history and emits `paint`, so the slice is tracked.
                layer.data_setitem(index, values[changed])
        self.state.mark_edited(layer, set(slices))
        self.status.setText(f"Restored {len(slices)} edited slice(s) from {record.path.name}")
        return len(slices)

    # ------------------------------------------------------------------ fine-tune

    def start(self) -> None:
        """Fine-tune the current model on the edited slices, then re-segment."""
        m, image, layer = self.state.model, self.image_picker.layer(), self.labels_picker.layer()
        if m is None or image is None or layer is None:
            show_error("Fine-tuning needs a model (train or load one), an image layer and the corrected Labels layer")
            return
        zs = self.state.edited_slices(layer)
        if not zs:
            show_error(f"no edited slices in '{layer.name}': paint corrections first")
            return
        if not m.path.exists():
            show_error(f"the current model file {m.path} is gone; load or train a model again")
            return
        if tuple(image.data.shape) != tuple(layer.data.shape):
            show_error(f"image '{image.name}' {image.data.shape} and labels '{layer.name}' {layer.data.shape} differ in shape")
            return
        class_map = class_map_from_metadata(layer.metadata) or m.info.class_map
        image_data, corrections = np.array(image.data), np.array(layer.data)
        training = self.state.training if self.include_original.isChecked() else None
        data = merge_corrections(image_data, corrections, zs, image.name, training)
        self._keep = {z: corrections[z].copy() for z in zs}
        # Only painted pixels count, unless every slice is fully labelled (then it is plain training).
        sparse = bool(np.any(data.targets == 0))
        config = self._config(m, training).replace(epochs=self.epochs.value(), sparse=sparse, test_fraction=0.0)
        self._runs += 1
        out_path = self.state.ensure_folder() / f"{m.path.stem}-finetuned-{self._runs}.keras"
        self._pending = (config, m.path, image.name, data)
        self._cut_short: int | None = None
        self.progress.setRange(0, 0)
        self.status.setText(f"fine-tuning on {data.n_corrected} corrected + {data.n_original} original slices ...")
        self.run_job(
            finetune_job, self.state.engine, data, class_map, config, m.path, out_path, image_data, image.name, 8, self.state.folder,
            on_yield=self._on_progress, on_return=self._done,
        )

    @staticmethod
    def _config(m: Any, training: TrainingData | None) -> Any:
        from ..config import TrainConfig

        if training is not None:
            return training.config
        return TrainConfig.from_dict(m.info.config, strict=False)

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy)
        self.restore_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _on_progress(self, item: Any) -> None:
        if isinstance(item, tuple):  # (done, total) slices of the re-segmentation
            self.progress.setRange(0, item[1])
            self.progress.setValue(item[0])
            self.status.setText(f"re-segmenting: {item[0]} / {item[1]} slices")
        elif getattr(item, "kind", "") == "batch":
            total = max(item.epochs * item.batches, 1)
            self.progress.setRange(0, total)
            self.progress.setValue(item.epoch * item.batches + item.batch + 1)
        elif getattr(item, "kind", "") == "epoch":
            self.show_progress(f"fine-tuning: {epoch_text(item)}")
        elif getattr(item, "kind", "") == "stopped":
            self._cut_short = item.epoch
        elif getattr(item, "kind", "") in ("start", "done") and item.message:
            self.show_progress(plain_metric_names(item.message))

    def _done(self, outcome: FineTuneOutcome) -> None:
        config, init_path, image_name, data = self._pending
        result = outcome.result
        self.state.set_model(result.info, result.path)
        if outcome.masks_file is None:
            self.command.set_unavailable(outcome.note)
        else:
            self.command.set_command(train_command(config, outcome.images_file, outcome.masks_file, result.path,
                                                   init_path), outcome.note)
        if outcome.segmentation is None:
            ended = training_result_text(result, config.monitor, config.epochs, self._cut_short)
            self.status.setText(f"Fine-tuning {ended[0].lower()}{ended[1:]}; model {result.path}. Not re-segmented.")
            return
        show_segmentation(self.viewer, outcome.segmentation, self.state, keep=self._keep)
        self.status.setText(
            f"Fine-tuned on {data.n_corrected} corrected + {data.n_original} original slices -> {result.path.name}; "
            f"'{image_name}' re-segmented (your corrected slices kept as painted)."
        )
        self.refresh_edits()
