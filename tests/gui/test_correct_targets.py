"""Fine-tuning targets (issue 11, outcome 4): what the user painted, the ground truth kept, the rest replayed.

The bug this guards against: a small stroke on a predicted slice made the whole slice's layer
values the target, so the model's own mistakes on the rest of the slice became training data
and that slice's ground truth was dropped.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg._widgets._correct_widget import (
    FINETUNE_CROPS,
    FINETUNE_LR_FACTOR,
    FineTuneData,
    _command_files,
    finetune_config,
    keep_corrections_in_training,
    merge_corrections,
)
from napari_sandseg._widgets._state import TrainingData
from napari_sandseg.command_lines import train_command
from napari_sandseg.classmap import ClassMap
from napari_sandseg.cli import build_parser
from napari_sandseg.training_inputs import read_training_pair
from napari_sandseg.config import TrainConfig
from napari_sandseg.data import split_indices
from napari_sandseg.io import read_mask, read_volume

pytestmark = pytest.mark.gui

SHAPE = (6, 40, 36)
Z = 3  # the corrected slice


@pytest.fixture
def scene():
    """Image, ground truth (Labels values 1..4 on every slice), a poor prediction with a stroke on it."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    truth = rng.integers(1, 5, SHAPE).astype(np.uint8)
    prediction = np.where(rng.random(SHAPE) < 0.7, truth, 2).astype(np.uint8)  # mistakes: class 2 everywhere
    layer = prediction.copy()
    stroke = np.zeros(SHAPE[1:], bool)
    stroke[10:14, 5:25] = True  # 80 pixels, painted class value 4
    layer[Z][stroke] = 4
    return image, truth, prediction, layer, {Z: stroke}


def _training(image, targets, name="img"):
    return TrainingData(image, targets, ClassMap((0, 1, 2, 3)), TrainConfig.default(), name, "masks")


def test_a_stroke_on_a_ground_truth_slice_keeps_its_truth_and_nothing_of_the_prediction(scene):
    image, truth, prediction, layer, painted = scene
    data = merge_corrections(image, layer, painted, "img", _training(image, truth))
    stroke = painted[Z]
    assert data.images.shape == SHAPE and data.corrected == [Z]
    assert np.array_equal(data.targets[Z][stroke], np.full(stroke.sum(), 4))  # the user's word wins
    assert np.array_equal(data.targets[Z][~stroke], truth[Z][~stroke])  # the slice's ground truth is kept
    wrong = prediction[Z] != truth[Z]
    assert np.any(wrong & ~stroke) and not np.any((data.targets[Z] == prediction[Z])[wrong & ~stroke])
    others = np.arange(SHAPE[0]) != Z
    assert np.array_equal(data.targets[others], truth[others])  # replayed unchanged
    assert data.n_original == SHAPE[0] - 1


def test_a_stroke_on_a_slice_without_truth_is_the_only_annotation_there(scene):
    image, truth, prediction, layer, painted = scene
    known = truth.copy()
    known[Z] = 0  # the model never saw this slice's truth
    known[1, :, :10] = 0  # and a training slice annotated in part
    data = merge_corrections(image, layer, painted, "img", _training(image, known))
    stroke = painted[Z]
    assert np.all(data.targets[Z][~stroke] == 0) and np.all(data.targets[Z][stroke] == 4)
    assert np.array_equal(data.targets[np.arange(SHAPE[0]) != Z], known[np.arange(SHAPE[0]) != Z])
    # The training stack itself is never written to
    assert np.all(known[Z] == 0)


def test_another_image_appends_the_painted_pixels_to_the_original_stack(scene):
    image, truth, _, layer, painted = scene
    original = np.random.default_rng(1).integers(0, 255, (4,) + SHAPE[1:], dtype=np.uint8)
    original_targets = np.random.default_rng(2).integers(0, 5, (4,) + SHAPE[1:]).astype(np.uint8)
    data = merge_corrections(image, layer, painted, "img", _training(original, original_targets, "other"))
    assert data.images.shape == (5,) + SHAPE[1:] and data.corrected == [4] and data.n_original == 4
    assert np.array_equal(data.images[:4], original) and np.array_equal(data.images[4], image[Z])
    assert np.array_equal(data.targets[:4], original_targets)
    assert np.array_equal(data.targets[4], np.where(painted[Z], 4, 0))

    alone = merge_corrections(image, layer, painted, "img", None)
    assert alone.images.shape == (1,) + SHAPE[1:] and np.array_equal(alone.targets[0], np.where(painted[Z], 4, 0))

    other_size = _training(original[:, :20], original_targets[:, :20], "other")
    cut = merge_corrections(image, layer, painted, "img", other_size)
    assert cut.images.shape == (1,) + SHAPE[1:] and cut.n_original == 0 and "cannot be stacked" in cut.note


