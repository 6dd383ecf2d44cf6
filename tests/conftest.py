"""Shared pytest fixtures. Keep this small; name fixtures after what they hold."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg.sample import make_sandstone


@pytest.fixture(scope="session")
def tiny_sandstone() -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic sandstone ``(image uint8, labels uint8 0..3)``, 16 x 64 x 64, seed 0."""
    return make_sandstone((16, 64, 64), seed=0)


@pytest.fixture(scope="session")
def sandstone_64() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 128 x 128 synthetic sandstone (seed 0), big enough for statistics."""
    return make_sandstone((64, 128, 128), seed=0)


def _is_gui(item: pytest.Item) -> bool:
    return "gui" in item.path.parts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the viewer tests first.

    Once TensorFlow is loaded, creating napari's Mesa OpenGL context in the same process
    segfaults; the other way round works when TensorFlow is imported through
    ``napari_sandseg._tf`` (deep-bound symbols). So every GUI test runs before any test that
    loads TensorFlow.
    """
    items.sort(key=lambda item: not _is_gui(item))  # stable: keeps the order within each group
    for item in items:
        if _is_gui(item):  # every test under tests/gui makes a viewer: `-m "not gui"` must skip them all
            item.add_marker(pytest.mark.gui)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Engine tests load TensorFlow through ``_tf`` (deep-bound), never by a bare import first."""
    if not _is_gui(item):
        from napari_sandseg._tf import tf

        tf()
