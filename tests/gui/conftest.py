"""Fixtures for the napari plugin tests (run under ``xvfb-run``; a viewer needs OpenGL)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg.sample import make_sandstone

#: Tiny stack for GUI tests: 8 slices of 64 x 64 (training one epoch takes seconds).
TINY_SHAPE = (8, 64, 64)


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    """Autosaves and session files go to the test's own folder, never ~/.cache."""
    monkeypatch.setenv("SANDSEG_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    monkeypatch.setenv("SANDSEG_SESSION_DIR", str(tmp_path / "session"))


@pytest.fixture
def tiny_stack() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, labels 0..3 uint8) of shape :data:`TINY_SHAPE`."""
    return make_sandstone(TINY_SHAPE, seed=1)


@pytest.fixture
def tiny_files(tmp_path, tiny_stack):
    """The tiny stack written as ``images.tif`` and ``masks.tif`` (mask values 0/85/170/255)."""
    from napari_sandseg.io import write_volume

    image, labels = tiny_stack
    images = write_volume(tmp_path / "images.tif", image)
    masks = write_volume(tmp_path / "masks.tif", (labels.astype(np.uint8) * 85))
    return images, masks


@pytest.fixture
def notes():
    """``[(severity, message)]`` of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list = []

    def record(event) -> None:
        notification = getattr(event, "value", event)
        seen.append((notification.severity, str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def tiny_viewer(make_napari_viewer, tiny_files):
    """A viewer with the tiny stack's ``images.tif`` and ``masks.tif`` opened by the plugin's reader."""
    viewer = make_napari_viewer()
    for path in tiny_files:
        viewer.open(str(path), plugin="napari-sandseg")
    return viewer
