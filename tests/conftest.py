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
