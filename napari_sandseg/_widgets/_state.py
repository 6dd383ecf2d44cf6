"""State shared by the sandseg widgets of one viewer: current model, training data, edits.

Every widget is its own napari dock contribution, instantiated separately; they meet here.
:func:`session_for` hands each widget the one :class:`SessionState` of its viewer (kept in a
weak mapping, so it goes away with the viewer).

The state also watches every Labels layer's ``paint`` event: it records which pixels of which slices
were hand-painted (fine-tuning learns from exactly those; a painted layer no longer matches
its file) and autosaves the edited slices, with their painted pixels, in the background.
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal

from .._napari.layers import CLASS_MAP_KEY, layer_source
from ..autosave import AutosaveWriter, EditSnapshot, autosave_dir
from ..classmap import ClassMap
from ..engine_process import EngineProcess
from ._edits import painted_pixels

#: Environment variable that moves the session folder (files saved for command lines).
ENV_SESSION_DIR = "SANDSEG_SESSION_DIR"
#: Autosave this long after the last paint stroke, so a burst of strokes is one write.
AUTOSAVE_DELAY_MS = 500

_SESSIONS: "weakref.WeakKeyDictionary[Any, SessionState]" = weakref.WeakKeyDictionary()


def session_dir() -> Path:
    """Folder for files a session writes (models, layers saved for command lines)."""
    env = os.environ.get(ENV_SESSION_DIR)
    base = Path(env) if env else Path.home() / ".cache" / "napari-sandseg" / "sessions"
    return base / time.strftime("%Y%m%d-%H%M%S")


@dataclass
class TrainingData:
    """What the current model was trained on, kept for fine-tuning and command lines."""

    images: np.ndarray
    targets: np.ndarray
    class_map: ClassMap
    config: Any
    image_name: str
    labels_name: str
    image_file: Path | None = None
    masks_file: Path | None = None


@dataclass
class ModelState:
    """The current model: its sidecar info and its file (the model itself lives in the engine process)."""

    info: Any
    path: Path
    label: str = ""


@dataclass
class LayerEdits:
    """Pixels hand-painted in one Labels layer since it was created or last segmented.

    One boolean mask per edited slice (True = painted), none for the others, so memory grows
    with the slices the user touched, not with the volume.
    """

    painted: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def slices(self) -> set[int]:
        """Indices of the edited slices."""
        return set(self.painted)

    def add(self, z: int, box: tuple[slice, slice], mask: np.ndarray, slice_shape: tuple[int, int]) -> None:
        """Record the pixels ``mask`` (within ``box`` of slice ``z``) as painted."""
        whole = self.painted.get(z)
        if whole is None:
            whole = self.painted[z] = np.zeros(slice_shape, bool)
        whole[box] |= mask


class SessionState(QObject):
    """Per-viewer state shared by the widgets.

    Signals
    -------
    model_changed()
        A model was trained, fine-tuned or loaded.
    edits_changed(str)
        The edited slices of the named Labels layer changed.
    """

    model_changed = Signal()
    edits_changed = Signal(str)

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer = weakref.ref(getattr(viewer, "__wrapped__", viewer))
        self.model: ModelState | None = None
        self.training: TrainingData | None = None
        self.folder = session_dir()
        self.autosave = AutosaveWriter(autosave_dir())
        self.engine = EngineProcess()
        self._owners = 0  # live widgets; the engine process ends with the last one
        self._edits: dict[str, LayerEdits] = {}  # keyed by layer.unique_id
        self._autosave_due: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_DELAY_MS)
        self._timer.timeout.connect(self.write_autosaves)
        viewer.layers.events.inserted.connect(self._on_inserted)
        for layer in viewer.layers:
            self._watch(layer)

    # ------------------------------------------------------------------ model

    def set_model(self, info: Any, path: Path, label: str = "") -> None:
        """Make the model saved at ``path`` the current one and tell the widgets."""
        self.model = ModelState(info, Path(path), label or Path(path).name)
        self.model_changed.emit()

    def ensure_folder(self) -> Path:
        """Create the session folder on first use and return it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    # ------------------------------------------------------------------ edits

    def edited_slices(self, layer: Any) -> list[int]:
        """Sorted slice indices hand-edited in ``layer``."""
        return sorted(self._edits.get(layer.unique_id, LayerEdits()).slices)

    def painted(self, layer: Any) -> dict[int, np.ndarray]:
        """``{z: (Y, X) bool mask}`` of the pixels hand-painted in ``layer`` (the state's own masks: do not modify)."""
        return dict(self._edits.get(layer.unique_id, LayerEdits()).painted)

    def is_edited(self, layer: Any) -> bool:
        """True when ``layer`` was painted since it was read or segmented."""
        return bool(self.edited_slices(layer))

    def mark_painted(self, layer: Any, painted: dict[int, np.ndarray]) -> None:
        """Record whole-slice masks ``{z: (Y, X) bool}`` of pixels painted in ``layer`` (added to earlier ones)."""
        edits = self._edits.setdefault(layer.unique_id, LayerEdits())
        whole = (slice(None), slice(None))
        changed = False
        for z, mask in painted.items():
            if np.any(mask):
                edits.add(int(z), whole, np.asarray(mask, bool), tuple(layer.data.shape[1:]))
                changed = True
        if changed:
            self._edited(layer)

    def clear_edits(self, layer: Any) -> None:
        """Forget the edits of ``layer`` (it was replaced by a fresh segmentation)."""
        self._edits.pop(layer.unique_id, None)
        self.edits_changed.emit(layer.name)

    def _edited(self, layer: Any) -> None:
        """``layer``'s edits changed: autosave soon and tell the widgets."""
        self._autosave_due.add(layer.unique_id)
        self._timer.start()
        self.edits_changed.emit(layer.name)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)

    def _watch(self, layer: Any) -> None:
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, event: Any) -> None:
        layer = event.source
        shape = tuple(layer.data.shape)
        edits = self._edits.setdefault(layer.unique_id, LayerEdits())
        changed = False
        for z, box, mask in painted_pixels(event.value, shape):
            edits.add(z, box, mask, shape[1:])
            changed = True
        if changed:
            self._edited(layer)

    def write_autosaves(self) -> None:
        """Hand copies of the edited slices of every due layer to the background writer."""
        viewer = self._viewer()
        due, self._autosave_due = self._autosave_due, set()
        if viewer is None:
            return
        if self.autosave.errors:
            show_error(f"autosave failed: {self.autosave.errors.pop(0)}")
        for layer in viewer.layers:
            if layer.unique_id not in due:
                continue
            painted = self.painted(layer)
            source = layer_source(layer)
            self.autosave.submit(
                EditSnapshot(
                    layer_name=layer.name,
                    shape=tuple(layer.data.shape),
                    # Copies: the user keeps painting while the writer thread compresses.
                    slices={z: np.array(layer.data[z]) for z in painted},
                    painted={z: mask.copy() for z, mask in painted.items()},
                    class_map=layer.metadata.get(CLASS_MAP_KEY),
                    source=str(source) if source else None,
                )
            )

    def acquire(self) -> None:
        """A widget starts using this state."""
        self._owners += 1

    def release(self) -> None:
        """A widget is gone: write pending autosaves; the last one also ends the engine process."""
        self._owners -= 1
        self.flush_autosaves()
        if self._owners <= 0:
            self.engine.shutdown()

    def flush_autosaves(self) -> None:
        """Write pending autosaves now and wait for them (tests, closing)."""
        try:
            self._timer.stop()
        except RuntimeError:  # Qt deleted the timer already (a script closed napari without an event loop)
            pass
        self.write_autosaves()
        self.autosave.flush()


def session_for(viewer: Any) -> SessionState:
    """The :class:`SessionState` of ``viewer``, created on first use."""
    key = getattr(viewer, "__wrapped__", viewer)
    state = _SESSIONS.get(key)
    if state is None:
        state = SessionState(viewer)
        _SESSIONS[key] = state
    return state
