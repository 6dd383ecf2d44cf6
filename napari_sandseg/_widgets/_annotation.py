"""Painting made obvious: annotation layers, their class legend and where to paint next.

An *annotation layer* is a Labels layer made for scribbles: 0 = unpainted, value ``k`` =
class ``k - 1`` of the class map in ``layer.metadata[CLASS_MAP_KEY]`` (values ``1..K``, so an
exported annotation holds the values as painted), flagged by ``metadata[ANNOTATION_KEY]``.
Its colours come from :func:`napari_sandseg._napari.layers.label_colormap` and its class names from
:func:`napari_sandseg._napari.layers.class_features` (napari's status bar shows ``class: quartz``).

The pure helpers come first; :class:`AnnotationPanel` is the Qt part the Train widget docks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._napari.layers import ANNOTATION_KEY, CLASS_MAP_KEY, class_features, class_map_from_metadata, label_colormap
from ..classmap import DEFAULT_COLORS, SANDSTONE_NAMES, ClassMap
from ..errors import InputError
from ._edits import painted_pixels
from ._results import uncertainty_name

#: Slices listed by "Suggest where to paint next".
N_SUGGESTIONS = 4

# ---------------------------------------------------------------------- pure helpers


def annotation_class_map(names: Sequence[str] = SANDSTONE_NAMES) -> ClassMap:
    """The class map of a new annotation layer: class ``i`` is painted (and exported) as ``i + 1``."""
    return ClassMap(tuple(range(1, len(names) + 1)), tuple(names))


def is_annotation(layer: Any) -> bool:
    """True when ``layer`` is a Labels layer made by *New annotation layer*."""
    return isinstance(layer, Labels) and bool(layer.metadata.get(ANNOTATION_KEY))


def annotation_name(image_name: str) -> str:
    """Name of the annotation layer of an image."""
    return f"{image_name} annotations"


def renamed(class_map: ClassMap, index: int, name: str) -> ClassMap:
    """``class_map`` with class ``index`` called ``name``.

    Raises
    ------
    InputError
        If the name is empty or another class has it.
    """
    name = _checked_name(class_map, name, index)
    names = list(class_map.names)
    names[index] = name
    return ClassMap(class_map.values, tuple(names), class_map.colors)


def with_class(class_map: ClassMap, name: str) -> ClassMap:
    """``class_map`` with one more class, ``name``, painted as the next value and in the next palette colour.

    Raises
    ------
    InputError
        If the name is empty or taken, or the class map is full.
    """
    name = _checked_name(class_map, name)
    k = class_map.n_classes
    return ClassMap(
        (*class_map.values, max(class_map.values) + 1), (*class_map.names, name),
        (*class_map.colors, DEFAULT_COLORS[k % len(DEFAULT_COLORS)]),
    )


def _checked_name(class_map: ClassMap, name: str, index: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise InputError("a class needs a name: type one in the box first")
    taken = [n for i, n in enumerate(class_map.names) if i != index]
    if name in taken:
        raise InputError(f"there is already a class called '{name}'; choose another name")
    return name


def apply_class_map(layer: Any, class_map: ClassMap) -> None:
    """Give ``layer`` the colours, status-bar names and metadata of ``class_map`` (one place for all three)."""
    layer.metadata[CLASS_MAP_KEY] = class_map.to_dict()
    layer.colormap = label_colormap(class_map)
    layer.features = class_features(class_map)


def slice_counts(data: Any, zs: Sequence[int] | None = None, minlength: int = 0) -> np.ndarray:
    """Pixels of each value per slice: ``counts[i, v]`` for slice ``zs[i]`` (all slices by default).

    A 2D layer is one slice. Values must be non-negative integers (Labels layers are).
    """
    if np.ndim(data) == 2:
        data = np.asarray(data)[None]
    zs = range(data.shape[0]) if zs is None else zs
    rows = [np.bincount(np.asarray(data[z]).ravel(), minlength=minlength) for z in zs]
    width = max([minlength, *(len(r) for r in rows)])
    out = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def suggest_slices(painted: np.ndarray, uncertainty: np.ndarray | None = None,
                   n: int = N_SUGGESTIONS) -> list[tuple[int, str]]:
    """Slices worth painting next, best first, each with the reason shown to the user.

    Parameters
    ----------
    painted : ndarray
        ``(Z,)`` painted pixels per slice.
    uncertainty : ndarray, optional
        ``(Z,)`` mean uncertainty per slice of the current segmentation. When given, the most
        uncertain slices come first (the model is least sure there).
    n : int
        How many slices.

    Returns
    -------
    list of (int, str)
        ``(z, text)`` pairs.
    """
    painted = np.asarray(painted)
    if uncertainty is not None:
        order = np.argsort(-np.asarray(uncertainty, float), kind="stable")[:n]
        return [(int(z), f"slice {z}: mean uncertainty {uncertainty[z]:.3f}") for z in order]
    # Fewest painted first; among equals, the slice farthest from the painted and the already
    # suggested slices, so the suggestions spread over the stack instead of bunching up.
    zs = np.arange(painted.size)
    near = list(np.flatnonzero(painted > 0))
    order: list[int] = []
    for _ in range(min(n, painted.size)):
        far = np.abs(zs[:, None] - np.asarray(near)[None, :]).min(axis=1) if near else np.zeros(zs.size, int)
        free = np.setdiff1d(zs, order)
        best = int(free[np.lexsort((free, -far[free], painted[free]))[0]])
        order.append(best)
        near.append(best)
    return [(z, f"slice {z}: {int(painted[z])} painted pixels") for z in order]


# ---------------------------------------------------------------------- Qt panel


class AnnotationPanel(QWidget):
    """*New annotation layer*, the class legend of the picked annotation layer, and where to paint next.

    Parameters
    ----------
    viewer : napari.Viewer
    image_picker, labels_picker : LayerPicker
        The Train widget's pickers: the new layer takes the picked image's shape and becomes
        the picked labels; the legend follows the picked labels layer.
    """

    #: Legend columns.
    COLUMNS = ("", "value", "class", "painted")

    def __init__(self, viewer: Any, image_picker: Any, labels_picker: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.image_picker = image_picker
        self.labels_picker = labels_picker
        self.layer: Labels | None = None  # the annotation layer the legend shows
        self._counts = np.zeros((0, 0), np.int64)  # (Z, values) pixels per slice and value
        self._uncertainty: tuple[int, np.ndarray] | None = None  # (id of the layer, per-slice means)
        self._dirty: set[int] = set()  # slices painted since the last recount

        self.new_button = QPushButton("New annotation layer")
        self.new_button.setToolTip("an empty Labels layer the shape of the picked image, to paint classes on")
        self.new_button.clicked.connect(self.new_layer)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.legend = QTableWidget(0, len(self.COLUMNS))
        self.legend.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.legend.verticalHeader().setVisible(False)
        self.legend.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.legend.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.legend.setSelectionMode(QAbstractItemView.SingleSelection)
        header = self.legend.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        self.legend.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)  # rows as tall as the height assumes
        self.legend.setToolTip("click a class to paint with it")
        self.legend.cellClicked.connect(self._row_clicked)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("class name")
        self.add_button = QPushButton("Add class")
        self.add_button.clicked.connect(self.add_class)
        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("give the selected class the name typed here")
        self.rename_button.clicked.connect(self.rename_class)
        self.suggest_button = QPushButton("Suggest where to paint next")
        self.suggest_button.clicked.connect(self.suggest)
        self.suggestions = QListWidget()
        self.suggestions.setToolTip("click a slice to go there")
        self.suggestions.itemClicked.connect(self._go_to)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.new_button)
        top.addWidget(self.hint, 1)
        layout.addLayout(top)
        layout.addWidget(self.legend)
        names = QHBoxLayout()
        names.addWidget(self.name_edit, 1)
        names.addWidget(self.add_button)
        names.addWidget(self.rename_button)
        layout.addLayout(names)
        layout.addWidget(self.suggest_button)
        layout.addWidget(self.suggestions)
        labels_picker.currentTextChanged.connect(self.follow)
        self.follow()

    # ------------------------------------------------------------------ layer

    def new_layer(self) -> Labels | None:
        """Add an empty annotation layer shaped like the picked image, pick it and start painting."""
        image = self.image_picker.layer()
        if image is None:
            show_error("New annotation layer needs an image layer: open or pick one first")
            return None
        shape = image.data[0].shape if image.multiscale else image.data.shape
        class_map = annotation_class_map()
        layer = self.viewer.add_labels(
            np.zeros(shape, np.uint8), name=annotation_name(image.name), scale=image.scale,
            translate=image.translate, metadata={ANNOTATION_KEY: True},
        )
        apply_class_map(layer, class_map)
        layer.selected_label = 1
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.labels_picker.select(layer.name)
        self.follow()
        return layer

    def follow(self, *_: Any) -> None:
        """Show the legend of the picked labels layer when it is an annotation layer."""
        layer = self.labels_picker.layer()
        layer = layer if is_annotation(layer) else None
        if layer is self.layer:
            return
        if self.layer is not None:
            self.layer.events.paint.disconnect(self._on_paint)
            self.layer.events.selected_label.disconnect(self._show_selected)
        self.layer = layer
        self._uncertainty = None
        self._dirty = set()
        for w in (self.legend, self.name_edit, self.add_button, self.rename_button, self.suggest_button,
                  self.suggestions):
            w.setVisible(layer is not None)
        self.suggestions.clear()
        if layer is None:
            self.hint.setText("paint classes on a new, empty layer; training uses the painted pixels")
            return
        self.hint.setText("click a class, then paint; 0 = unpainted")
        self.hint.setToolTip(f"the legend of '{layer.name}'")
        layer.events.paint.connect(self._on_paint)
        layer.events.selected_label.connect(self._show_selected)
        self._counts = slice_counts(layer.data, minlength=self.class_map().n_classes + 1)
        self._fill_legend()
        self.suggest()

    def class_map(self) -> ClassMap:
        """The class map of the followed annotation layer."""
        return class_map_from_metadata(self.layer.metadata) or annotation_class_map()

    # ------------------------------------------------------------------ legend

    def counts(self) -> np.ndarray:
        """Painted pixels of each class, ``counts[i]`` for class ``i`` (layer value ``i + 1``)."""
        n = self.class_map().n_classes
        total = self._counts.sum(axis=0)
        out = np.zeros(n, np.int64)
        out[: max(0, min(n, total.size - 1))] = total[1 : n + 1]
        return out

    def _fill_legend(self) -> None:
        class_map = self.class_map()
        counts = self.counts()
        self.legend.setRowCount(class_map.n_classes)
        for i, (value, name, color) in enumerate(zip(class_map.values, class_map.names, class_map.colors)):
            swatch = QTableWidgetItem("")
            # A decoration, not the background: the row selection would paint over a background.
            swatch.setData(Qt.DecorationRole, QColor.fromRgbF(*color[:3]))
            items = (swatch, QTableWidgetItem(str(i + 1)), QTableWidgetItem(name), QTableWidgetItem(f"{counts[i]:,}"))
            for col, item in enumerate(items):
                item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                if col in (1, 3):
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                self.legend.setItem(i, col, item)
        self._fit_legend()
        self._show_selected()

    def _fit_legend(self) -> None:
        """Make the table as tall as its rows: it never scrolls for the usual handful of classes."""
        header = self.legend.horizontalHeader()
        # The header's real height is known once shown; its size hint before that.
        top = header.height() if header.isVisible() else header.sizeHint().height()
        self.legend.setFixedHeight(top + self.legend.verticalHeader().length() + 2 * self.legend.frameWidth())
        self.legend.scrollToTop()  # a row selected while the table was shorter scrolled it

    def showEvent(self, event: Any) -> None:  # noqa: D102
        super().showEvent(event)
        self._fit_legend()

    def _update_counts(self) -> None:
        counts = self.counts()
        for i in range(min(len(counts), self.legend.rowCount())):
            self.legend.item(i, 3).setText(f"{counts[i]:,}")

    def _on_paint(self, event: Any) -> None:
        """Note the slices a stroke touched; they are recounted once control returns to Qt.

        napari emits ``paint`` for ``layer.paint`` before it writes the pixels, so counting here
        would miss the stroke; the deferred recount also counts a burst of events once.
        """
        shape = tuple(self.layer.data.shape)
        zs = {z for z, _box, _mask in painted_pixels(event.value, shape)} if len(shape) == 3 else {0}
        if zs and not self._dirty:
            QTimer.singleShot(0, self._recount)
        self._dirty |= zs

    def _recount(self) -> None:
        """Recount the touched slices only (the whole layer when it is not a stack)."""
        zs, self._dirty = sorted(self._dirty), set()
        if self.layer is None or not zs:
            return
        data = self.layer.data
        if np.ndim(data) != 3:
            self._counts = slice_counts(data, minlength=self._counts.shape[1])
        else:
            fresh = slice_counts(data, zs, minlength=self._counts.shape[1])
            if fresh.shape[1] > self._counts.shape[1]:  # a value above the class map was painted
                self._counts = np.pad(self._counts, ((0, 0), (0, fresh.shape[1] - self._counts.shape[1])))
            self._counts[zs] = fresh
        self._update_counts()
        if self._uncertainty is None:  # painted counts drive the suggestions
            self.suggest()

    def _row_clicked(self, row: int, _column: int) -> None:
        """Paint with the clicked class."""
        self.layer.selected_label = row + 1
        self.layer.mode = "paint"
        self.viewer.layers.selection.active = self.layer

    def _show_selected(self, *_: Any) -> None:
        """Highlight the row of the brush value, however it was chosen."""
        row = int(self.layer.selected_label) - 1
        if 0 <= row < self.legend.rowCount():
            self.legend.selectRow(row)
        else:
            self.legend.clearSelection()

    def add_class(self) -> None:
        """Add the class typed in the box as the next layer value."""
        self._set_class_map(with_class, self.name_edit.text())

    def rename_class(self) -> None:
        """Give the selected class the name typed in the box."""
        rows = self.legend.selectionModel().selectedRows()
        if not rows:
            show_error("select the class to rename in the table first")
            return
        self._set_class_map(renamed, rows[0].row(), self.name_edit.text())

    def _set_class_map(self, change: Any, *args: Any) -> None:
        try:
            class_map = change(self.class_map(), *args)
        except InputError as exc:
            show_error(str(exc))
            return
        apply_class_map(self.layer, class_map)
        if self._counts.shape[1] < class_map.n_classes + 1:
            self._counts = np.pad(self._counts, ((0, 0), (0, class_map.n_classes + 1 - self._counts.shape[1])))
        self.name_edit.clear()
        self._fill_legend()

    # ------------------------------------------------------------------ where to paint next

    def slice_uncertainty(self) -> np.ndarray | None:
        """Mean uncertainty per slice of the picked image's uncertainty layer, or None without one."""
        image = self.image_picker.layer()
        name = uncertainty_name(image.name) if image is not None else None
        if name is None or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        if self.layer is None or tuple(layer.data.shape) != tuple(self.layer.data.shape) or layer.data.ndim != 3:
            return None
        if self._uncertainty is None or self._uncertainty[0] != id(layer.data):
            # Slice by slice: a streamed (lazy) uncertainty is read once, never whole.
            means = np.array([float(np.mean(np.asarray(layer.data[z]))) for z in range(layer.data.shape[0])])
            self._uncertainty = (id(layer.data), means)
        return self._uncertainty[1]

    def suggest(self) -> None:
        """List the slices to paint next (most uncertain, else least painted); click one to go there."""
        if self.layer is None:
            return
        painted = self._counts[:, 1:].sum(axis=1)
        self.suggestions.clear()
        for z, text in suggest_slices(painted, self.slice_uncertainty()):
            item = QListWidgetItem(text)
            item.setData(Qt.UserRole, z)
            self.suggestions.addItem(item)
        rows = self.suggestions.count()
        self.suggestions.setFixedHeight(self.suggestions.sizeHintForRow(0) * rows + 2 * self.suggestions.frameWidth()
                                        if rows else 0)

    def _go_to(self, item: QListWidgetItem) -> None:
        self.viewer.dims.set_current_step(0, int(item.data(Qt.UserRole)))
