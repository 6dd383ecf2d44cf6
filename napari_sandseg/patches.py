"""Training patches drawn on the fly from volumes that stay on disk.

For a volume too big to load (a 2000^3 scan is 8 GB of uint8 and 32 GB as float32), training
reads one ``patch x patch`` window of one slice at a time from the lazy image and target
arrays (:mod:`napari_sandseg.lazy`, memory maps, dask arrays): memory is the batch plus a
small index, whatever the volume size.

Targets follow the convention of :func:`napari_sandseg.train.train`: class ids (``-1`` =
not annotated), or with ``sparse`` a napari Labels layer (0 = unpainted). One pass over the
targets, a slab at a time, finds the annotated slices (for the train/validation/test split)
and, for sparse targets, the ``block x block`` tiles holding painted pixels; patches are then
drawn around those tiles only, so a few brush strokes in a huge volume are never lost among
empty windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .data import IGNORE, SIZE_MULTIPLE, Normalization, sparse_targets
from .errors import ConfigError, InputError

#: In-memory volumes above this size are trained from patches too: the whole-slice pipeline
#: keeps a float32 copy of the training slices (4x the uint8 volume).
PATCH_TRAIN_BYTES = 1 << 30

#: Default patch size (a multiple of 32, like every Unet input).
DEFAULT_PATCH = 256

#: Slices read per step of the annotation scan.
SCAN_SLAB = 16


def wants_patches(images: Any, targets: Any) -> bool:
    """Whether training should sample patches: an input is lazy (not a plain in-memory array) or big."""

    def lazy(a: Any) -> bool:
        return isinstance(a, np.memmap) or not isinstance(a, np.ndarray) or a.nbytes > PATCH_TRAIN_BYTES

    return lazy(images) or lazy(targets)


def patch_size(crop_size: int | None, slice_shape: tuple[int, int]) -> int:
    """``crop_size`` if set, else :data:`DEFAULT_PATCH` shrunk to the slices (multiple of 32).

    Raises
    ------
    ConfigError
        When the slices are smaller than 32 pixels or than ``crop_size``.
    """
    fit = min(slice_shape) // SIZE_MULTIPLE * SIZE_MULTIPLE
    size = crop_size if crop_size is not None else min(DEFAULT_PATCH, fit)
    if size < SIZE_MULTIPLE or size > min(slice_shape):
        raise ConfigError(
            f"patch size {size} does not fit slices of {slice_shape[0]} x {slice_shape[1]}; "
            f"use a crop_size that is a multiple of {SIZE_MULTIPLE} and at most {fit}"
        )
    return size


def to_ids(raw: np.ndarray, sparse: bool) -> np.ndarray:
    """Target values -> int16 class ids with ``-1`` = not annotated (see :mod:`napari_sandseg.data`)."""
    raw = np.asarray(raw)
    if not np.issubdtype(raw.dtype, np.integer):
        raise InputError(f"targets must be integer class ids, got dtype {raw.dtype}")
    return sparse_targets(raw) if sparse else raw.astype(np.int16)


@dataclass
class AnnotationIndex:
    """Where the annotations of a target volume are.

    Attributes
    ----------
    slices : ndarray of int
        Slices with at least one annotated pixel, ascending.
    blocks : ndarray (N, 3) of int32 or None
        ``(z, row, col)`` of the ``block x block`` tiles holding annotated pixels (sparse
        targets only; dense targets are sampled anywhere in their slices).
    block : int
        Tile size.
    """

    slices: np.ndarray
    blocks: np.ndarray | None
    block: int


def scan_targets(targets: Any, n_classes: int, sparse: bool, block: int) -> AnnotationIndex:
    """One slab-wise pass over ``targets``: range check and where the annotations are.

    Raises
    ------
    InputError
        If a value is outside the class range (named like :func:`train.prepare_targets`).
    """
    z = targets.shape[0]
    annotated = np.zeros(z, bool)
    tiles: list[np.ndarray] = []
    lo, hi = 0, -1
    for z0 in range(0, z, SCAN_SLAB):
        ids = to_ids(targets[z0 : z0 + SCAN_SLAB], sparse)
        if ids.size:
            lo, hi = min(lo, int(ids.min())), max(hi, int(ids.max()))
        mask = ids >= 0
        annotated[z0 : z0 + len(ids)] = mask.reshape(len(ids), -1).any(axis=1)
        if sparse:
            n, h, w = mask.shape
            hb, wb = -(-h // block), -(-w // block)
            padded = np.zeros((n, hb * block, wb * block), bool)
            padded[:, :h, :w] = mask
            hit = padded.reshape(n, hb, block, wb, block).any(axis=(2, 4))
            where = np.argwhere(hit).astype(np.int32)
            where[:, 0] += z0
            tiles.append(where)
    if lo < IGNORE or hi >= n_classes:
        what = "labels layer values" if sparse else "target class ids"
        valid = f"0..{n_classes}" if sparse else f"-1..{n_classes - 1}"
        shown = (lo + 1, hi + 1) if sparse else (lo, hi)
        raise InputError(f"{what} span {shown[0]}..{shown[1]} but the class map has {n_classes} classes (valid: {valid})")
    blocks = np.concatenate(tiles) if sparse and tiles else (np.empty((0, 3), np.int32) if sparse else None)
    return AnnotationIndex(np.flatnonzero(annotated), blocks, block)


class PatchSampler:
    """Draws ``(image, one-hot target)`` patches from chosen slices of lazy arrays.

    Parameters
    ----------
    images, targets : array-like (Z, Y, X)
        Numpy-sliceable; only the windows drawn are read.
    index : AnnotationIndex
        From :func:`scan_targets` on ``targets``.
    slices : ndarray of int
        The slices this sampler may use (the train, validation or test part).
    norm : Normalization
        Intensity scaling.
    patch : int
        Patch size.
    n_classes : int
        Number of classes (one-hot depth).
    sparse : bool
        Target convention (see :func:`to_ids`).
    augment : bool
        Random flips and quarter turns of each patch.
    """

    def __init__(
        self,
        images: Any,
        targets: Any,
        index: AnnotationIndex,
        slices: np.ndarray,
        norm: Normalization,
        patch: int,
        n_classes: int,
        sparse: bool,
        augment: bool = False,
    ) -> None:
        self.images, self.targets = images, targets
        self.norm, self.patch, self.n_classes = norm, patch, n_classes
        self.sparse, self.augment = sparse, augment
        self.slices = np.asarray(slices)
        self.block = index.block
        self.blocks = None if index.blocks is None else index.blocks[np.isin(index.blocks[:, 0], self.slices)]
        if len(self.slices) == 0 or (self.blocks is not None and len(self.blocks) == 0):
            raise InputError("no annotated pixels to draw training patches from")

    def corner(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """A random ``(z, y0, x0)``; with sparse targets the patch covers a whole painted tile."""
        _, h, w = self.images.shape
        p = self.patch
        if self.blocks is None:
            z = int(self.slices[rng.integers(len(self.slices))])
            return z, int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        z, by, bx = (int(v) for v in self.blocks[rng.integers(len(self.blocks))])
        return z, _start(rng, by * self.block, self.block, p, h), _start(rng, bx * self.block, self.block, p, w)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``x`` (p, p, 1) float32 and ``y`` (p, p, K) float32 one-hot (zeros = ignored)."""
        z, y0, x0 = self.corner(rng)
        window = (z, slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
        x = self.norm.apply(np.asarray(self.images[window]))
        ids = to_ids(self.targets[window], self.sparse)
        if self.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            x, ids = np.rot90(x, k), np.rot90(ids, k)
            if flip:
                x, ids = x[:, ::-1], ids[:, ::-1]
        onehot = (ids[..., None] == np.arange(self.n_classes, dtype=np.int16)).astype(np.float32)
        return np.ascontiguousarray(x[..., None], dtype=np.float32), onehot

    def generate(self, n: int, seed: int | Callable[[], int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``n`` patches from ``np.random.default_rng(seed)`` (``seed()`` if callable)."""
        rng = np.random.default_rng(seed() if callable(seed) else seed)
        for _ in range(n):
            yield self.draw(rng)

    def dataset(self, n: int, batch_size: int, seed: int, fixed: bool = False):
        """A ``tf.data.Dataset`` of ``n`` patches per iteration, batched.

        Parameters
        ----------
        n : int
            Patches per pass (one epoch).
        batch_size : int
            Patches per batch.
        seed : int
            Seed of the first pass.
        fixed : bool
            Draw the same patches on every pass (validation: comparable losses between
            epochs); otherwise each pass (epoch) draws new ones.
        """
        from ._tf import tf

        t = tf()
        epoch = [0]

        def next_seed() -> int:
            value = seed if fixed else seed + 1_000_003 * epoch[0]
            epoch[0] += 1
            return value

        p, k = self.patch, self.n_classes
        ds = t.data.Dataset.from_generator(
            lambda: self.generate(n, next_seed),
            output_signature=(t.TensorSpec((p, p, 1), t.float32), t.TensorSpec((p, p, k), t.float32)),
        )
        ds = ds.apply(t.data.experimental.assert_cardinality(n)).batch(batch_size)
        options = t.data.Options()
        # Each multi-worker process draws its own patches (its seed differs, see train); sharding
        # a generator by data would make every worker draw all patches and drop most of them.
        options.experimental_distribute.auto_shard_policy = t.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options).prefetch(t.data.AUTOTUNE)

    def stack(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches as arrays ``(n, p, p)`` of raw grey values and int16 target ids.

        Used for the held-out test: a fixed sample instead of whole (big) slices.
        """
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for _ in range(n):
            z, y0, x0 = self.corner(rng)
            window = (z, slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
            xs.append(np.asarray(self.images[window]))
            ys.append(to_ids(self.targets[window], self.sparse))
        return np.stack(xs), np.stack(ys)


def _start(rng: np.random.Generator, tile_start: int, tile: int, patch: int, size: int) -> int:
    """Random patch start such that ``[tile_start, tile_start + tile)`` lies inside the patch."""
    tile_end = min(size, tile_start + tile)
    low = max(0, tile_end - patch)
    high = min(size - patch, tile_start)
    return int(rng.integers(low, high + 1))


def fit_normalization(images: Any, slices: np.ndarray, seed: int, max_slices: int = 16) -> Normalization:
    """:meth:`Normalization.fit` on at most ``max_slices`` random training slices (read lazily)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(slices, size=min(max_slices, len(slices)), replace=False))
    return Normalization.fit(np.stack([np.asarray(images[int(z)]) for z in chosen]), seed=seed)


def patches_per_pass(slices: int, slice_shape: tuple[int, int], patch: int) -> int:
    """Patches that cover ``slices`` slices once on average (an "epoch" of whole-slice training)."""
    return max(1, int(round(slices * slice_shape[0] * slice_shape[1] / patch**2)))
