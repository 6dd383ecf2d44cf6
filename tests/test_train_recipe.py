"""The project recipe in the engine: warm-up, best epoch by validation mean IoU, bfloat16, crops.

Schedule, IoU and callback checks need no model; the training runs are tiny (resnet18, 64x64 or
160x160 slices, 1-2 epochs, ``run_eagerly`` to skip graph tracing).
"""

from __future__ import annotations

import queue
from collections import Counter

import numpy as np
import pytest

from napari_sandseg.callbacks import RunState, make_callbacks, validation_mean_iou
from napari_sandseg.classmap import ClassMap
from napari_sandseg.config import TrainConfig, native_bf16
from napari_sandseg.data import Normalization, make_dataset, split_indices
from napari_sandseg.metrics import evaluate
from napari_sandseg.model import load_model, model_precision
from napari_sandseg.predict import predict_volume
from napari_sandseg.sample import make_sandstone
from napari_sandseg.train import learning_rate, train

from _helpers import drain

CLASS_MAP = ClassMap((0, 1, 2, 3))


# --- learning-rate schedule ------------------------------------------------------------------


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_warmup_then_cosine_schedule_values():
    # 5 epochs of 10 steps: steps 0..10 rise from 1e-4 to 1e-3, then 40 steps of cosine to 0.
    cfg = TrainConfig(epochs=5, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=1)
    rates = _rates(learning_rate(cfg, 10), [0, 5, 10, 30, 50, 60])
    np.testing.assert_allclose(rates, [1e-4, 5.5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)


def test_warmup_then_constant_schedule_values():
    cfg = TrainConfig(epochs=5, learning_rate=2e-3, lr_schedule="constant", warmup_epochs=2)
    rates = _rates(learning_rate(cfg, 10), [0, 10, 20, 35, 49, 80])
    np.testing.assert_allclose(rates, [2e-4, 1.1e-3, 2e-3, 2e-3, 2e-3, 2e-3], rtol=1e-6)


def test_schedules_without_warmup_are_unchanged():
    cosine = learning_rate(TrainConfig(epochs=5, lr_schedule="cosine"), 10)
    np.testing.assert_allclose(_rates(cosine, [0, 25, 50]), [1e-3, 5e-4, 0.0], atol=1e-9)
    assert learning_rate(TrainConfig(epochs=5), 10) == 1e-3
    assert learning_rate(TrainConfig(epochs=5, lr_schedule="plateau"), 10) == 1e-3


# --- validation mean IoU ---------------------------------------------------------------------


def _onehot(ids, k):
    ids = np.asarray(ids)
    return np.eye(k, dtype=np.float32)[np.maximum(ids, 0)] * (ids >= 0)[..., None]


def test_validation_mean_iou_is_one_confusion_matrix_over_all_batches():
    # Annotated (truth, prediction) pairs give the confusion matrix [[2, 1, 0], [0, 3, 0], [1, 0, 1]]:
    # IoU = 2/4, 3/4, 1/2 -> mean 0.58333. Pixels with truth -1 are not annotated and are ignored
    # (their predictions would add false positives).
    truth_1, pred_1 = [[0, 0, 1, -1, -1]], [[0, 0, 1, 2, 2]]
    truth_2, pred_2 = [[0, 1, 1, 2, 2]], [[1, 1, 1, 0, 2]]
    k = 3
    batches = [(np.asarray(pred_1), _onehot(truth_1, k)), (np.asarray(pred_2), _onehot(truth_2, k))]

    def predict(x):  # the "model": the batch's x are the predicted ids
        return _onehot(x, k)

    value = validation_mean_iou(predict, batches, k)
    assert value == pytest.approx((2 / 4 + 3 / 4 + 1 / 2) / 3)
    # Not the mean of per-batch figures (batch 1 alone is perfect on its annotated pixels).
    per_batch = np.mean([validation_mean_iou(predict, [b], k) for b in batches])
    assert abs(per_batch - value) > 0.05
    assert np.isnan(validation_mean_iou(predict, [(np.zeros((1, 2), int), _onehot([[-1, -1]], k))], k))


def _drive_callbacks(monitor, ious, val_losses, patience=0):
    """Run make_callbacks' callbacks over stub epochs; returns (state, saved epochs, stop flags, events)."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = RunState(None, monitor)
    events: queue.Queue = queue.Queue()
    saved: list[int] = []
    stub = iter(ious)
    callbacks = make_callbacks(state, events, len(ious), 1, saved.append, patience, False, lambda: next(stub))
    cbl = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False  # as fit() sets it
    cbl.on_train_begin()
    stops = []
    for epoch, val_loss in enumerate(val_losses):
        model.layers[0].kernel.assign(np.full((2, 1), epoch, np.float32))  # weights that say which epoch
        cbl.on_epoch_begin(epoch)
        cbl.on_train_batch_end(0, {"loss": 1.0})
        cbl.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        stops.append(bool(model.stop_training))
    return state, saved, stops, [events.get_nowait() for _ in range(events.qsize())]


def test_monitor_val_mean_iou_keeps_the_epoch_with_the_best_iou():
    ious = [0.50, 0.70, 0.60, 0.65]
    val_losses = [0.9, 0.8, 0.7, 0.6]  # the loss alone would pick the last epoch
    state, saved, _, events = _drive_callbacks("val_mean_iou", ious, val_losses)
    assert state.best_epoch == 1 and state.best_val == pytest.approx(0.70)
    assert saved == [0, 1]  # checkpoints written when the IoU improved, never after
    assert float(state.best_weights[0][0, 0]) == 1.0  # the weights of epoch 1
    assert state.history["val_mean_iou"] == pytest.approx(ious)
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.logs["val_mean_iou"] for e in epochs] == pytest.approx(ious)
    assert "validation mean IoU 0.700" in epochs[1].message


def test_monitor_val_loss_still_keeps_the_lowest_loss():
    state, saved, _, _ = _drive_callbacks("val_loss", [0.5, 0.7, 0.6, 0.65], [0.9, 0.8, 0.7, 0.6])
    assert state.best_epoch == 3 and saved == [0, 1, 2, 3]
    assert state.history["val_mean_iou"] == pytest.approx([0.5, 0.7, 0.6, 0.65])  # logged either way


def test_early_stopping_follows_the_iou_upwards():
    _, _, stops, _ = _drive_callbacks("val_mean_iou", [0.5, 0.7, 0.6, 0.8], [0.9, 0.8, 0.7, 0.6], patience=1)
    assert stops == [False, False, True, True]  # epoch 2 did not beat 0.7: stop (loss was still falling)


# --- crops per epoch -------------------------------------------------------------------------


def test_make_dataset_samples_lists_every_slice_evenly_with_its_own_crop():
    n, size = 3, 64
    images = np.repeat(np.arange(n, dtype=np.float32)[:, None, None] * 10, size, 1).repeat(size, 2)
    images += np.random.default_rng(0).random(images.shape).astype(np.float32)  # crops differ in content
    targets = np.zeros(images.shape, np.int16)
    ds = make_dataset(images, targets, Normalization(0.0, 1.0), 4, shuffle=True, seed=1, crop=32, n_classes=2,
                      samples=8)
    xs = np.concatenate([x.numpy() for x, _ in ds])
    assert xs.shape == (8, 32, 32, 1)
    slices = Counter((xs[:, 0, 0, 0] // 10).astype(int).tolist())
    assert sorted(slices) == [0, 1, 2] and sorted(slices.values()) == [2, 3, 3]
    assert len({x.tobytes() for x in xs}) == 8  # each listing cut at its own place


# --- training runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    images, labels = make_sandstone((8, 64, 64), seed=5)  # at least 8 slices: keep 6
    return images[:6], labels[:6]


@pytest.mark.slow
def test_project_preset_on_small_slices_trains_whole_slices_warms_up_and_keeps_best_iou(small, tmp_path):
    images, labels = small
    cfg = TrainConfig.default(backbone="resnet18", epochs=2, batch_size=2, val_fraction=0.35, test_fraction=0.0,
                              warmup_epochs=2, precision="float32", run_eagerly=True)
    events, result = drain(train(images, labels, CLASS_MAP, cfg, tmp_path / "p.keras"))
    start = events[0]
    assert start.batches == 2  # 4 whole training slices / batch 2 (no crops on 64 x 64 slices)
    info = load_model(tmp_path / "p.keras")[1]
    assert info.config["crop_size"] is None and info.config["crops_per_epoch"] is None
    assert info.config["warmup_epochs"] == 2 and info.config["monitor"] == "val_mean_iou"
    assert any("trained whole" in note for note in info.notes)
    # end of epoch 1 = step 2 of a 4-step warm-up: halfway from 1e-4 to 1e-3; then 1e-3
    np.testing.assert_allclose(result.history["learning_rate"], [5.5e-4, 1e-3], rtol=1e-5)
    ious = result.history["val_mean_iou"]
    assert len(ious) == 2 and all(0.0 <= v <= 1.0 for v in ious)
    assert result.best_epoch == int(np.argmax(ious))
    assert any(f"best weights of epoch {result.best_epoch + 1} (val_mean_iou" in n for n in info.notes)
    # The logged figure is the mean IoU of the best weights on the validation slices, from one
    # confusion matrix over all their pixels (float32: the saved model computes exactly so).
    _, val_idx, _ = split_indices(len(images), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    pred = predict_volume(result.model, images[val_idx], result.info, batch_size=cfg.batch_size).labels
    assert evaluate(labels[val_idx], pred, 4)["mean_iou"] == pytest.approx(ious[result.best_epoch], abs=1e-6)


@pytest.mark.slow
def test_project_preset_crops_128_from_larger_slices_with_crops_per_epoch(tmp_path):
    images, labels = make_sandstone((8, 160, 160), seed=2)
    images, labels = images[:4], labels[:4]
    cfg = TrainConfig.default(backbone="resnet18", epochs=1, batch_size=4, val_fraction=0.25, test_fraction=0.0,
                              crops_per_epoch=6, run_eagerly=True)
    events, result = drain(train(images, labels, CLASS_MAP, cfg, tmp_path / "c.keras"))
    assert events[0].batches == 2  # ceil(6 crops / 4); one per slice would be ceil(3 / 4) = 1
    assert len([e for e in events if e.kind == "batch"]) == 2
    info = load_model(tmp_path / "c.keras")[1]
    assert info.config["crop_size"] == 128 and info.config["crops_per_epoch"] == 6
    assert any("128 x 128 crops (6 per epoch)" in note for note in info.notes)
    assert info.config["precision"] == ("mixed_bfloat16" if native_bf16() else "float32")  # auto on this CPU


@pytest.mark.slow
def test_mixed_bfloat16_trains_saves_in_float32_reloads_and_leaks_no_policy(small, tmp_path, monkeypatch):
    import keras

    import napari_sandseg.model as model_module

    built = []
    original = model_module.build_model

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(model_module, "build_model", spy)
    images, labels = small
    cfg = TrainConfig(backbone="resnet18", epochs=1, batch_size=2, val_fraction=0.35, test_fraction=0.0,
                      precision="mixed_bfloat16", run_eagerly=True)
    out = tmp_path / "bf16.keras"
    _, result = drain(train(images, labels, CLASS_MAP, cfg, out))
    trained = built[0]
    assert model_precision(trained) == "mixed_bfloat16"
    assert trained.layers[-2].compute_dtype == "bfloat16" and trained.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    assert result.info.config["precision"] == "mixed_bfloat16"
    assert any("trained in mixed_bfloat16" in note for note in result.info.notes)

    model, info = load_model(out)  # a fresh model from the file
    assert model_precision(model) == "float32" and model_precision(result.model) == "float32"
    before = predict_volume(result.model, images, result.info).labels
    after = predict_volume(model, images, info).labels
    np.testing.assert_array_equal(before, after)
    # The float32 copy predicts what the bfloat16 model it was made from predicts, up to bfloat16
    # rounding (after 1 epoch many pixels are near ties, so a few labels flip).
    p_bf16 = predict_volume(trained, images, info, probabilities=True).probabilities
    p_f32 = predict_volume(model, images, info, probabilities=True).probabilities
    assert np.abs(p_bf16 - p_f32).mean() < 0.02  # measured 0.009
    assert (p_bf16.argmax(-1) == after).mean() > 0.95  # measured 0.979
