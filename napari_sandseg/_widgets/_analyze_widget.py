"""Analyze widget: rock properties of a Labels layer (and its ground truth) in physical units."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from .._napari.layers import class_map_from_metadata, default_class_map
from ..classmap import ClassMap
from ..command_lines import analyze_command
from ..errors import Cancelled, InputError
from ..io import atomic_write
from ._common import CommandBox, LayerPicker, SandsegWidget, VoxelSizeField
from ._files import LayerSnapshot, labels_file, layer_file, snapshot_layer
from ._plots import LinePlot
from ._results import is_segmentation

#: Colours of the truth and the prediction (or the one volume) in the plots.
TRUTH_COLOR, PRED_COLOR = "#e8a33c", "#3c9be8"

#: The plots saved as PNG beside the report: attribute name -> file suffix.
PLOTS = {"profile_plot": "porosity_profile", "size_plot": "pore_sizes", "rev_plot": "rev"}


@dataclass
class Analysis:
    """What an analysis produced: the engine's report and the files for the command line."""

    report: dict[str, Any]
    labels_file: Path
    truth_file: Path | None


def class_values(snapshot: LayerSnapshot) -> np.ndarray:
    """A Labels layer's data as its original class values (layer value k is class id k - 1)."""
    if np.any(snapshot.data == 0):
        raise InputError(
            f"layer '{snapshot.name}' has unpainted pixels (value 0); rock properties need every pixel labelled"
        )
    return snapshot.class_map.decode(snapshot.data.astype(np.int64) - 1)


def analyze_job(
    labels: LayerSnapshot,
    truth: LayerSnapshot | None,
    voxel_size: tuple[float, float, float],
    unit: str,
    pore: int,
    pore_sizes: bool,
    folder: Path,
    cancel: threading.Event,
) -> Generator[str, None, Analysis]:
    """Worker: :func:`napari_sandseg.analyze.iter_analyze` (or the pair) on layer snapshots.

    Stops between measures when ``cancel`` is set. Writes the layers to ``folder`` when they
    have no file, so the command line shown can repeat the analysis.
    """
    from ..analyze import iter_analyze, iter_analyze_pair

    yield "reading layers"
    volume = class_values(labels)
    names = labels.class_map.names if labels.class_map is not None else ()
    if truth is None:
        steps = iter_analyze(volume, voxel_size, unit, pore=pore, names=names, pore_sizes=pore_sizes,
                             source=f"layer '{labels.name}'")
    else:
        steps = iter_analyze_pair(class_values(truth), volume, voxel_size, unit, pore=pore, names=names,
                                  pore_sizes=pore_sizes, sources=(f"layer '{truth.name}'", f"layer '{labels.name}'"))
    while True:
        if cancel.is_set():
            raise Cancelled("analysis cancelled")
        try:
            step, n_steps, name = next(steps)
        except StopIteration as stop:
            report = stop.value
            break
        yield f"measuring {name} ({step + 1}/{n_steps})"
    yield "writing files for the command line"
    labels_path = labels.source or labels_file(labels, folder)[0]
    truth_path = None if truth is None else truth.source or labels_file(truth, folder)[0]
    return Analysis(report, labels_path, truth_path)


