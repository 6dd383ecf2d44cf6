"""The live preview while training (issue 11): the slice in view, segmented as the weights learn.

It shows the slice in view, plots how much of it changed since the previous preview (a figure
that needs no labels), and *Stop and keep* keeps what the preview showed as the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg._widgets._results import preview_name
from napari_sandseg._widgets._state import session_for
from napari_sandseg._widgets._train_widget import PREVIEW_CHANGE, TrainWidget

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _train_widget(viewer, epochs: int, z: int, patience: int | None = None) -> TrainWidget:
    """A docked Train widget set for a quick resnet18 run, the viewer at slice ``z``."""
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    train.backbone.setCurrentText("resnet18")
    train.epochs.setValue(epochs)
    if patience is not None:
        train.patience.setValue(patience)
    train.batch_size.setValue(4)
    train.val_fraction.setValue(0.25)
    viewer.dims.set_current_step(0, z)
    return train


def test_training_previews_the_slice_in_view(tiny_viewer, qtbot, monkeypatch):
    viewer = tiny_viewer
    train = _train_widget(viewer, epochs=2, z=3)
    said = []
    show_progress = train.show_progress
    monkeypatch.setattr(train, "show_progress", lambda text: (said.append(text), show_progress(text)))
    assert train.cancel_button.text() == "Stop and keep"
    train.train_button.click()
    qtbot.waitUntil(lambda: train.job is not None and not train.job.running, timeout=300_000)
    qtbot.wait(50)
    image = viewer.layers[0]
    preview = viewer.layers[preview_name(image.name)]
    assert preview.data.shape == image.data.shape
    assert np.count_nonzero(preview.data[3]) == preview.data[3].size  # every pixel got a class
    assert not np.any(np.delete(preview.data, 3, axis=0))  # nothing else was previewed
    assert "segmentation" not in preview.name  # Evaluate/Correct/Export do not adopt it
    # Two epochs, two previews of slice 3 at least: the change between them is plotted and said.
    change = train.plot.series[PREVIEW_CHANGE]
    assert len(change.y) >= 1 and np.all((change.y >= 0) & (change.y <= 1))
    assert any("preview of slice 3: " in text and "% of it changed since the last one" in text for text in said)


def test_stop_and_keep_while_watching_the_preview_keeps_a_model(tiny_viewer, qtbot):
    """The user watches the preview improve and stops: the best epoch so far is the model."""
    viewer = tiny_viewer
    train = _train_widget(viewer, epochs=200, z=2, patience=0)
    train.train_button.click()
    image = viewer.layers[0]
    qtbot.waitUntil(lambda: preview_name(image.name) in viewer.layers and len(train._epoch_x) >= 2, timeout=300_000)
    shown = np.array(viewer.layers[preview_name(image.name)].data[2])
    assert np.count_nonzero(shown) == shown.size
    train.cancel_button.click()
    qtbot.waitUntil(lambda: not train.job.running, timeout=120_000)
    qtbot.wait(50)
    state = session_for(viewer)
    assert state.model is not None and state.model.path.exists()
    assert 2 <= len(train._epoch_x) < 200
    assert train.status.text().startswith("Cancelled: stopped at epoch ") and "; kept epoch " in train.status.text()


def test_the_preview_shows_its_uncertainty_when_asked_during_the_run(tiny_viewer, qtbot):
    """Ticked during training, the next previews bring the slice's uncertainty; nothing before."""
    from napari_sandseg._widgets._results import uncertainty_name

    viewer = tiny_viewer
    train = _train_widget(viewer, epochs=4, z=5, patience=0)
    image = viewer.layers[0]
    name = uncertainty_name(preview_name(image.name))
    train.train_button.click()
    qtbot.waitUntil(lambda: preview_name(image.name) in viewer.layers, timeout=300_000)
    assert name not in viewer.layers  # not asked for
    train.preview_uncertainty.setChecked(True)
    qtbot.waitUntil(lambda: not train.job.running, timeout=300_000)
    qtbot.wait(50)
    layer = viewer.layers[name]
    assert layer.visible and layer.data.shape == image.data.shape
    entropy = np.asarray(layer.data[5])
    assert np.all((entropy >= 0) & (entropy <= 1)) and entropy.max() > 0
    assert not np.any(np.delete(np.asarray(layer.data), 5, axis=0))
