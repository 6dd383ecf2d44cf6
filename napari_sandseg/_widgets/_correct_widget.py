"""Correct and fine-tune: paint fixes into the segmentation, fine-tune on them, re-segment.

The session state records which pixels were painted (from the Labels layer's paint events)
and autosaves them. One click fine-tunes the current model on what the user said: the painted
pixels of every edited slice, over the ground truth the model was trained with (kept, and
replayed on the other training slices), never the model's own prediction elsewhere on an
edited slice. The slice in view is re-segmented and shown first; the rest of the stack follows
in the same background job. Painted pixels are put back over every new prediction, so no
correction is ever lost, while the rest of an edited slice shows what the model learnt.
"""

from __future__ import annotations

import threading
import time
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

from .._napari.layers import class_map_from_metadata, labels_layer_data
from ..autosave import autosave_dir, find_autosave, load_edits, load_painted
from ..classmap import ClassMap
from ..command_lines import train_command
from ..data import split_counts, split_indices
from ..engine_process import EngineProcess
from ..engine_requests import SliceProgress, TrainRequest
from ..errors import Cancelled, OutputError
from ..io import write_labels, write_volume
from ._files import sparse_mask_problem, write_sparse_mask
from ._jobs import predict_slabs
from ._common import CommandBox, LayerPicker, SandsegWidget, plain_metric_names
from ._results import Segmentation, is_segmentation, segmentation_name, show_segmentation
from ._state import TrainingData
from ._texts import epoch_text, training_result_text

_USER_ROLE = 256

#: Default fine-tune epochs, and the most random crops an epoch draws: one click must show the
#: re-segmented 1024 x 996 slice within a minute on 2 CPU cores. Most of that minute is fixed
#: engine cost (loading the model, tracing the training step: 15-30 s, two model saves, the
#: slice's prediction); one epoch of 128 crops (8 steps of 16) adds 7-12 s, each further epoch
#: as much again. Measured on 2 shared, loaded cores (resnet34, 8 x 1024 x 996): 44 s to the
#: slice with one epoch, 69 s with two.
FINETUNE_EPOCHS = 1
FINETUNE_CROPS = 128
#: A fine-tune learns at this share of the model's own learning rate. Chosen on validation
#: slices 3, 6, 7 of the real stack (never trained on, not the test slices) by
#: benchmarks/finetune_lr.py: from a scribble model, correcting slice 2's 10 worst regions, the
#: model's own rate 1e-3 fixed 67 % of the corrected regions but cut validation mean IoU
#: 0.705 -> 0.651; a tenth fixed 60 % and raised it to 0.774 (benchmarks/README.md).
FINETUNE_LR_FACTOR = 0.1


@dataclass
class FineTuneData:
    """The stacks a fine-tune trains on.

    Attributes
    ----------
    images : ndarray (N, Y, X)
    targets : ndarray (N, Y, X)
        Labels-layer convention: 0 = not annotated (ignored by the loss), k = class k-1.
    corrected : list of int
        Stack indices of the corrected slices.
    n_original : int
        Annotated slices of the original training data trained on again, uncorrected.
    note : str
        Why the original training data is not part of it, when it is not.
    """

    images: np.ndarray
    targets: np.ndarray
    corrected: list[int]
    n_original: int
    note: str = ""

    @property
    def n_corrected(self) -> int:
        """Number of corrected slices."""
        return len(self.corrected)