def test_corrected_slices_are_moved_out_of_the_validation_part():
    n = 8
    config = TrainConfig.default(val_fraction=0.25, test_fraction=0.0, seed=0)
    _, val, _ = split_indices(n, config.val_fraction, config.test_fraction, config.seed)
    images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    targets = np.ones((n, 4, 4), np.uint8)
    data = FineTuneData(images, targets, [int(val[0])], n - 1)
    moved = keep_corrections_in_training(data, config)
    assert moved.corrected[0] not in set(val.tolist())
    assert moved.images[moved.corrected[0], 0, 0] == val[0]  # the corrected slice itself moved
    assert sorted(moved.images[:, 0, 0].tolist()) == list(range(n))  # nothing lost or doubled
    # A corrected slice already trained on stays where it is
    train = [z for z in range(n) if z not in set(val.tolist())]
    assert keep_corrections_in_training(FineTuneData(images, targets, [train[0]], n - 1), config).corrected == [train[0]]


def test_finetune_settings_are_short_and_the_command_repeats_them(tmp_path):
    base = TrainConfig.default(backbone="resnet18", batch_size=4, val_fraction=0.25, test_fraction=0.0)
    config = finetune_config(base, 2, sparse=True)
    assert (config.epochs, config.sparse, config.warmup_epochs, config.test_fraction) == (2, True, 0, 0.0)
    assert config.learning_rate == pytest.approx(base.learning_rate * FINETUNE_LR_FACTOR)
    assert config.learning_rate < base.learning_rate
    assert config.crops_per_epoch == min(base.crops_per_epoch, FINETUNE_CROPS)
    assert finetune_config(TrainConfig.classic(), 1, sparse=False).crops_per_epoch is None  # whole slices: no crops
    from napari_sandseg.cli import _train_config

    args = [str(a) for a in train_command(config, "i.tif", "m.tif", "o.keras", "init.keras")]
    assert _train_config(build_parser().parse_args(args[1:])) == config


def test_the_command_files_hold_exactly_the_sparse_targets(scene, tmp_path):
    image, truth, _, layer, painted = scene
    known = truth.copy()
    known[Z] = 0
    class_map = ClassMap((10, 20, 30, 40))  # no class value 0: --sparse can say every class
    data = merge_corrections(image, layer, painted, "img", _training(image, known))
    config = finetune_config(TrainConfig.default(), 2, sparse=True)
    images_file, masks_file, note = _command_files(data, data.targets, class_map, config, tmp_path, "ft")
    assert note == ""
    args = build_parser().parse_args([str(a) for a in train_command(
        config, images_file, masks_file, tmp_path / "ft.keras", tmp_path / "init.keras")][1:])
    assert args.sparse and np.array_equal(read_volume(args.images), data.images)
    # What `sandseg train --sparse --init-model` trains on: the same targets, in the model's classes
    _, targets, _ = read_training_pair(args.images, args.masks, sparse=True, model_map=class_map,
                                       init_model=args.init_model)
    assert np.array_equal(targets, data.targets)

    # Class value 0 cannot be written in the --sparse convention: no command, and why
    _, masks, note = _command_files(data, data.targets, ClassMap((0, 1, 2, 3)), config, tmp_path, "ft0")
    assert masks is None and "--sparse" in note
    # Every pixel annotated: a dense file with the original class values
    dense = merge_corrections(image, layer, painted, "img", _training(image, truth))
    dense_config = finetune_config(TrainConfig.default(), 2, sparse=False)
    _, masks, note = _command_files(dense, dense.targets.astype(np.int64) - 1, class_map, dense_config, tmp_path, "ftd")
    ids, read_map = read_mask(masks)
    assert note == "" and read_map.values == class_map.values and np.array_equal(ids + 1, dense.targets)
