"""The live preview while training (issue 11): the slice in view, segmented after every epoch."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg._widgets._results import preview_name
from napari_sandseg._widgets._train_widget import TrainWidget

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_training_previews_the_slice_in_view(tiny_viewer, qtbot):
    viewer = tiny_viewer
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    assert train.cancel_button.text() == "Stop and keep"
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(2)
    train.batch_size.setValue(4)
    train.val_fraction.setValue(0.25)
    viewer.dims.set_current_step(0, 3)
    train.train_button.click()
    qtbot.waitUntil(lambda: train.job is not None and not train.job.running, timeout=300_000)
    qtbot.wait(50)
    image = viewer.layers[0]
    preview = viewer.layers[preview_name(image.name)]
    assert preview.data.shape == image.data.shape
    assert np.count_nonzero(preview.data[3]) == preview.data[3].size  # every pixel got a class
    assert not np.any(np.delete(preview.data, 3, axis=0))  # nothing else was previewed
    assert "segmentation" not in preview.name  # Evaluate/Correct/Export do not adopt it
