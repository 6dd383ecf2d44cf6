"""Training data: normalisation, targets, train/val/test split and the tf.data pipeline.

Targets are integer class ids ``0..K-1`` with ``-1`` meaning "not annotated". The pipeline
turns them into one-hot maps that are all-zero where a pixel is not annotated, so the masked
loss (:mod:`napari_sandseg.losses`) ignores those pixels without a separate weight map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .choices import SIZE_MULTIPLE
from .config import split_advice, split_counts
from .errors import ConfigError, InputError

#: Value of an unannotated pixel in a target array.
IGNORE = -1

#: Upper bound on voxels used to estimate the percentiles (keeps big stacks fast).
NORM_SAMPLE_VOXELS = 2_000_000


@dataclass(frozen=True)
class Normalization:
    """Percentile intensity scaling stored with the model.

    Attributes
    ----------
    low, high : float
        Intensities mapped to 0 and 1 (the 0.5 and 99.5 percentiles of the training images).
    """

    low: float
    high: float

    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        low_percentile: float = 0.5,
        high_percentile: float = 99.5,
        max_voxels: int = NORM_SAMPLE_VOXELS,
        seed: int = 0,
    ) -> "Normalization":
        """Estimate the percentiles from a random subsample of ``images``.

        Parameters
        ----------
        images : ndarray
            Training images of any shape and numeric dtype.
        low_percentile, high_percentile : float
            Percentiles mapped to 0 and 1.
        max_voxels : int
            At most this many voxels are sampled, so a 1600-slice stack takes milliseconds.
        seed : int
            Seed of the subsample.
        """
        images = np.asarray(images)
        if images.size == 0:
            raise InputError("cannot fit a normalisation to an empty image array")
        flat = images.reshape(-1)
        if flat.size > max_voxels:
            rng = np.random.default_rng(seed)
            flat = flat[rng.integers(0, flat.size, size=max_voxels)]
        low, high = np.percentile(flat.astype(np.float64), [low_percentile, high_percentile])
        if not np.isfinite(low) or not np.isfinite(high):
            raise InputError("images hold NaN or Inf values; cannot normalise them")
        if high <= low:  # constant image: avoid a division by zero, keep the mapping monotonic
            high = low + 1.0
        return cls(float(low), float(high))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` to float32, ``low`` -> 0 and ``high`` -> 1 (not clipped)."""
        x = np.asarray(x, dtype=np.float32)
        return (x - np.float32(self.low)) * np.float32(1.0 / (self.high - self.low))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalization":
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["low"]), float(data["high"]))


