"""Evaluate widget: a prediction against ground truth, per class and per slice."""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from .._napari.layers import class_map_from_metadata, default_class_map
from ..classmap import ClassMap
from ..command_lines import evaluate_command
from ..errors import InputError
from ..io import atomic_write, check_pair
from ..metrics import class_value_mismatch, format_figure, metric_label
from ..units import layer_voxel_size
from ._common import CommandBox, LayerPicker, SandsegWidget
from ._files import LayerSnapshot, labels_file, layer_file, snapshot_layer
from ._plots import LinePlot
from ._results import is_segmentation

#: How many of the worst slices the list shows.
WORST_SLICES = 10


@dataclass
class Evaluation:
    """What an evaluation produced: the engine's report and the files for the command line."""

    report: dict[str, Any]
    truth_file: Path
    pred_file: Path
    warning: str | None = None  # the two layers seem to use different class values
    physical: dict[str, Any] | None = None  # :func:`napari_sandseg.analyze.physical_accuracy`'s block
    voxel_size: Any = None  # ((z, y, x), unit) of the layers, None in pixels


def compare_labels(truth: LayerSnapshot, pred: LayerSnapshot) -> tuple[np.ndarray, np.ndarray, ClassMap, str | None]:
    """Class ids of both layers on one shared class map (the union of their original values).

    Each layer's values are decoded to the original class values with its own class map first,
    so a prediction and a ground truth read from different files still compare class by class
    (the same rule as ``sandseg evaluate``).

    Returns
    -------
    truth_ids, pred_ids : ndarray
    class_map : ClassMap
    warning : str or None
        :func:`napari_sandseg.metrics.class_value_mismatch` of the values the layers hold.
    """
    check_pair(truth.data, pred.data, f"layer '{truth.name}'", f"layer '{pred.name}'")
    values = []
    for snap in (truth, pred):
        if np.any(snap.data == 0):
            raise InputError(
                f"layer '{snap.name}' has unpainted pixels (value 0); evaluation needs every pixel "
                "labelled in both the prediction and the ground truth"
            )
        values.append(snap.class_map.decode(snap.data.astype(np.int64) - 1))
    present = [np.unique(v) for v in values]
    warning = class_value_mismatch(present[0], present[1], f"ground truth '{truth.name}'", f"prediction '{pred.name}'")
    joint = ClassMap(tuple(int(v) for v in np.union1d(present[0], present[1])))
    if truth.class_map is not None and tuple(truth.class_map.values) == joint.values:
        joint = truth.class_map  # keep the user's names and colours when they cover every value
    return joint.encode(values[0], truth.name), joint.encode(values[1], pred.name), joint, warning


def evaluate_job(truth: LayerSnapshot, pred: LayerSnapshot, folder: Path, cancel: threading.Event,
                 voxel_size: Any = None) -> Generator[Any, None, Evaluation]:
    """Worker: the engine's evaluate on two Labels snapshots, the physical accuracy (rock
    properties of both, :func:`napari_sandseg.analyze.physical_accuracy`, lengths in the
    ``voxel_size`` unit, else pixels), plus files for the command."""
    from ..analyze import NO_UNIT, physical_accuracy
    from ..metrics import evaluate

    yield "comparing"
    truth_ids, pred_ids, class_map, warning = compare_labels(truth, pred)
    report = evaluate(truth_ids, pred_ids, class_map.n_classes, class_map.values, class_map.names)
    yield "measuring rock properties (porosity, connectivity, pore sizes)"
    sizes, unit = voxel_size if voxel_size is not None else ((1.0, 1.0, 1.0), NO_UNIT)
    physical = physical_accuracy(class_map.decode(truth_ids), class_map.decode(pred_ids), sizes, unit,
                                 names=class_map.names)
    yield "writing files for the command line"
    truth_file = truth.source or labels_file(LayerSnapshot(truth.name, truth.data, None, class_map), folder, truth_ids)[0]
    pred_file = pred.source or labels_file(LayerSnapshot(pred.name, pred.data, None, class_map), folder, pred_ids)[0]
    return Evaluation(report, truth_file, pred_file, warning, physical, voxel_size)