class AnalyzeWidget(SandsegWidget):
    """Porosity, connectivity, surface area, Euler number, pore sizes and REV, with plots."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.analysis: Analysis | None = None
        self._voxel_note: str | None = None  # said beside the results when lengths are in pixels
        self.labels_picker = LayerPicker(napari_viewer, Labels, prefer=is_segmentation, follow=True)
        self.labels_picker.currentTextChanged.connect(self._fill_classes)
        self.compare = QCheckBox("compare with ground truth")
        self.truth_picker = LayerPicker(
            napari_viewer, Labels, prefer=lambda n: any(w in n.lower() for w in ("truth", "mask", "label"))
        )
        self.voxel_size = VoxelSizeField(fallback="from the layer's file, else px")
        self.pore_class = QComboBox()
        self.pore_class.setToolTip("the class that is pore space (default: the class named pore, else the darkest)")
        form = QFormLayout()
        form.addRow("Labels", self.labels_picker)
        form.addRow("", self.compare)
        form.addRow("Ground truth", self.truth_picker)
        self.truth_picker.setEnabled(False)
        self.compare.toggled.connect(self.truth_picker.setEnabled)
        form.addRow("Voxel size", self.voxel_size)
        form.addRow("Pore class", self.pore_class)
        self.pore_sizes = QCheckBox("pore-size distribution (local thickness)")
        self.pore_sizes.setChecked(True)
        self.pore_sizes.setToolTip("the slowest measure, and the one that needs the whole pore space in memory "
                                   "(about 60 bytes per voxel)")
        form.addRow("", self.pore_sizes)
        self.run_button, self.cancel_button, run_row = self.run_cancel_row("Analyze", run_stretch=1)
        self.status = QLabel("Pick a Labels layer, then Analyze.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.profile_plot = LinePlot("porosity per slice (click to go there)", "slice", "porosity")
        self.profile_plot.clicked.connect(lambda x: self.viewer.dims.set_current_step(0, int(round(x))))
        self.size_plot = LinePlot("pore sizes: cumulative pore volume", "local thickness", "fraction", y_range=(0.0, 1.0))
        self.rev_plot = LinePlot("REV: porosity of growing sub-volumes", "edge length", "porosity")
        self.save_button = QPushButton("Save report...")
        self.save_button.setToolTip("JSON report, CSV summary and the three plots as PNG")
        self.save_button.clicked.connect(lambda: self.save_report())
        self.save_button.setEnabled(False)
        self.command = CommandBox()
        layout = self.layout()
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        for plot in (self.profile_plot, self.size_plot, self.rev_plot):
            layout.addWidget(plot)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        layout.addLayout(row)
        layout.addWidget(self.command)
        self._fill_classes()

    # ------------------------------------------------------------------ inputs

    def _class_map(self, layer: Any) -> ClassMap:
        return class_map_from_metadata(layer.metadata) or default_class_map(layer.data)

    def _fill_classes(self, *_: Any) -> None:
        """Offer the picked layer's classes as pore class; preselect the engine's default."""
        from ..analyze import pore_value

        layer = self.labels_picker.layer()
        self.voxel_size.follow(layer)
        self.pore_class.clear()
        if layer is None:
            return
        class_map = self._class_map(layer)
        for value, name in zip(class_map.values, class_map.names):
            self.pore_class.addItem(f"{value}: {name}", value)
        default = pore_value(class_map.values, class_map.names)
        self.pore_class.setCurrentIndex(list(class_map.values).index(default))

    def _voxel_size(self, layer: Any) -> tuple[tuple[float, float, float], str, str | None]:
        """The field's voxel size (typed, else the layer's scale), else the one the layer's file
        carries, else 1 px and a note saying so."""
        from ..units import resolve_voxel_size

        self.voxel_size.follow(layer)  # its scale may have changed since it was picked
        chosen = self.voxel_size.value()
        if chosen is not None:
            return chosen[0], chosen[1], None
        source = layer_file(layer, self.state)
        (sizes, unit), note = resolve_voxel_size(None, [source] if source is not None else [])
        if note is not None:
            note = "no voxel size in the field or the layer's file: lengths are in pixels"
        return sizes, unit, note

    # ------------------------------------------------------------------ run

    def start(self) -> None:
        """Analyze the picked layer(s) in a worker."""
        from ..errors import SandsegError

        layer = self.labels_picker.layer()
        truth = self.truth_picker.layer() if self.compare.isChecked() else None
        if layer is None or (self.compare.isChecked() and truth is None):
            show_error("Analyze needs a Labels layer (and, to compare, a ground-truth Labels layer)")
            return
        if truth is layer:
            show_error(f"layer '{layer.name}' is picked as both the labels and the ground truth; pick two layers")
            return
        try:
            voxel_size, unit, self._voxel_note = self._voxel_size(layer)
        except SandsegError as exc:
            show_error(str(exc))
            return
        snaps = [snapshot_layer(lay, self.state, self._class_map(lay)) for lay in (layer, truth) if lay is not None]
        self.status.setText("analysing...")
        self.run_job(
            analyze_job, snaps[0], snaps[1] if truth is not None else None, voxel_size, unit,
            self.pore_class.currentData(), self.pore_sizes.isChecked(), self.state.folder,
            on_yield=self.show_progress, on_return=self.show_analysis,
        )

    def set_busy(self, busy: bool) -> None:  # noqa: D102
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def show_analysis(self, analysis: Analysis) -> None:
        """Fill the table and the plots; offer saving."""
        from ..analyze import report_header, summary_table

        self.analysis = analysis
        report = analysis.report
        pair = "truth" in report
        sides = [("truth", report["truth"], TRUTH_COLOR), ("prediction", report["prediction"], PRED_COLOR)] if pair \
            else [("labels", report, PRED_COLOR)]
        self.status.setText(report_header(report) + (f"\n{self._voxel_note}" if self._voxel_note else ""))
        columns, rows = summary_table(report)
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        for i, cells in enumerate(rows):
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        unit = report["unit"]
        for plot in (self.profile_plot, self.size_plot, self.rev_plot):
            plot.clear()
        self.size_plot.xlabel = f"local thickness ({unit})"
        medians = [f"{name} {side['pore_size']['median']:.3g}" for name, side, _ in sides
                   if side["pore_size"]["median"] is not None]
        self.size_plot.title = "pore sizes: cumulative pore volume" + (f" (median {', '.join(medians)} {unit})" if medians else "")
        self.rev_plot.xlabel = f"edge length ({unit})"
        for name, side, color in sides:
            profile = np.asarray(side["porosity_profile"])
            self.profile_plot.set_series(name, np.arange(profile.size), profile, color, points=profile.size <= 40)
            histogram = side["pore_size"]["histogram"]
            if histogram:
                self.size_plot.set_series(name, [b["diameter"] for b in histogram], [b["cumulative"] for b in histogram],
                                          color, points=True)
            sizes = np.asarray(side["rev"]["sizes"])
            rev = np.asarray(side["rev"]["porosity"])
            self.rev_plot.set_series(f"{name} (mean of {len(rev)} centres)", sizes, rev.mean(axis=0), color, points=True)
            # The +/-1 pp band around the whole-volume porosity: upper line, a gap, lower line back.
            band = side["porosity"] + side["rev"]["tolerance"] * np.array([1.0, -1.0])
            self.rev_plot.set_series(
                f"{name} porosity +/-1 pp", np.concatenate([sizes, sizes[-1:], sizes[::-1]]),
                np.concatenate([np.full(sizes.size, band[0]), [np.nan], np.full(sizes.size, band[1])]), "#999999",
            )
        first = report["truth"] if pair else report
        measured_sizes = not any(note.startswith("pore sizes not measured") for note in first["notes"])
        self.command.set_command(analyze_command(analysis.labels_file, analysis.truth_file,
                                                 (tuple(report["voxel_size"]), unit), first["pore_class"],
                                                 pore_sizes=measured_sizes))
        self.save_button.setEnabled(True)

    # ------------------------------------------------------------------ export

    def ask_save_path(self, caption: str, suggestion: str, file_filter: str) -> str:
        """Ask where to save (a method so tests can replace the dialog)."""
        path, _ = QFileDialog.getSaveFileName(self, caption, suggestion, file_filter)
        return path

    def save_report(self, path: str | Path | None = None) -> list[Path]:
        """Write ``<name>.json`` (the report), ``<name>.csv`` (the summary) and one PNG per plot.

        Returns
        -------
        list of Path
            The files written (none when there is no analysis or the dialog was cancelled).
        """
        from ..analyze import to_csv

        if self.analysis is None:
            return []
        if path is None:
            path = self.ask_save_path("Save rock properties", str(self.state.folder / "rock_properties.json"),
                                      "JSON (*.json)")
            if not path:
                return []
        path = Path(path).with_suffix(".json")
        written = [path, path.with_suffix(".csv")]
        with atomic_write(written[0], overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(self.analysis.report, indent=2))
        with atomic_write(written[1], overwrite=True) as tmp:
            Path(tmp).write_text(to_csv(self.analysis.report))
        for attribute, suffix in PLOTS.items():
            png = path.with_name(f"{path.stem}_{suffix}.png")
            with atomic_write(png, overwrite=True) as tmp:
                if not getattr(self, attribute).grab().save(str(tmp), "PNG"):
                    raise InputError(f"{png}: the plot could not be saved as PNG")
            written.append(png)
        return written
