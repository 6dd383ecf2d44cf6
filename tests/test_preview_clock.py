"""When live previews are due during training (issue 11): soon after the start, then within budget."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg.callbacks import PREVIEW_EVERY_S, PREVIEW_FIRST_S, PREVIEW_SHARE, PreviewClock
from napari_sandseg.metrics import changed_share


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_preview_comes_soon_after_training_starts_not_at_the_epoch_end():
    t = FakeClock()
    clock = PreviewClock(t)
    assert not clock.due()  # training has not started
    clock.start()
    t.now = PREVIEW_FIRST_S - 0.1
    assert not clock.due()
    t.now = PREVIEW_FIRST_S
    assert clock.due()


def test_later_previews_keep_to_their_share_of_the_training_time():
    t = FakeClock()
    clock = PreviewClock(t)
    clock.start()
    t.now = PREVIEW_FIRST_S

    def cheap() -> str:
        t.now += 0.5
        return "shown"

    assert clock.take(cheap) == "shown" and clock.cost == pytest.approx(0.5)
    t.now += PREVIEW_EVERY_S - 0.1
    assert not clock.due()
    t.now += 0.1
    assert clock.due()

    def costly() -> None:
        t.now += 3.0  # a slow preview: 3 s may be at most PREVIEW_SHARE of the time between two

    clock.take(costly)
    wait = 3.0 / PREVIEW_SHARE
    assert wait > PREVIEW_EVERY_S
    t.now += wait - 0.1
    assert not clock.due()
    t.now += 0.1
    assert clock.due()
    # Over a long run the previews cost at most the share (plus the first one).
    spent, total = 0.0, 0.0
    clock = PreviewClock(t)
    clock.start()
    for _ in range(10_000):
        t.now += 0.25  # a batch
        total += 0.25
        if clock.due():
            before = t.now
            clock.take(costly)
            spent += t.now - before
            total += t.now - before
    assert spent / total <= PREVIEW_SHARE + 3.0 / total


def test_changed_share_counts_the_pixels_whose_class_changed():
    a = np.zeros((4, 5), dtype=np.int64)
    b = a.copy()
    assert changed_share(a, b) == 0.0
    b[0, :2] = 3
    assert changed_share(a, b) == pytest.approx(2 / 20)
    with pytest.raises(ValueError, match=r"\(4, 5\) and \(5, 4\)"):
        changed_share(a, b.T)


@pytest.mark.slow
def test_long_epochs_send_previews_on_batch_events_too(monkeypatch, tmp_path):
    """Within an epoch a batch event carries the preview when one is due; the epoch's end always does."""
    from napari_sandseg import callbacks
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.config import TrainConfig
    from napari_sandseg.sample import make_sandstone
    from napari_sandseg.train import train

    monkeypatch.setattr(callbacks, "PREVIEW_FIRST_S", 0.0)
    monkeypatch.setattr(callbacks, "PREVIEW_EVERY_S", 0.0)
    monkeypatch.setattr(callbacks, "PREVIEW_SHARE", 1e9)  # due at every batch end, whatever it costs
    images, labels = make_sandstone((8, 64, 64), seed=1)
    cfg = TrainConfig(backbone="resnet18", epochs=2, batch_size=2, val_fraction=0.25, test_fraction=0.0, patience=0)
    asked = []

    def slice_in_view() -> int:
        asked.append(len(asked))
        return 3

    refreshed = []  # n_batches of each precise-BN refresh, in order
    refresh = callbacks.FreshStatistics.refresh

    def spy(self, model, n_batches=callbacks.REFRESH_BATCHES):
        refreshed.append(n_batches)
        return refresh(self, model, n_batches)

    monkeypatch.setattr(callbacks.FreshStatistics, "refresh", spy)
    events = list(train(images, labels, ClassMap((0, 1, 2, 3)), cfg, tmp_path / "m.keras", preview=slice_in_view))
    batches = [e for e in events if e.kind == "batch"]
    epochs = [e for e in events if e.kind == "epoch"]
    with_preview = [e for e in batches if e.preview is not None]
    per_epoch = batches[0].batches
    assert per_epoch >= 3
    # every batch but each epoch's last (the epoch event previews that state)
    assert [(e.epoch, e.batch) for e in with_preview] == [(e, b) for e in range(2) for b in range(per_epoch - 1)]
    assert all(e.preview is not None and e.preview_z == 3 for e in epochs)
    assert len(asked) == len(with_preview) + len(epochs)
    for e in with_preview:
        assert e.preview.shape == (64, 64) and int(e.preview.max()) < 4
    # From scratch the moving statistics are young: the first preview (before any validation)
    # recomputes them for the current weights, cheaply, rather than showing what 0/1 statistics give.
    assert refreshed[0] == callbacks.PREVIEW_REFRESH_BATCHES