def merge_corrections(image: np.ndarray, layer_values: Any, painted: dict[int, np.ndarray], image_name: str,
                      training: TrainingData | None) -> FineTuneData:
    """Sparse fine-tuning targets: what the user painted, over the ground truth the model already had.

    Parameters
    ----------
    image : ndarray (Z, Y, X)
        The image the corrections were painted on.
    layer_values : array-like (Z, Y, X)
        The corrected Labels layer's data (0 = unpainted, k = class k-1); only the edited
        slices are read.
    painted : dict
        ``{z: (Y, X) bool}``: the pixels the user painted (:meth:`SessionState.painted`).
    image_name : str
        Name of the image layer, to recognise the image the model was trained on.
    training : TrainingData, optional
        What the current model was trained on (None: fine-tune on the corrections alone).

    Returns
    -------
    FineTuneData
        On the image the model was trained on: its training targets, with the painted pixels of
        each edited slice set to the layer's values (the user's word wins; every other pixel
        keeps its ground truth or stays unannotated). On another image: the original training
        stack followed by the edited slices, annotated on their painted pixels only. Never the
        layer's unpainted pixels, which are the model's own prediction.
    """
    zs = sorted(painted)
    said = {z: np.asarray(layer_values[z]) for z in zs}
    dtype = np.result_type(*(v.dtype for v in said.values()), *(() if training is None else (training.targets.dtype,)))

    def corrected(z: int, base: np.ndarray) -> np.ndarray:
        out = np.array(base, dtype=dtype)
        out[painted[z]] = said[z][painted[z]]
        return out

    own = np.stack([corrected(z, np.zeros(image.shape[1:], dtype)) for z in zs])
    if training is None:
        return FineTuneData(image[zs], own, list(range(len(zs))), 0)
    annotated = set(_annotated(training.targets).tolist())
    if training.image_name == image_name and training.images.shape == image.shape:
        targets = training.targets.astype(dtype, copy=True)
        for z in zs:
            targets[z] = corrected(z, targets[z])
        return FineTuneData(training.images, targets, zs, len(annotated - set(zs)))
    if training.images.shape[1:] != image.shape[1:]:
        note = (f"the original training data ({training.image_name}, {training.images.shape[1]} x "
                f"{training.images.shape[2]} slices) cannot be stacked with these {image.shape[1]} x "
                f"{image.shape[2]} slices: fine-tuning on the corrections alone")
        return FineTuneData(image[zs], own, list(range(len(zs))), 0, note)
    n = training.images.shape[0]
    return FineTuneData(
        np.concatenate([training.images, image[zs]]), np.concatenate([training.targets.astype(dtype), own]),
        list(range(n, n + len(zs))), len(annotated),
    )


def _annotated(targets: np.ndarray) -> np.ndarray:
    """Indices of the slices with at least one annotated pixel (Labels convention: value > 0)."""
    return np.flatnonzero(np.asarray(targets).reshape(len(targets), -1).any(axis=1))


def keep_corrections_in_training(data: FineTuneData, config: Any) -> FineTuneData:
    """Reorder the stack so that the split validates on no corrected slice, where it can.

    Training validates on a seeded split of the annotated slices
    (:func:`napari_sandseg.data.split_indices`, as :func:`napari_sandseg.train.train` calls
    it): a corrected slice there would be measured, never learnt from. Swapping it with an
    uncorrected annotated slice of the training part keeps the split (it depends only on the
    number of annotated slices) and moves the correction into training.
    """
    annotated = _annotated(data.targets)
    n_train, n_val, _ = split_counts(len(annotated), config.val_fraction, config.test_fraction)
    if n_train < 1 or n_val < 1:
        return data  # training refuses this split and says why
    train_pos, val_pos, _ = split_indices(len(annotated), config.val_fraction, config.test_fraction, config.seed)
    corrected = set(data.corrected)
    spare = [int(s) for s in annotated[train_pos] if s not in corrected]
    order = np.arange(len(data.images))
    for z in (int(s) for s in annotated[val_pos] if s in corrected):
        if not spare:
            break  # every training slice is corrected too: one of them must validate
        other = spare.pop()
        order[z], order[other] = other, z
    if np.array_equal(order, np.arange(len(order))):
        return data
    where = {int(old): new for new, old in enumerate(order)}
    return FineTuneData(data.images[order], data.targets[order], sorted(where[z] for z in data.corrected),
                        data.n_original, data.note)


def finetune_config(base: Any, epochs: int, sparse: bool) -> Any:
    """The settings of a fine-tune: the model's own recipe, made short and gentle.

    :data:`FINETUNE_LR_FACTOR` of its learning rate (the full rate unlearns what the model
    knew while it learns the corrections), no warm-up (it would spend a short run at a tenth
    of the rate), at most :data:`FINETUNE_CROPS` random crops per epoch, no held-out test
    slices (Evaluate tests).
    """
    crops = None if base.crop_size is None else min(base.crops_per_epoch or FINETUNE_CROPS, FINETUNE_CROPS)
    return base.replace(epochs=epochs, sparse=sparse, test_fraction=0.0, warmup_epochs=0, crops_per_epoch=crops,
                        learning_rate=base.learning_rate * FINETUNE_LR_FACTOR)


@dataclass
class SliceReady:
    """Yielded by :func:`finetune_job` once the slice in view is re-segmented, to be shown at once."""

    z: int
    labels: np.ndarray  # (Y, X) class ids


@dataclass
class FineTuneOutcome:
    """Fine-tuned model, the new segmentation, and the files of the command line."""

    result: Any
    segmentation: Segmentation | None  # None: cancelled before the whole stack was re-segmented
    images_file: Path | None
    masks_file: Path | None  # None: the --sparse convention cannot express these corrections
    note: str = ""  # why there is no command, when masks_file is None


