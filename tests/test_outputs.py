"""Slab writers: a write that fails part-way is one user-facing error and leaves nothing behind."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_sandseg import outputs
from napari_sandseg.errors import OutputError


@pytest.mark.parametrize("name", ["labels.tif", "labels.zarr"])
def test_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch, name):
    def full(self, z0, slab):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs._TiffWriter, "write", full)
    monkeypatch.setattr(outputs._ZarrWriter, "write", full)
    with pytest.raises(OutputError, match="disk is full"):
        with outputs.slab_writer(tmp_path / name, (2, 4, 4), np.uint8) as writer:
            writer.write(0, np.zeros((2, 4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
