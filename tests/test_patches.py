"""On-the-fly patches: only painted tiles are sampled, only the patch windows are read, train() uses them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.errors import ConfigError, InputError
from napari_sandseg.lazy import open_volume
from napari_sandseg.patches import PatchSampler, patch_size, scan_targets, wants_patches


class CountingVolume:
    """A lazy array-like that counts the voxels read through it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim, self.read = data, data.shape, data.dtype, data.ndim, 0

    def __getitem__(self, key):
        out = np.asarray(self.data[key])
        self.read += out.size
        return out


def sparse_layer(shape=(12, 96, 128)) -> np.ndarray:
    """A Labels layer with two small painted strokes (0 = unpainted)."""
    layer = np.zeros(shape, np.uint8)
    layer[3, 10:14, 100:120] = 2  # class id 1
    layer[9, 70:72, 5:9] = 4  # class id 3
    return layer


def test_sparse_patches_always_hold_painted_pixels_and_read_only_windows():
    layer = sparse_layer()
    targets = CountingVolume(layer)
    index = scan_targets(targets, n_classes=4, sparse=True, block=32)
    assert list(index.slices) == [3, 9]
    assert {tuple(b) for b in index.blocks} == {(3, 0, 3), (9, 2, 0)}
    images = CountingVolume(np.random.default_rng(0).integers(0, 255, layer.shape, dtype=np.uint8))
    targets.read = 0
    sampler = PatchSampler(images, targets, index, index.slices, Normalization(0, 255), 64, 4, sparse=True, augment=True)
    rng = np.random.default_rng(1)
    for _ in range(200):
        x, y = sampler.draw(rng)
        assert x.shape == (64, 64, 1) and y.shape == (64, 64, 4)
        assert y.sum() > 0  # a painted pixel in every patch
        assert set(np.unique(y.sum(-1))) <= {0.0, 1.0}  # one-hot or ignored
    # Memory and I/O scale with the patches, not the volume: exactly the windows were read.
    assert images.read == targets.read == 200 * 64 * 64


def test_dense_sampling_and_split_restriction():
    labels = np.random.default_rng(2).integers(0, 3, (6, 64, 64), dtype=np.uint8)
    index = scan_targets(labels, n_classes=3, sparse=False, block=32)
    assert index.blocks is None and list(index.slices) == list(range(6))
    sampler = PatchSampler(labels, labels, index, np.array([1, 4]), Normalization(0, 2), 32, 3, sparse=False)
    rng = np.random.default_rng(0)
    corners = [sampler.corner(rng) for _ in range(100)]
    assert {z for z, _, _ in corners} == {1, 4}  # validation/test slices never leak into training
    assert all(0 <= y0 <= 32 and 0 <= x0 <= 32 for _, y0, x0 in corners)


def test_errors_and_when_patches_are_used(tmp_path):
    with pytest.raises(InputError, match="class map has 4 classes"):
        scan_targets(np.full((2, 32, 32), 9, np.uint8), 4, sparse=True, block=32)
    with pytest.raises(ConfigError, match="does not fit"):
        patch_size(None, (20, 100))
    assert patch_size(None, (300, 1000)) == 256 and patch_size(64, (300, 1000)) == 64
    small = np.zeros((4, 32, 32), np.uint8)
    assert not wants_patches(small, small)
    zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=(4, 32, 32), dtype="u1")
    assert wants_patches(open_volume(tmp_path / "v.zarr"), small)


@pytest.mark.slow
def test_train_from_lazy_volume_with_sparse_strokes(tmp_path):
    from napari_sandseg.sample import make_sandstone
    from napari_sandseg.train import TrainConfig, run_training

    images, labels = make_sandstone((12, 64, 64), seed=4)
    zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=images.shape, dtype="u1")[:] = images
    layer = np.zeros_like(labels)
    layer[:, ::8, :] = labels[:, ::8, :] + 1  # painted rows in every slice
    zarr.open_array(str(tmp_path / "lab.zarr"), mode="w", shape=labels.shape, dtype="u1")[:] = layer
    cfg = TrainConfig(backbone="resnet18", epochs=2, batch_size=4, val_fraction=0.2, test_fraction=0.2, sparse=True,
                      patience=0, crop_size=32, patches_per_epoch=8, run_eagerly=True)
    result = run_training(open_volume(tmp_path / "img.zarr"), open_volume(tmp_path / "lab.zarr"),
                          ClassMap((0, 1, 2, 3)), cfg, tmp_path / "m.keras")
    assert any("32 x 32 patches read on the fly (8 per epoch)" in n for n in result.info.notes)
    assert len(result.history["loss"]) == 2 and (tmp_path / "m.keras").is_file()
    # held-out figures come from a fixed sample of test patches, annotated pixels only
    assert 0 < result.test_metrics["n_pixels"] < result.test_metrics["n_slices"] * 32 * 32


def test_cli_opens_big_training_pairs_lazily(tmp_path):
    from napari_sandseg.lazy import MappedVolume
    from napari_sandseg.training_inputs import is_big, open_big_pair

    mask = np.zeros((3, 32, 32), np.uint8)
    mask[0, :4] = 85
    mask[2, 5:9] = 255
    zarr.open_array(str(tmp_path / "m.zarr"), mode="w", shape=mask.shape, dtype="u1")[:] = mask
    zarr.open_array(str(tmp_path / "i.zarr"), mode="w", shape=mask.shape, dtype="u1")
    pair = (tmp_path / "i.zarr", tmp_path / "m.zarr")
    assert is_big(pair[0])
    images, targets, class_map = open_big_pair(*pair, sparse=True, model_map=None)
    assert isinstance(targets, MappedVolume) and class_map.values == (85, 255)  # 0 = not annotated
    assert np.array_equal(targets[:], np.select([mask == 85, mask == 255], [1, 2], 0))  # layer values
    _, dense, dense_map = open_big_pair(*pair, sparse=False, model_map=None)
    assert dense_map.values == (0, 85, 255) and np.array_equal(dense[2, 5], [2] * 32)
    with pytest.raises(InputError, match="not classes of the model"):
        open_big_pair(*pair, sparse=False, model_map=ClassMap((0, 85)))