def finetune_job(engine: EngineProcess, data: FineTuneData, class_map: ClassMap, config: Any, init_model: Path,
                 out_path: Path, image: np.ndarray, image_name: str, z_view: int, batch_size: int, folder: Path,
                 cancel: threading.Event) -> Generator[Any, None, FineTuneOutcome]:
    """Worker: fine-tune from ``init_model``, then re-segment slice ``z_view`` and the stack (see :func:`resegment`)."""
    # Engine targets: Labels values when sparse, class ids when every pixel is annotated.
    targets = data.targets if config.sparse else data.targets.astype(np.int64) - 1
    request = TrainRequest(data.images, targets, class_map, config, Path(out_path), Path(init_model))
    summary = yield from engine.run(request, cancel=cancel)
    seg = None
    if not summary.cancelled:
        try:
            seg = yield from resegment(engine, summary.path, class_map, image, image_name, z_view, batch_size, cancel)
        except Cancelled:
            pass  # the fine-tuned model stands; only the re-segmentation was cut short
    # Written last, so they never delay what the user waits for: the exact stacks trained on.
    return FineTuneOutcome(summary, seg, *_command_files(data, targets, class_map, config, folder, out_path.stem))


def resegment(engine: EngineProcess, model_path: Path, class_map: ClassMap, image: np.ndarray, image_name: str,
              z_view: int, batch_size: int, cancel: threading.Event) -> Generator[Any, None, Segmentation]:
    """Worker: segment slice ``z_view`` first and yield it as a :class:`SliceReady`, then the whole stack.

    Also yields a status line before the slice and :class:`SliceProgress` of the stack.
    """
    yield f"re-segmenting slice {z_view} ..."
    labels, _, _ = _without_progress(predict_slabs(
        engine, model_path, class_map.n_classes, image[z_view:z_view + 1], batch_size=1, probabilities=False,
        uncertainty=False, cancel=cancel))
    yield SliceReady(z_view, labels[0])
    labels, _, _ = yield from predict_slabs(engine, model_path, class_map.n_classes, image, batch_size=batch_size,
                                            probabilities=False, uncertainty=False, cancel=cancel)
    return Segmentation(image_name, class_map, labels, 0, full_shape=tuple(image.shape))


def _without_progress(gen: Generator[Any, None, Any]) -> Any:
    """Run a worker generator to its end, dropping what it yields; returns its value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _command_files(data: FineTuneData, targets: np.ndarray, class_map: ClassMap, config: Any, folder: Path,
                   stem: str) -> tuple[Path | None, Path | None, str]:
    """Write the stacks of the fine-tune for its ``sandseg train`` command: ``(images, masks, note)``.

    A file that cannot be written costs the command line, never the fine-tuned model.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        images_file = write_volume(folder / f"{stem}_images.tif", data.images, overwrite=True)
        masks_file = folder / f"{stem}_masks.tif"
        if not config.sparse:  # everything annotated: the original class values, trained densely
            write_labels(masks_file, targets, class_map, overwrite=True, compression="zlib")
        elif (problem := sparse_mask_problem(class_map)) is None:
            # With --init-model the CLI maps the painted values onto the model's classes, so the
            # note about unpainted classes does not apply here.
            write_sparse_mask(masks_file, data.targets, class_map)
        else:
            return images_file, None, problem
    except (OSError, OutputError) as exc:
        return None, None, f"no equivalent command: its files could not be written ({exc})"
    return images_file, masks_file, ""


@dataclass
class _Run:
    """What a running fine-tune needs back on the main thread."""

    config: Any
    init_model: Path
    image_name: str
    class_map: ClassMap
    layer: Any  # the Labels layer holding the corrections
    shape: tuple[int, ...]
    data: FineTuneData