def split_indices(
    n: int, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomly split slice indices ``0..n-1`` into train, validation and test parts.

    Parameters
    ----------
    n : int
        Number of slices.
    val_fraction : float
        Fraction for validation, in (0, 1); at least one slice.
    test_fraction : float
        Fraction held out for the final test, in [0, 1); 0 means no test part.
    seed : int
        Seed of the permutation.

    Returns
    -------
    train, val, test : ndarray of int
        Sorted index arrays; ``test`` may be empty when ``test_fraction`` is 0.

    Raises
    ------
    ConfigError
        When the training or validation part would be empty.
    """
    n_train, n_val, n_test = split_counts(n, val_fraction, test_fraction)
    if n_train < 1 or n_val < 1:
        raise ConfigError(split_advice(n, val_fraction, test_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    val = np.sort(perm[:n_val])
    test = np.sort(perm[n_val : n_val + n_test])
    train = np.sort(perm[n_val + n_test :])
    return train, val, test


def sparse_targets(layer_labels: np.ndarray) -> np.ndarray:
    """Map a napari Labels layer to training targets.

    Parameters
    ----------
    layer_labels : ndarray of int
        0 means "not painted"; ``k > 0`` means class id ``k - 1``.

    Returns
    -------
    ndarray of int16
        Class ids, ``-1`` where nothing was painted.
    """
    labels = np.asarray(layer_labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels layer must hold integers, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("labels layer holds negative values; 0 means unpainted, k>0 class k-1")
    return labels.astype(np.int16) - 1


def dense_targets(ids: np.ndarray) -> np.ndarray:
    """Class ids of a fully annotated mask as training targets (int16, no ignored pixels)."""
    return np.asarray(ids).astype(np.int16)


def annotated_slices(targets: np.ndarray) -> np.ndarray:
    """Indices of the slices holding at least one annotated (``>= 0``) pixel."""
    t = np.asarray(targets)
    return np.flatnonzero((t >= 0).reshape(t.shape[0], -1).any(axis=1))


def padded_size(n: int, multiple: int = SIZE_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is ``>= n``."""
    return -(-n // multiple) * multiple


def pad_slices(x: np.ndarray, multiple: int = SIZE_MULTIPLE, mode: str = "reflect", value: int = 0) -> np.ndarray:
    """Pad the last two axes of ``x`` (bottom/right) up to multiples of ``multiple``.

    ``mode="reflect"`` is used for images (no artificial edges); ``mode="constant"`` with
    ``value=-1`` for targets (padding is never trained on). Reflection needs the padding to be
    shorter than the slice, so very small slices fall back to symmetric padding, repeated.
    """
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    if ph == 0 and pw == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    if ph < h and pw < w:
        return np.pad(x, widths, mode="reflect")
    return np.pad(x, widths, mode="symmetric")  # numpy repeats symmetric padding as needed


def make_dataset(
    images: np.ndarray,
    targets: np.ndarray,
    norm: Normalization,
    batch_size: int,
    augment: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    crop: int | None = None,
    *,
    n_classes: int | None = None,
    samples: int | None = None,
):
    """Build a ``tf.data.Dataset`` of ``(x, y)`` batches for ``model.fit``.

    Parameters
    ----------
    images : ndarray (N, H, W)
        Raw training slices.
    targets : ndarray (N, H, W) of int
        Class ids, ``-1`` where not annotated.
    norm : Normalization
        Applied once up front (float32 in memory: training slices only).
    batch_size : int
        Slices per batch.
    augment : bool
        Random flips and 90-degree rotations (the classes of a CT slice have no orientation).
    shuffle : bool
        Reshuffle every epoch (seeded).
    seed : int
        Seed of shuffling, crops and augmentation.
    crop : int, optional
        Train on random ``crop x crop`` windows instead of whole slices.
    n_classes : int, optional
        Number of classes (default: largest target id + 1).
    samples : int, optional
        Examples per pass (epoch): the slices are listed over and over (in a new shuffled
        order each time) and cut at ``samples``; each listing gets its own random crop and
        augmentation. Default: every slice once. The slices are not copied.

    Returns
    -------
    tf.data.Dataset
        ``x`` (B, H, W, 1) float32 and ``y`` (B, H, W, K) float32 one-hot, all-zero where
        ignored. Whole slices are padded to multiples of 32 (padding is ignored by the loss).
    """
    from ._tf import tf

    t = tf()
    images = np.asarray(images)
    targets = np.asarray(targets)
    if images.ndim != 3 or images.shape != targets.shape:
        raise InputError(f"images {images.shape} and targets {targets.shape} must both be (N, H, W)")
    if n_classes is None:
        n_classes = int(targets.max()) + 1
    x = norm.apply(images)
    y = targets.astype(np.int8 if n_classes < 128 else np.int16)
    if crop is None:
        x = pad_slices(x)
        y = pad_slices(y, mode="constant", value=IGNORE)
    else:
        h, w = images.shape[1:]
        if crop > h or crop > w:
            raise ConfigError(f"crop_size={crop} is larger than the slices ({h} x {w}); use at most {min(h, w)}")
    # Quarter turns would change the shape of non-square slices and break batching.
    square = crop is not None or x.shape[1] == x.shape[2]
    # Sparse targets (scribbles, corrections): crops are placed over painted pixels; a uniform
    # crop of a slice with 1 % painted would mostly carry nothing to learn from.
    anchors = crop_anchors(y, crop, seed) if crop is not None and (y == IGNORE).any() else None
    ds = t.data.Dataset.from_tensor_slices((x[..., None], y, np.arange(len(x), dtype=np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if samples is not None:
        if samples < 1:
            raise ConfigError(f"samples must be at least 1, got {samples}")
        ds = ds.repeat().take(samples)  # each repetition re-runs (reshuffles) the shuffle above

    # Stateless ops seeded by (seed, element counter): reproducible and safe in parallel map.
    counter = t.data.Dataset.counter()
    ds = t.data.Dataset.zip((ds, counter))

    anchor_table = None if anchors is None else t.constant(anchors)

    def transform(triple, i):
        xi, yi, slice_index = triple
        s = t.stack([t.cast(seed, t.int64), i])
        if anchor_table is not None:
            pick = t.random.stateless_uniform([], seed=s + [0, 2], minval=0, maxval=anchors.shape[1], dtype=t.int32)
            origin = anchor_table[slice_index, pick]
            xi = t.slice(xi, [origin[0], origin[1], 0], [crop, crop, 1])
            yi = t.slice(yi, [origin[0], origin[1]], [crop, crop])
        elif crop is not None:
            stacked = t.concat([xi, t.cast(yi[..., None], t.float32)], axis=-1)
            stacked = t.image.stateless_random_crop(stacked, [crop, crop, 2], seed=s)
            xi, yi = stacked[..., :1], t.cast(stacked[..., 1], yi.dtype)
        if augment:
            xi, yi = _augment(t, xi, yi, s, square)
        onehot = t.one_hot(t.cast(yi, t.int32), n_classes, dtype=t.float32)  # -1 -> all zeros
        return xi, onehot

    ds = ds.map(transform, num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(t.data.AUTOTUNE)


#: Crop origins drawn per slice for sparse targets (see :func:`crop_anchors`).
ANCHORS_PER_SLICE = 1024


def crop_anchors(targets: np.ndarray, crop: int, seed: int) -> np.ndarray:
    """Origins of ``crop x crop`` windows that each hold an annotated pixel, class-balanced.

    For every slice, :data:`ANCHORS_PER_SLICE` annotated pixels are drawn, each from a class
    picked uniformly among the classes annotated on that slice (so a thin, rarely painted phase
    is seen as often as the bulk one), and each window is placed at a random offset around its
    pixel, inside the slice.

    Parameters
    ----------
    targets : ndarray (N, H, W) of int
        Class ids, ``-1`` where not annotated.
    crop : int
        Window size.
    seed : int
        Seed of the draws.

    Returns
    -------
    ndarray (N, ANCHORS_PER_SLICE, 2) of int32
        ``(row, col)`` window origins; a slice with no annotated pixel gets uniform origins.
    """
    rng = np.random.default_rng(seed)
    n, h, w = targets.shape
    out = np.empty((n, ANCHORS_PER_SLICE, 2), dtype=np.int32)
    for z in range(n):
        rows, cols = np.nonzero(targets[z] >= 0)
        if rows.size == 0:
            out[z, :, 0] = rng.integers(0, h - crop + 1, ANCHORS_PER_SLICE)
            out[z, :, 1] = rng.integers(0, w - crop + 1, ANCHORS_PER_SLICE)
            continue
        labels = targets[z][rows, cols]
        classes = np.unique(labels)
        picked_class = rng.choice(classes, ANCHORS_PER_SLICE)
        pixel = np.empty(ANCHORS_PER_SLICE, dtype=np.int64)
        for k in classes:
            members = np.flatnonzero(labels == k)
            where = picked_class == k
            pixel[where] = rng.choice(members, int(where.sum()))
        offset = rng.integers(0, crop, size=(ANCHORS_PER_SLICE, 2))
        out[z, :, 0] = np.clip(rows[pixel] - offset[:, 0], 0, h - crop)
        out[z, :, 1] = np.clip(cols[pixel] - offset[:, 1], 0, w - crop)
    return out


def _augment(t, x, y, seed, square: bool):
    """Random flip + rotation by k*90 degrees applied identically to image and target.

    Non-square slices only get half turns so every slice keeps its shape.
    """
    y = y[..., None]
    k = t.random.stateless_uniform([], seed=seed, minval=0, maxval=4 if square else 2, dtype=t.int32)
    if not square:
        k = 2 * k
    flip = t.random.stateless_uniform([], seed=seed + [0, 1], minval=0, maxval=2, dtype=t.int32)
    x, y = t.image.rot90(x, k), t.image.rot90(y, k)
    x = t.cond(flip > 0, lambda: t.image.flip_left_right(x), lambda: x)
    y = t.cond(flip > 0, lambda: t.image.flip_left_right(y), lambda: y)
    return x, y[..., 0]