def same_layers_problem(pred: Any, truth: Any, pred_file: Path | None, truth_file: Path | None) -> str | None:
    """Why a prediction and a ground truth cannot be compared because they are one and the same, or None."""
    if pred is truth:
        return (f"layer '{pred.name}' is picked as both the prediction and the ground truth; pick the "
                "segmentation as the prediction (comparing a layer with itself always gives IoU 1)")
    if pred_file is not None and truth_file is not None and pred_file.resolve() == truth_file.resolve():
        return (f"layers '{pred.name}' and '{truth.name}' are both read from {pred_file}; pick a prediction and a "
                "ground truth from different files (comparing a file with itself always gives IoU 1)")
    return None


def worst_slices(per_slice: np.ndarray, count: int = WORST_SLICES) -> list[int]:
    """Indices of the ``count`` slices with the lowest mean IoU (undefined slices skipped)."""
    per_slice = np.asarray(per_slice, float)
    valid = np.flatnonzero(np.isfinite(per_slice))
    return [int(z) for z in valid[np.argsort(per_slice[valid], kind="stable")][:count]]


class EvaluateWidget(SandsegWidget):
    """Per-class IoU table, mean IoU, accuracy, confusion matrix and a clickable per-slice plot."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.evaluation: Evaluation | None = None
        self.pred_picker = LayerPicker(napari_viewer, Labels, prefer=is_segmentation, follow=True)
        self.truth_picker = LayerPicker(
            napari_viewer, Labels, prefer=lambda n: any(w in n.lower() for w in ("truth", "mask", "label"))
        )
        form = QFormLayout()
        form.addRow("Prediction", self.pred_picker)
        form.addRow("Ground truth", self.truth_picker)
        self.run_button = QPushButton("Evaluate")
        self.run_button.clicked.connect(self.start)
        self.summary = QLabel("Pick a prediction and its ground truth, then Evaluate.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["class", "value", "IoU", "Dice", "truth %", "pred %"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.physical = QTableWidget(0, 4)
        self.physical.setHorizontalHeaderLabels(["measure", "truth", "prediction", "difference"])
        self.physical.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.physical.verticalHeader().setVisible(False)
        self.physical_note = QLabel("")
        self.physical_note.setWordWrap(True)
        self.confusion = QTableWidget(0, 0)
        self.confusion.setToolTip("confusion matrix: rows = truth, columns = prediction (voxels)")
        self.plot = LinePlot("mean IoU per slice (click to go there)", "slice", "IoU", y_range=(0.0, 1.0))
        self.plot.clicked.connect(lambda x: self.go_to_slice(int(round(x))))
        self.worst = QListWidget()
        self.worst.setMaximumHeight(110)
        self.worst.itemClicked.connect(self._worst_clicked)
        self.csv_button = QPushButton("Save CSV...")
        self.json_button = QPushButton("Save JSON...")
        self.csv_button.clicked.connect(lambda: self.save_figures("csv"))
        self.json_button.clicked.connect(lambda: self.save_figures("json"))
        self.command = CommandBox()

        layout = self.layout()
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(QLabel("Rock properties, truth vs prediction (pp = percentage points):"))
        layout.addWidget(self.physical)
        layout.addWidget(self.physical_note)
        layout.addWidget(QLabel("Confusion matrix (rows truth, columns prediction):"))
        layout.addWidget(self.confusion)
        layout.addWidget(self.plot)
        layout.addWidget(QLabel("Worst slices (click to go there):"))
        layout.addWidget(self.worst)
        row = QHBoxLayout()
        row.addWidget(self.csv_button)
        row.addWidget(self.json_button)
        layout.addLayout(row)
        layout.addWidget(self.command)
        self._set_export_enabled(False)
        napari_viewer.dims.events.current_step.connect(self._follow_slice)

    # ------------------------------------------------------------------ run

    def start(self) -> None:
        """Evaluate the picked layers in a worker."""
        pred, truth = self.pred_picker.layer(), self.truth_picker.layer()
        if pred is None or truth is None:
            show_error("Evaluate needs two Labels layers: a prediction and its ground truth")
            return
        problem = same_layers_problem(pred, truth, layer_file(pred, self.state), layer_file(truth, self.state))
        if problem is not None:
            show_error(problem)
            return
        snaps = []
        for layer in (truth, pred):
            class_map = class_map_from_metadata(layer.metadata) or default_class_map(layer.data)
            snaps.append(snapshot_layer(layer, self.state, class_map))
        self.summary.setText("evaluating...")
        voxel_size = layer_voxel_size(pred.scale, pred.units) or layer_voxel_size(truth.scale, truth.units)
        self.run_job(evaluate_job, snaps[0], snaps[1], self.state.folder, voxel_size=voxel_size,
                     on_return=self.show_evaluation)

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy)

    def status_line(self) -> QLabel:  # noqa: D102 - the summary line says what is going on
        return self.summary

    def show_evaluation(self, evaluation: Evaluation) -> None:
        """Fill the table, summary, confusion matrix, plot and worst-slice list."""
        self.evaluation = evaluation
        r = evaluation.report
        summary = "    ".join(f"{metric_label(k)} {format_figure(k, r[k])}" for k in ("mean_iou", "pixel_accuracy"))
        self.summary.setText(f"{summary}    {r['n_voxels']:,} voxels")
        if evaluation.warning is not None:
            self.summary.setText(f"{self.summary.text()}\nWarning: {evaluation.warning}")
            show_warning(evaluation.warning)
        k = r["n_classes"]
        self.table.setRowCount(k)
        for i in range(k):
            cells = [
                r["class_names"][i], str(r["class_values"][i]), format_figure("iou", float(r["per_class_iou"][i])),
                format_figure("dice", float(r["dice"][i])), f"{100 * r['phase_fractions'][i]:.2f}",
                f"{100 * r['predicted_fractions'][i]:.2f}",
            ]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + 4 + sum(self.table.rowHeight(i) for i in range(k)))
        cm = r["confusion_matrix"]
        self.confusion.setRowCount(k)
        self.confusion.setColumnCount(k)
        # Columns by class value (short); rows by name. Full names are in the tooltips.
        self.confusion.setHorizontalHeaderLabels([str(v) for v in r["class_values"]])
        self.confusion.setVerticalHeaderLabels(r["class_names"])
        for i in range(k):
            for j in range(k):
                item = QTableWidgetItem(f"{int(cm[i, j]):,}")
                item.setToolTip(f"truth {r['class_names'][i]}, predicted {r['class_names'][j]}")
                self.confusion.setItem(i, j, item)
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.confusion.setFixedHeight(self.confusion.horizontalHeader().height() + 4 + sum(self.confusion.rowHeight(i) for i in range(k)))
        per_slice = np.asarray(r["per_slice_iou"], float)
        self.plot.set_series("mean IoU", np.arange(per_slice.size), per_slice, "#3c9be8", points=per_slice.size <= 40)
        self.worst.clear()
        for z in worst_slices(per_slice):
            item = QListWidgetItem(f"slice {z}: IoU {per_slice[z]:.3f}")
            item.setData(256, z)  # Qt.UserRole
            self.worst.addItem(item)
        self._show_physical(evaluation.physical)
        self.command.set_command(evaluate_command(evaluation.truth_file, evaluation.pred_file, evaluation.voxel_size))
        self._set_export_enabled(True)
        self._follow_slice()

    def _show_physical(self, physical: dict[str, Any] | None) -> None:
        """The compact physical-accuracy table (:func:`napari_sandseg.analyze.physical_rows`) and its notes."""
        from ..analyze import physical_notes, physical_rows, report_header

        _, rows = physical_rows(physical) if physical is not None else ([], [])
        self.physical.setRowCount(len(rows))
        for i, cells in enumerate(rows):
            for j, text in enumerate(cells):
                self.physical.setItem(i, j, QTableWidgetItem(text))
        self.physical.setFixedHeight(self.physical.horizontalHeader().height() + 4
                                     + sum(self.physical.rowHeight(i) for i in range(len(rows))))
        if physical is None:
            notes = []
        elif "skipped" in physical:
            notes = [f"not measured: {physical['skipped']}"]
        else:
            notes = [report_header(physical), *physical_notes(physical)]
            if physical["unit"] == "px":
                notes.append("no voxel size on the layers: lengths in pixels")
        self.physical_note.setText("\n".join(notes))

    # ------------------------------------------------------------------ navigation

    def go_to_slice(self, z: int) -> None:
        """Move the viewer to slice ``z`` (clamped to the evaluated stack)."""
        if self.evaluation is None:
            return
        n = len(self.evaluation.report["per_slice_iou"])
        z = int(min(max(z, 0), n - 1))
        self.viewer.dims.set_current_step(0, z)

    def _worst_clicked(self, item: QListWidgetItem) -> None:
        self.go_to_slice(int(item.data(256)))

    def _follow_slice(self, event: Any = None) -> None:
        if self.evaluation is not None and self.viewer.dims.ndim >= 3:
            self.plot.set_marker(float(self.viewer.dims.current_step[0]))

    # ------------------------------------------------------------------ export

    def _set_export_enabled(self, enabled: bool) -> None:
        self.csv_button.setEnabled(enabled)
        self.json_button.setEnabled(enabled)

    def ask_save_path(self, caption: str, suggestion: str, file_filter: str) -> str:
        """Ask where to save (a method so tests can replace the dialog)."""
        path, _ = QFileDialog.getSaveFileName(self, caption, suggestion, file_filter)
        return path

    def save_figures(self, kind: str, path: str | Path | None = None) -> Path | None:
        """Write the figures as CSV (per-class table + per-slice file) or JSON.

        Parameters
        ----------
        kind : {"csv", "json"}
        path : path-like, optional
            Destination; asked for with a dialog when omitted (the dialog confirms overwriting).
        """
        if self.evaluation is None:
            return None
        if path is None:
            suggestion = str(self.state.folder / f"evaluation.{kind}")
            path = self.ask_save_path(f"Save evaluation as {kind.upper()}", suggestion, f"{kind.upper()} (*.{kind})")
            if not path:
                return None
        path = Path(path)
        report = self.evaluation.report
        if kind == "json":
            write_report_json(path, report, self.evaluation.physical)
        else:
            write_report_csv(path, report)
        if kind == "json":
            self.command.set_command(evaluate_command(self.evaluation.truth_file, self.evaluation.pred_file,
                                                      self.evaluation.voxel_size, json=path))
        return path


def write_report_json(path: Path, report: dict[str, Any], physical: dict[str, Any] | None = None) -> None:
    """The report as JSON (NaN -> null), with the ``physical`` block when given, written atomically
    (the keys ``sandseg evaluate --json`` writes)."""
    from ..metrics import to_json_dict

    figures = to_json_dict(report)
    if physical is not None:
        figures["physical"] = physical
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(figures, indent=2))


def write_report_csv(path: Path, report: dict[str, Any]) -> Path:
    """Per-class table (+ mean IoU and accuracy rows) at ``path``; per-slice IoU beside it.

    Returns
    -------
    Path
        The per-slice file, ``<stem>_per_slice.csv``.
    """
    with atomic_write(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "value", "iou", "dice", "truth_fraction", "predicted_fraction"])
            for i in range(report["n_classes"]):
                w.writerow([
                    report["class_names"][i], report["class_values"][i], float(report["per_class_iou"][i]),
                    float(report["dice"][i]), float(report["phase_fractions"][i]), float(report["predicted_fractions"][i]),
                ])
            w.writerow(["mean_iou", "", report["mean_iou"], "", "", ""])
            w.writerow(["pixel_accuracy", "", report["pixel_accuracy"], "", "", ""])
    per_slice_path = path.with_name(f"{path.stem}_per_slice.csv")
    with atomic_write(per_slice_path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["slice", "mean_iou"])
            for z, value in enumerate(report["per_slice_iou"]):
                w.writerow([z, float(value)])
    return per_slice_path