class CorrectWidget(SandsegWidget):
    """Track hand corrections, fine-tune on them in one click, re-segment; restore autosaves.

    Attributes
    ----------
    timings : dict
        ``time.perf_counter()`` of the last fine-tune's ``"click"``, ``"slice"`` (the slice in
        view shown re-segmented) and ``"stack"`` (the whole stack shown).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._runs = 0
        self._run: _Run | None = None
        self._cut_short: int | None = None
        self.timings: dict[str, float] = {}
        self.image_picker = LayerPicker(napari_viewer, Image, prefer=lambda n: not n.endswith("uncertainty") and " P(" not in n)
        self.labels_picker = LayerPicker(napari_viewer, Labels, prefer=is_segmentation, follow=True)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(FINETUNE_EPOCHS)
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
            "Fine-tune on painted pixels and re-segment", run_stretch=1
        )
        self.progress = QProgressBar()
        self.status = QLabel("Paint corrections into the segmentation (Labels layer, paint mode); "
                             "edited slices are listed here and autosaved. Fine-tuning learns from the "
                             "pixels you paint; the slice in view is re-segmented first.")
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
        """Show the edited slices of the picked layer (with their painted pixels) and where they are autosaved."""
        layer = self.labels_picker.layer()
        painted = self.state.painted(layer) if layer is not None else {}
        self.edited_label.setText(f"Edited slices: {len(painted)}" + (" (click to go there)" if painted else ""))
        self.edited.clear()
        for z in sorted(painted):
            item = QListWidgetItem(f"slice {z}: {int(np.count_nonzero(painted[z]))} pixels painted")
            item.setData(_USER_ROLE, z)
            self.edited.addItem(item)
        self.autosave_label.setText(f"Autosave: {autosave_dir()}")

    def restore(self) -> int:
        """Put the autosaved edits of the picked layer back (undoable, tracked, re-autosaved).

        Only the painted pixels are put back over what the layer holds now; an autosave written
        before painted pixels were kept restores its whole slices, and the pixels that differ
        from the layer count as painted.

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
        painted = load_painted(record.path)
        for z, values in slices.items():
            where = np.asarray(layer.data[z]) != values
            if painted is not None:
                where &= painted[z]
            changed = np.nonzero(where)
            if changed[0].size:
                index = (np.full(changed[0].size, z),) + changed
                # data_setitem records undo history and emits `paint`, so the pixels are tracked.
                layer.data_setitem(index, values[changed])
        if painted is not None:
            self.state.mark_painted(layer, painted)  # also the painted pixels that held their value already
        self.status.setText(f"Restored {len(slices)} edited slice(s) from {record.path.name}")
        return len(slices)

    # ------------------------------------------------------------------ fine-tune

    def start(self) -> None:
        """Fine-tune the current model on the painted pixels; re-segment the slice in view, then the stack."""
        clicked = time.perf_counter()
        m, image, layer = self.state.model, self.image_picker.layer(), self.labels_picker.layer()
        if m is None or image is None or layer is None:
            show_error("Fine-tuning needs a model (train or load one), an image layer and the corrected Labels layer")
            return
        painted = self.state.painted(layer)
        if not painted:
            show_error(f"no edited slices in '{layer.name}': paint corrections first")
            return
        if not m.path.exists():
            show_error(f"the current model file {m.path} is gone; load or train a model again")
            return
        if tuple(image.data.shape) != tuple(layer.data.shape):
            show_error(f"image '{image.name}' {image.data.shape} and labels '{layer.name}' {layer.data.shape} differ in shape")
            return
        class_map = class_map_from_metadata(layer.metadata) or m.info.class_map
        image_data = np.array(image.data)
        training = self.state.training if self.include_original.isChecked() else None
        data = merge_corrections(image_data, layer.data, painted, image.name, training)
        # Sparse unless every pixel is annotated (then the command line can name the class values).
        sparse = bool(np.any(data.targets == 0))
        config = finetune_config(self._base_config(m, training), self.epochs.value(), sparse)
        data = keep_corrections_in_training(data, config)
        z_view = min(max(int(self.viewer.dims.current_step[0]), 0), image_data.shape[0] - 1)
        self._runs += 1
        out_path = self.state.ensure_folder() / f"{m.path.stem}-finetuned-{self._runs}.keras"
        self._run = _Run(config, m.path, image.name, class_map, layer, tuple(image_data.shape), data)
        self._cut_short = None
        self.timings = {"click": clicked}
        self.progress.setRange(0, 0)
        self.status.setText(f"fine-tuning on the painted pixels of {data.n_corrected} slice(s) + "
                            f"{data.n_original} original slice(s) ..." + (f" ({data.note})" if data.note else ""))
        self.run_job(
            finetune_job, self.state.engine, data, class_map, config, m.path, out_path, image_data, image.name, z_view,
            8, self.state.folder, on_yield=self._on_progress, on_return=self._done,
        )

    @staticmethod
    def _base_config(m: Any, training: TrainingData | None) -> Any:
        """The recipe the current model was trained with (the session's, else its sidecar's)."""
        from ..config import TrainConfig

        if training is not None:
            return training.config
        return TrainConfig.from_dict(m.info.config, strict=False)

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy)
        self.restore_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _on_progress(self, item: Any) -> None:
        if isinstance(item, SliceReady):
            self._show_slice(item)
        elif isinstance(item, str):
            self.show_progress(item)
        elif isinstance(item, SliceProgress):  # of the re-segmentation
            self.progress.setRange(0, item.total)
            self.progress.setValue(item.done)
            self.show_progress(f"{self._slice_text()}re-segmenting the stack: {item.done} / {item.total} slices")
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

    def _slice_text(self) -> str:
        if "slice" not in self.timings:
            return ""
        return f"slice shown {self.timings['slice'] - self.timings['click']:.0f} s after the click; "

    def _target(self) -> Any | None:
        """The layer a new prediction goes to (``'<image> segmentation'``), if it exists."""
        assert self._run is not None
        name = segmentation_name(self._run.image_name)
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _show(self, seg: Segmentation) -> Any:
        """Show a new prediction with every painted pixel put back over it.

        Those of the corrections layer, then those of the layer written to (when another one):
        nothing painted there is overwritten either. The rest shows the new prediction.
        """
        run = self._run
        assert run is not None
        target = self._target()
        sources = [run.layer] + ([target] if isinstance(target, Labels) and target is not run.layer else [])
        dtype = np.result_type(np.uint8, *(source.data.dtype for source in sources))
        z0, z1 = seg.z_start, seg.z_start + seg.labels.shape[0]
        keep: dict[int, np.ndarray] = {}
        for source in sources:
            for z, mask in self.state.painted(source).items():
                if z0 <= z < z1:
                    values = keep.setdefault(z, labels_layer_data(seg.labels[z - z0]).astype(dtype))
                    values[mask] = np.asarray(source.data[z])[mask]
        shown = show_segmentation(self.viewer, seg, self.state, keep=keep)
        if target is not None and shown is not target:
            # The layer was replaced (another dtype): its painted pixels live on in the new one.
            self.state.mark_painted(shown, self.state.painted(target))
            if run.layer is target:
                run.layer = shown
        return shown

    def _show_slice(self, ready: SliceReady) -> None:
        """Main thread: the slice in view, re-segmented by the fine-tuned model, shown before the rest."""
        run = self._run
        assert run is not None
        target = self._target()
        if target is not None and (not isinstance(target, Labels) or tuple(target.data.shape) != run.shape
                                   or target.data.dtype != labels_layer_data(ready.labels).dtype):
            # show_segmentation would replace that layer by one holding this slice alone; the
            # whole stack (with every painted pixel put back) replaces it in one go instead.
            self.show_progress(f"re-segmenting the stack; '{target.name}' is shown when it is done ...")
            return
        self._show(Segmentation(run.image_name, run.class_map, ready.labels[None], ready.z, full_shape=run.shape))
        self.timings["slice"] = time.perf_counter()
        self.show_progress(f"{self._slice_text()}re-segmenting the rest of the stack ...")

    def _done(self, outcome: FineTuneOutcome) -> None:
        run = self._run
        assert run is not None
        result = outcome.result
        self.state.set_model(result.info, result.path)
        if outcome.masks_file is None or outcome.images_file is None:
            self.command.set_unavailable(outcome.note)
        else:
            # The precision "auto" decided on (stored in the sidecar), so the command repeats the run exactly.
            used = run.config.replace(precision=result.info.config.get("precision", run.config.precision))
            self.command.set_command(train_command(used, outcome.images_file, outcome.masks_file, result.path,
                                                   run.init_model), outcome.note)
        data = run.data
        trained = f"{data.n_corrected} corrected + {data.n_original} original slice(s)"
        if outcome.segmentation is None:
            if result.cancelled:
                ended = training_result_text(result, run.config.monitor, run.config.epochs, self._cut_short)
                self.status.setText(f"Fine-tuning {ended[0].lower()}{ended[1:]}; model {result.path}. Not re-segmented.")
            else:
                rest = "the rest of the stack" if "slice" in self.timings else "the stack"
                self.status.setText(f"Fine-tuned on {trained} -> {result.path.name}; {self._slice_text()}"
                                    f"re-segmenting {rest} was cancelled.")
            self.refresh_edits()
            return
        self._show(outcome.segmentation)
        self.timings["stack"] = time.perf_counter()
        self.status.setText(
            f"Fine-tuned on {trained} -> {result.path.name}; {self._slice_text()}'{run.image_name}' re-segmented "
            f"in {self.timings['stack'] - self.timings['click']:.0f} s (your painted pixels kept as painted)."
        )
        self.refresh_edits()
