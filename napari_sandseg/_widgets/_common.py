"""Building blocks shared by the widgets: layer pickers, the command box, the widget base."""

from __future__ import annotations

import re
import shlex
import weakref
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

from qtpy.QtCore import QSize
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, SandsegError
from ..metrics import METRIC_LABELS
from ..units import VoxelSize, format_voxel_size, layer_voxel_size, parse_voxel_size
from ._state import SessionState, session_for
from ._workers import Job, JobFailed

#: Status line of a widget whose job was asked to stop (it stops at the next batch or slab).
STOPPING = "stopping..."
#: Most lines the command box shows before it scrolls.
COMMAND_LINES = 8


class LayerPicker(QComboBox):
    """A combo box listing the viewer's layers of one type, kept current as layers change.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    layer_type : type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    prefer : callable, optional
        ``prefer(name) -> bool``: when nothing is selected yet, pick the first layer it likes.
    follow : bool
        Also switch to each newly added layer that ``prefer`` likes (a new segmentation), until
        the user picks a layer by hand; from then on the user's pick stays (unless it is removed).
    """

    def __init__(self, viewer: Any, layer_type: type, prefer: Callable[[str], bool] | None = None,
                 follow: bool = False) -> None:
        super().__init__()
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self._follow = follow and prefer is not None
        self.user_picked = False  # set by a choice in the list (keyboard or mouse), never by code
        self._picked: Any = None  # weak reference to the selected layer, to follow its renames
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.activated.connect(self._picked_by_hand)
        self.currentTextChanged.connect(self._remember)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.reordered.connect(self.refresh)
        for layer in viewer.layers:  # layers added later are connected as they are inserted
            layer.events.name.connect(self.refresh)
        self.refresh()

    def names(self) -> list[str]:
        """Names of the matching layers, in viewer order."""
        return [layer.name for layer in self._viewer.layers if isinstance(layer, self._type)]

    def refresh(self, event: Any = None) -> None:
        """Re-list the layers, keeping the selection while it exists (renamed or not).

        A new layer that ``prefer`` likes is selected instead when the picker follows new layers
        and the user has not picked one by hand. ``currentTextChanged`` is emitted once when the
        selection changed.
        """
        adopt = None
        if event is not None and getattr(event, "type", "") == "inserted":
            # Follow renames too: a layer renamed later must show its new name.
            event.value.events.name.connect(self.refresh)
            if self._follow and not self.user_picked and isinstance(event.value, self._type) and self._prefer(event.value.name):
                adopt = event.value.name
        before = self.currentText()
        picked = self._picked() if self._picked is not None else None
        names = self.names()
        current = picked.name if picked is not None and picked in self._viewer.layers else before
        if current not in names:
            self.user_picked = False  # the user's layer is gone: follow new layers again
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if adopt in names:
            self.setCurrentText(adopt)
        elif current in names:
            self.setCurrentText(current)
        elif self._prefer is not None:
            for name in names:
                if self._prefer(name):
                    self.setCurrentText(name)
                    break
        self.blockSignals(False)
        if self.currentText() != before:
            self.currentTextChanged.emit(self.currentText())
        else:
            self._remember(self.currentText())

    def layer(self) -> Any | None:
        """The selected layer, or None."""
        name = self.currentText()
        if name and name in self._viewer.layers:
            layer = self._viewer.layers[name]
            return layer if isinstance(layer, self._type) else None
        return None

    def select(self, name: str) -> None:
        """Select the layer called ``name`` (re-listing first, in case it is new)."""
        self.refresh()
        self.setCurrentText(name)

    def _picked_by_hand(self, _index: int) -> None:
        self.user_picked = True

    def _remember(self, _text: str) -> None:
        layer = self.layer()
        self._picked = weakref.ref(layer) if layer is not None else None


class VoxelSizeField(QLineEdit):
    """The voxel size a widget works in: typed by the user, else its layer's own, shown greyed.

    One field for every widget that takes a voxel size; typed text is read by
    :func:`napari_sandseg.units.parse_voxel_size`, the rule of ``--voxel-size``.

    Parameters
    ----------
    fallback : str
        What an empty field means when the layer has no voxel size (said in the placeholder).
    """

    def __init__(self, fallback: str = "pixels") -> None:
        super().__init__()
        self._default: VoxelSize | None = None
        self._fallback = fallback
        self.setToolTip("voxel edge with its unit, e.g. 2.5um, '2.5 µm', 0.0025mm, or z,y,x: 5,2.5,2.5um; "
                        "empty: the layer's own (from its file, shown greyed); typed text overrides it")
        self.follow(None)

    def follow(self, layer: Any) -> None:
        """Default to ``layer``'s voxel size (its ``scale`` in its ``units``; none in pixels)."""
        voxel_size = None if layer is None else layer_voxel_size(layer.scale, layer.units)
        self._default = voxel_size
        if voxel_size is not None:
            self.setPlaceholderText(f"{format_voxel_size(voxel_size)} (the layer's own)")
        else:
            self.setPlaceholderText(f"e.g. 2.5um or 5,2.5,2.5um (empty: {self._fallback})")

    def typed(self) -> bool:
        """Whether the user typed a voxel size (else the layer's own is used)."""
        return bool(self.text().strip())

    def value(self) -> VoxelSize | None:
        """The typed voxel size, else the layer's own; None when neither is known.

        A typed size in pixels comes back as such (``((1.0, 1.0, 1.0), "px")`` for ``1px``).

        Raises
        ------
        ConfigError
            Naming typed text that is not a voxel size.
        """
        return parse_voxel_size(self.text()) if self.typed() else self._default


