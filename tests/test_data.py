"""Data preparation, training config and masked losses (no model needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_sandseg.config import PRESETS, TrainConfig
from napari_sandseg.data import (
    Normalization,
    annotated_slices,
    make_dataset,
    pad_slices,
    sparse_targets,
    split_indices,
)
from napari_sandseg.errors import ConfigError, InputError


def test_engine_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import napari_sandseg.data, napari_sandseg.model, napari_sandseg.train, napari_sandseg.predict\n"
        "import napari_sandseg.losses, napari_sandseg.callbacks, napari_sandseg.events, napari_sandseg.config\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- normalisation -----------------------------------------------------------------------


def test_normalization_percentiles_and_apply():
    x = np.arange(1001, dtype=np.uint16)
    norm = Normalization.fit(x)
    assert norm.low == pytest.approx(5.0) and norm.high == pytest.approx(995.0)
    y = norm.apply(np.array([5, 995, 500], np.uint16))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.0, 1.0, 0.5], atol=1e-6)
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_normalization_subsample_is_close_to_exact():
    rng = np.random.default_rng(0)
    big = rng.normal(100, 20, size=(40, 100, 100)).astype(np.float32)
    approx = Normalization.fit(big, max_voxels=50_000)
    exact = np.percentile(big, [0.5, 99.5])
    assert approx.low == pytest.approx(exact[0], rel=0.03)
    assert approx.high == pytest.approx(exact[1], rel=0.03)


def test_normalization_constant_image_does_not_divide_by_zero():
    norm = Normalization.fit(np.full((2, 4, 4), 7, np.uint8))
    assert np.all(np.isfinite(norm.apply(np.full((4, 4), 7))))


# --- split ---------------------------------------------------------------------------------


def test_split_is_disjoint_complete_and_seeded():
    train, val, test = split_indices(100, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    again = split_indices(100, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = split_indices(100, 0.1, 0.2, seed=4)
    assert not np.array_equal(val, other[1])


def test_split_without_test_part():
    train, val, test = split_indices(10, 0.2, 0.0)
    assert len(test) == 0 and len(val) == 2 and len(train) == 8


def test_split_too_few_slices_says_what_would_work():
    with pytest.raises(ConfigError, match=r"2 annotated slice.*val_fraction=0.5 and test_fraction=0"):
        split_indices(2, 0.1, 0.5)
    with pytest.raises(ConfigError, match=r"1 annotated slice.*at least 2 slices"):
        split_indices(1, 0.1, 0.1)
    with pytest.raises(ConfigError, match=r"3 annotated slice.*0\.33"):
        split_indices(3, 0.5, 0.4)


# --- targets ---------------------------------------------------------------------------------


def test_sparse_targets_follow_napari_labels_convention():
    layer = np.array([[0, 1, 2], [4, 0, 3]], np.uint8)
    np.testing.assert_array_equal(sparse_targets(layer), [[-1, 0, 1], [3, -1, 2]])
    with pytest.raises(InputError):
        sparse_targets(np.array([[-1, 1]]))
    with pytest.raises(InputError):
        sparse_targets(np.array([[0.5, 1.0]]))


def test_annotated_slices():
    t = -np.ones((4, 3, 3), np.int16)
    t[1, 0, 0] = 0
    t[3] = 2
    np.testing.assert_array_equal(annotated_slices(t), [1, 3])


def test_pad_slices_reflect_and_constant():
    x = np.arange(100 * 75, dtype=np.float32).reshape(1, 100, 75)
    p = pad_slices(x)
    assert p.shape == (1, 128, 96)
    np.testing.assert_array_equal(p[:, :100, :75], x)
    np.testing.assert_array_equal(p[0, 100, :75], x[0, 98])  # reflection, edge not repeated
    t = pad_slices(np.zeros((1, 100, 75), np.int16), mode="constant", value=-1)
    assert (t[:, 100:] == -1).all() and (t[:, :, 75:] == -1).all()
    small = pad_slices(np.ones((2, 20, 20)))  # padding longer than the slice itself
    assert small.shape == (2, 32, 32) and np.all(small == 1)


# --- tf.data pipeline ----------------------------------------------------------------------------


def _targets(n=6, h=40, w=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, size=(n, h, w)).astype(np.int16)
    t[:, :5] = -1  # an unannotated band
    return t


def test_make_dataset_one_hot_ignores_unannotated_and_padding():
    t = _targets(h=40, w=36)
    images = (t + 1).astype(np.uint8) * 50
    norm = Normalization(0.0, 255.0)
    ds = make_dataset(images, t, norm, batch_size=4, shuffle=False, n_classes=3)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 64, 64, 1), (2, 64, 64, 1)]
    x, y = batches[0]
    assert y.shape == (4, 64, 64, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y[:, :5, :36].sum(-1), 0)  # not annotated
    np.testing.assert_array_equal(y[:, 40:].sum(-1), 0)  # padding
    np.testing.assert_array_equal(y[:, :, 36:].sum(-1), 0)
    np.testing.assert_array_equal(y[:, 5:40, :36].argmax(-1), t[:4, 5:, :])
    np.testing.assert_allclose(x[:, :40, :36, 0], norm.apply(images[:4]))


@pytest.mark.parametrize("crop", [None, 32])
def test_augmentation_moves_image_and_target_together(crop):
    t = _targets(n=8, h=64, w=64, k=4, seed=1)
    images = (t + 1).astype(np.float32)  # the image encodes the target exactly
    ds = make_dataset(images, t, Normalization(0.0, 1.0), 4, augment=True, shuffle=True, seed=5, crop=crop, n_classes=4)
    seen_changed = False
    for x, y in ds.as_numpy_iterator():
        size = crop or 64
        assert x.shape[1:3] == (size, size)
        annotated = y.sum(-1) > 0
        np.testing.assert_array_equal(x[..., 0][annotated], y.argmax(-1)[annotated] + 1)
        np.testing.assert_array_equal(x[..., 0][~annotated], 0)
        seen_changed |= not np.array_equal(x[..., 0], images[: len(x)])
    assert seen_changed


def test_augmentation_keeps_non_square_slices_batchable():
    t = _targets(n=4, h=64, w=32, k=2)
    images = (t + 1).astype(np.float32)
    ds = make_dataset(images, t, Normalization(0.0, 1.0), 4, augment=True, seed=1, n_classes=2)
    (x, y), = list(ds.as_numpy_iterator())
    assert x.shape == (4, 64, 32, 1)
    annotated = y.sum(-1) > 0
    np.testing.assert_array_equal(x[..., 0][annotated], y.argmax(-1)[annotated] + 1)


def test_crop_larger_than_slices_is_refused():
    t = _targets(h=40, w=40)
    with pytest.raises(ConfigError, match="crop_size=64"):
        make_dataset(t.astype(np.float32), t, Normalization(0, 1), 2, crop=64, n_classes=3)


# --- config ----------------------------------------------------------------------------------


def test_default_config_is_the_classic_recipe():
    cfg = TrainConfig()
    assert cfg == TrainConfig.classic()
    assert (cfg.backbone, cfg.optimizer, cfg.learning_rate, cfg.loss) == ("resnet34", "adam", 1e-3, "ce")
    assert (cfg.epochs, cfg.batch_size, cfg.patience, cfg.val_fraction, cfg.test_fraction) == (50, 16, 5, 0.1, 0.1)
    assert cfg.augment is False and cfg.encoder_weights is None and cfg.crop_size is None
    assert "classic" in PRESETS
    cfg.validate()


def test_config_roundtrip_and_unknown_keys():
    cfg = TrainConfig(backbone="resnet18", epochs=3, crop_size=64, loss="ce_dice")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict({"future_field": 1}, strict=False) == TrainConfig()
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.preset("nope")


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
        ({"backbone": "resnet999"}, "resnet999"),
        ({"crop_size": 100}, "multiple of 32.*96 or 128"),
        ({"loss": "mse"}, "loss"),
        ({"lr_schedule": "exp"}, "lr_schedule"),
        ({"encoder_weights": "coco"}, "encoder_weights"),
        ({"learning_rate": 0}, "learning_rate"),
    ],
)
def test_config_validate_names_the_bad_setting(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**changes).validate()


def test_config_validate_split_and_crop_against_data():
    with pytest.raises(ConfigError, match="cannot split 4 annotated slice"):
        TrainConfig(val_fraction=0.1, test_fraction=0.8).validate(n_slices=4)
    TrainConfig().validate(n_slices=5)
    with pytest.raises(ConfigError, match="larger than the slices"):
        TrainConfig(crop_size=128).validate(slice_shape=(100, 100))
    assert TrainConfig(epochs=np.int64(3)).validate() is not None  # numpy ints are fine


# --- losses ----------------------------------------------------------------------------------


def _probs(rng, shape):
    logits = rng.normal(size=shape)
    e = np.exp(logits)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_masked_crossentropy_matches_formula_and_dense_class_zero_trains():
    from napari_sandseg.losses import masked_crossentropy

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(2, 8, 8))
    ids[0, :4] = -1
    y = np.eye(3, dtype=np.float32)[ids] * (ids >= 0)[..., None]
    p = _probs(rng, (2, 8, 8, 3))
    expected = -(y * np.log(p)).sum() / y.sum()
    assert float(masked_crossentropy(y, p)) == pytest.approx(expected, rel=1e-5)
    # dense target where class 0 is a real phase: every pixel counts
    dense = np.zeros((1, 4, 4, 3), np.float32)
    dense[..., 0] = 1
    pd = _probs(rng, (1, 4, 4, 3))
    assert float(masked_crossentropy(dense, pd)) == pytest.approx(-np.log(pd[..., 0]).mean(), rel=1e-5)
    assert float(masked_crossentropy(np.zeros_like(dense), pd)) == 0.0  # nothing annotated


@pytest.mark.parametrize("loss_name", ["ce", "ce_dice"])
def test_ignored_pixels_change_neither_loss_nor_gradient(loss_name):
    from napari_sandseg._tf import tf
    from napari_sandseg.losses import get_loss

    t = tf()
    loss = get_loss(loss_name)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 4, size=(2, 16, 16))
    ignored = rng.random((2, 16, 16)) < 0.7
    ids[ignored] = -1
    y = np.eye(4, dtype=np.float32)[np.maximum(ids, 0)] * (~ignored)[..., None]
    p1 = _probs(rng, (2, 16, 16, 4))
    p2 = p1.copy()
    p2[ignored] = _probs(rng, (int(ignored.sum()), 4))  # differ only where ignored
    assert float(loss(y, p1)) == pytest.approx(float(loss(y, p2)), rel=1e-6)
    logits = t.Variable(rng.normal(size=(2, 16, 16, 4)).astype(np.float32))
    with t.GradientTape() as tape:
        value = loss(y, t.nn.softmax(logits))
    grad = tape.gradient(value, logits).numpy()
    assert np.abs(grad[ignored]).max() == 0.0
    assert np.abs(grad[~ignored]).max() > 0.0


def test_masked_accuracy_counts_annotated_pixels_only():
    from napari_sandseg.losses import masked_accuracy

    y = np.zeros((1, 1, 4, 2), np.float32)
    y[0, 0, 0, 0] = y[0, 0, 1, 1] = 1  # pixels 2, 3 ignored
    p = np.array([[[[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.1, 0.9]]]], np.float32)
    assert float(masked_accuracy(y, p)) == pytest.approx(0.5)


def test_default_recipe_is_the_project_preset_and_classic_stays_available():
    from napari_sandseg.config import DEFAULT_PRESET, TrainConfig

    default, classic = TrainConfig.default(), TrainConfig.classic()
    assert DEFAULT_PRESET == "project"
    assert (default.loss, default.augment, default.lr_schedule) == ("ce_dice", True, "cosine")
    assert (classic.loss, classic.augment, classic.lr_schedule, classic.patience) == ("ce", False, "constant", 5)
    assert (classic.backbone, classic.epochs, classic.batch_size) == ("resnet34", 50, 16)
    default.validate()


def test_sparse_crops_hold_painted_pixels_class_balanced():
    from napari_sandseg.data import crop_anchors

    targets = np.full((2, 200, 180), -1, dtype=np.int64)
    targets[:, 10:14, 10:170] = 0  # a long stroke of class 0: 640 pixels per slice
    targets[:, 150:153, 100:103] = 1  # a dab of class 1: 9 pixels
    anchors = crop_anchors(targets, 32, seed=0)
    assert anchors.shape[:2] == (2, 1024)
    windows = [targets[z, r:r + 32, c:c + 32] for z in range(2) for r, c in anchors[z]]
    assert all((w >= 0).any() for w in windows)  # every window holds something to learn from
    with_dab = np.mean([(w == 1).any() for w in windows])
    assert 0.4 < with_dab < 0.6  # the 9-pixel class is seen as often as the 640-pixel one


def test_sparse_dataset_crops_are_placed_over_painted_pixels():
    from napari_sandseg.data import make_dataset

    images = np.random.default_rng(0).integers(0, 255, (2, 256, 256)).astype(np.uint8)
    targets = np.full((2, 256, 256), -1, dtype=np.int64)
    targets[:, 200:205, 20:60] = 2
    targets[:, 30:33, 220:240] = 0
    ds = make_dataset(images, targets, Normalization(0.0, 1.0), batch_size=4, crop=64, n_classes=3, samples=32)
    painted = [float(y.numpy().sum(axis=(1, 2, 3)).min()) for _, y in ds]
    assert min(painted) > 0  # a uniform 64-px crop of these slices would mostly be empty
