"""Building blocks shared by the widgets: layer pickers, the command box, the widget base."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._state import SessionState, session_for
from ._workers import Job


class LayerPicker(QComboBox):
    """A combo box listing the viewer's layers of one type, kept current as layers change.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    layer_type : type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    prefer : callable, optional
        ``prefer(name) -> bool``: when nothing is selected yet, pick the first layer it likes.
    """

    def __init__(self, viewer: Any, layer_type: type, prefer: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.reordered.connect(self.refresh)
        self.refresh()

    def names(self) -> list[str]:
        """Names of the matching layers, in viewer order."""
        return [layer.name for layer in self._viewer.layers if isinstance(layer, self._type)]

    def refresh(self, event: Any = None) -> None:
        """Re-list the layers, keeping the selection when it still exists."""
        if event is not None and getattr(event, "type", "") == "inserted":
            # Follow renames too: a layer renamed later must show its new name.
            event.value.events.name.connect(self.refresh)
        current = self.currentText()
        names = self.names()
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif self._prefer is not None:
            for name in names:
                if self._prefer(name):
                    self.setCurrentText(name)
                    break
        self.blockSignals(False)

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


class CommandBox(QWidget):
    """Shows the equivalent ``sandseg`` command line, read-only, with a Copy button."""

    def __init__(self) -> None:
        super().__init__()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlaceholderText("the equivalent sandseg command appears here")
        self.text.setMaximumHeight(72)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("copy the command line to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Command line:"))
        row.addStretch(1)
        row.addWidget(self.copy_button)
        layout.addLayout(row)
        layout.addWidget(self.text)

    def set_command(self, args: Sequence[str | Path]) -> str:
        """Show ``args`` as one shell-quoted command line; returns it."""
        line = format_command(args)
        self.text.setPlainText(line)
        return line

    def command(self) -> str:
        """The command line shown."""
        return self.text.toPlainText()

    def copy(self) -> None:
        """Put the command line on the clipboard."""
        QApplication.clipboard().setText(self.command())


def format_command(args: Sequence[str | Path]) -> str:
    """Shell-quote ``args`` into one command line (``<...>`` notes are left as they are)."""
    parts = []
    for arg in args:
        text = str(arg)
        parts.append(text if text.startswith("<") and text.endswith(">") else shlex.quote(text))
    return " ".join(parts)


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
        """Start ``func`` in a worker; :meth:`set_busy` brackets it."""
        self.set_busy(True)
        self.job = Job(func, *args, on_yield=on_yield, on_return=on_return, on_finish=self._job_finished, **kwargs)
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
        row = QHBoxLayout()
        row.addWidget(run_button, run_stretch)
        row.addWidget(cancel_button)
        return run_button, cancel_button, row

    def _job_finished(self) -> None:
        self.set_busy(False)

    def set_busy(self, busy: bool) -> None:
        """Enable/disable controls while a job runs (subclasses extend)."""

    def cancel(self) -> None:
        """Ask the running job to stop at the next batch."""
        if self.job is not None:
            self.job.cancel()

    def shutdown(self) -> None:
        """Stop a running job and write pending autosaves (also done on destruction)."""
        _shutdown(self._holder)


def _shutdown(holder: dict[str, Any]) -> None:
    job = holder.get("job")
    if job is not None and job.running:
        job.shutdown()
    state = holder.pop("state", None)  # once: shutdown() and destruction may both come here
    if state is not None:
        state.release()