class _CommandText(QPlainTextEdit):
    """A read-only text box that asks for its maximum height (every line), not Qt's default."""

    def sizeHint(self) -> QSize:  # noqa: D102
        return QSize(super().sizeHint().width(), self.maximumHeight())


class CommandBox(QWidget):
    """Shows the equivalent ``sandseg`` command line, read-only, with a Copy button.

    The command is shown in a monospace font, broken into lines between arguments (never
    inside one) with shell line continuations, so what is shown still runs when pasted; the
    Copy button copies it as one line. A note below it says what the command cannot repeat.
    """

    def __init__(self) -> None:
        super().__init__()
        self._args: list[str] = []
        self._line = ""
        self.text = _CommandText()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.text.setLineWrapMode(QPlainTextEdit.NoWrap)  # lines are broken between arguments below
        self.text.setPlaceholderText("the equivalent sandseg command appears here")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.hide()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("copy the command line to the clipboard (as one line)")
        self.copy_button.clicked.connect(self.copy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Command line:"))
        row.addStretch(1)
        row.addWidget(self.copy_button)
        layout.addLayout(row)
        layout.addWidget(self.text)
        layout.addWidget(self.note)
        self._layout_text()

    def set_command(self, args: Sequence[str | Path], note: str = "") -> str:
        """Show ``args`` as a shell-quoted command line (and ``note`` below it); returns the line."""
        self._args = [str(a) for a in args]
        self._line = format_command(self._args)
        self._layout_text()
        self.set_note(note)
        return self._line

    def set_unavailable(self, reason: str) -> None:
        """Show no command, only why there is none."""
        self._args, self._line = [], ""
        self._layout_text()
        self.set_note(reason)

    def set_note(self, note: str) -> None:
        """The line under the command (hidden when empty)."""
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def command(self) -> str:
        """The command line, on one line (what Copy copies)."""
        return self._line

    def copy(self) -> None:
        """Put the command line on the clipboard."""
        QApplication.clipboard().setText(self.command())

    def resizeEvent(self, event: Any) -> None:  # noqa: D102
        super().resizeEvent(event)
        self._layout_text()

    def _layout_text(self) -> None:
        """Break the command to the box's width and fit the box's height to the lines."""
        metrics = self.text.fontMetrics()
        columns = max(self.text.viewport().width() // max(metrics.horizontalAdvance("m"), 1) - 1, 30)
        shown = wrap_command(self._args, columns)
        if shown != self.text.toPlainText():
            self.text.setPlainText(shown)
        lines = min(max(shown.count("\n") + 1, 2), COMMAND_LINES)
        line_height = max(metrics.height(), metrics.lineSpacing())  # one unwrapped line of the document
        # + 2: QPlainTextEdit scrolls unless its viewport is strictly taller than the lines.
        chrome = (2 * self.text.frameWidth() + int(self.text.document().documentMargin() * 2)
                  + self.text.horizontalScrollBar().sizeHint().height() + 2)
        # Every line when there is room; two (and a scroll bar) in a crowded dock.
        self.text.setMinimumHeight(2 * line_height + chrome)
        self.text.setMaximumHeight(lines * line_height + chrome)
        self.text.updateGeometry()  # its size hint is that maximum


def format_command(args: Sequence[str | Path]) -> str:
    """Shell-quote ``args`` into one command line."""
    return " ".join(shlex.quote(str(arg)) for arg in args)


def command_groups(args: Sequence[str | Path]) -> list[str]:
    """Shell-quoted words grouped so that no line break falls inside an argument.

    The program and its sub-command form the first group; each ``--flag`` starts a new group
    that keeps the values following it (``--images /data/scan.tif``).
    """
    groups: list[str] = []
    for arg in (str(a) for a in args):
        word = shlex.quote(arg)
        if groups and not arg.startswith("--"):
            groups[-1] += " " + word
        else:
            groups.append(word)
    return groups


def wrap_command(args: Sequence[str | Path], columns: int = 80) -> str:
    """``args`` as a shell command broken between argument groups to about ``columns`` characters.

    Lines end in `` \\`` and continue indented, so the text runs as it is in a POSIX shell.
    """
    lines: list[str] = []
    for group in command_groups(args):
        if lines and len(lines[-1]) + 1 + len(group) <= columns - 4:
            lines[-1] += " " + group
        else:
            lines.append(group)
    return " \\\n  ".join(lines)


def plain_metric_names(text: str) -> str:
    """``text`` with internal metric names (``val_mean_iou``) replaced by their labels."""
    names = sorted((k for k in METRIC_LABELS if "_" in k), key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: METRIC_LABELS[m.group(1)], text)


class SandsegWidget(QWidget):
    """Base of the sandseg dock widgets: viewer, shared state, and one job at a time.

    When the widget is destroyed (napari closing, dock removed) a running job is cancelled
    and waited for, so training stops cleanly at the next batch with its best checkpoint
    kept, and pending autosaves are written.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state: SessionState = session_for(napari_viewer)
        self.state.acquire()
        self.job: Job | None = None
        self.stopping = False  # Cancel was pressed; the job has not ended yet
        self._failure: BaseException | None = None  # why the current job ended without a result
        self._cancel_button: QPushButton | None = None
        self.setLayout(QVBoxLayout())
        # destroyed fires during C++ destruction: the closure must not touch `self` as a QWidget.
        holder = {"job": None, "state": self.state}
        self._holder = holder
        self.destroyed.connect(lambda *_: _shutdown(holder))

    def run_job(
        self,
        func: Callable[..., Generator],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Job:
        """Start ``func`` in a worker; :meth:`set_busy` brackets it.

        When the job ends without a result (a problem the user can fix, a cancellation, a
        bug), the status line says so instead of keeping the text of the running job.
        """
        self.stopping = False
        self._failure = None
        self.set_busy(True)
        self.job = Job(func, *args, on_yield=on_yield, on_return=on_return, on_finish=self._job_finished, owner=self,
                       **kwargs)
        # Connected after the Job's own handlers, so they run after them (before `finished`).
        self.job.worker.returned.connect(self._note_returned)
        self.job.worker.errored.connect(self._note_error)
        self._holder["job"] = self.job
        return self.job.start()

    def run_cancel_row(self, run_text: str, run_stretch: int = 0) -> tuple[QPushButton, QPushButton, QHBoxLayout]:
        """A run button wired to ``self.start`` beside a Cancel button wired to :meth:`cancel`.

        Returns
        -------
        tuple
            ``(run_button, cancel_button, row_layout)``; Cancel starts disabled.
        """
        run_button = QPushButton(run_text)
        run_button.clicked.connect(self.start)
        cancel_button = QPushButton("Cancel")
        cancel_button.setToolTip("stop at the next batch (training keeps its best weights)")
        cancel_button.clicked.connect(self.cancel)
        cancel_button.setEnabled(False)
        self._cancel_button = cancel_button
        row = QHBoxLayout()
        row.addWidget(run_button, run_stretch)
        row.addWidget(cancel_button)
        return run_button, cancel_button, row

    def _note_returned(self, value: Any) -> None:
        if isinstance(value, JobFailed):
            self._failure = value.error

    def _note_error(self, exc: BaseException) -> None:
        self._failure = exc

    def _job_finished(self) -> None:
        self.set_busy(False)
        failure, self._failure = self._failure, None
        self.stopping = False
        if failure is not None:
            self.set_status(failure_text(failure))

    def set_busy(self, busy: bool) -> None:
        """Enable/disable controls while a job runs (subclasses extend)."""

    def status_line(self) -> QLabel | None:
        """The label that says what the widget is doing (``self.status`` unless overridden)."""
        return getattr(self, "status", None)

    def set_status(self, text: str) -> None:
        """Show ``text`` in the status line."""
        label = self.status_line()
        if label is not None:
            label.setText(text)

    def show_progress(self, text: str) -> None:
        """Show a running job's progress, unless it is stopping (then "stopping..." stays)."""
        if not self.stopping:
            self.set_status(text)

    def cancel(self) -> None:
        """Ask the running job to stop at the next batch; Cancel stays disabled until it has."""
        if self.job is None or not self.job.running:
            return
        self.job.cancel()
        self.stopping = True
        if self._cancel_button is not None:
            self._cancel_button.setEnabled(False)
        self.set_status(STOPPING)

    def shutdown(self) -> None:
        """Stop a running job and write pending autosaves (also done on destruction)."""
        _shutdown(self._holder)


def failure_text(error: BaseException) -> str:
    """The status line of a job that ended without a result."""
    if isinstance(error, Cancelled):
        text = str(error)
        return text[:1].upper() + text[1:]
    if isinstance(error, SandsegError):
        return f"Failed: {error}"
    return f"Failed with an unexpected error ({type(error).__name__}); see the napari notification."


def _shutdown(holder: dict[str, Any]) -> None:
    job = holder.get("job")
    if job is not None and job.running:
        job.shutdown()
    state = holder.pop("state", None)  # once: shutdown() and destruction may both come here
    if state is not None:
        state.release()
