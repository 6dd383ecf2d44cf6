"""Jobs that load and save models, and the file dialogs that pick them (shared by widgets)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Generator

from qtpy.QtWidgets import QFileDialog, QWidget

from ..io import atomic_write
from ..model import sidecar_path
from ._engine import EngineProcess


def load_model_job(engine: EngineProcess, path: Path, cancel: threading.Event) -> Generator[Any, None, tuple[Any, Path]]:
    """Worker: load a model artefact in the engine process (safe mode) -> ``(info, path)``."""
    info = yield from engine.run("load", Path(path), cancel=cancel)
    return info, Path(path)


def save_model_job(source: Path, target: Path, cancel: threading.Event) -> Generator[str, None, Path]:
    """Worker: copy the current model artefact (``.keras`` + ``.json`` sidecar) atomically.

    The artefact on disk is self-describing (the sidecar records the model file's checksum),
    so saving is a copy of both files; no TensorFlow needed.
    """
    yield f"saving {target}"
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        return target
    for src, dst in ((source, target), (sidecar_path(source), sidecar_path(target))):
        with atomic_write(dst, overwrite=True) as tmp:
            shutil.copyfile(src, tmp)
    return target


def ask_open_model(parent: QWidget, start: str) -> str:
    """File dialog for a ``.keras`` model to load ('' when cancelled)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Load model", start, "Keras model (*.keras)")
    return path


def ask_save_model(parent: QWidget, start: str) -> str:
    """File dialog for where to save the model (it confirms overwriting itself)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Save model", start, "Keras model (*.keras)")
    if path and not path.endswith(".keras"):
        path += ".keras"
    return path
