"""Apply a model to a volume: labels, optional class probabilities and uncertainty.

Slices of any size are reflect-padded to a multiple of 32 and cropped back. The volume is
processed in slabs of ``batch_size`` slices, so only one slab of float probabilities is in
memory at a time unless the caller asks for the whole probability volume. A padded slice
larger than ``tile_size`` on a side is predicted in overlapping tiles whose borders (the
halo) are discarded, so the network's activations never exceed one tile whatever the slice
size, and the stitched result has no seams.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .choices import (
    AUTO,
    DEFAULT_PRECISION,
    DEFAULT_TILE_HALO,
    DEFAULT_TILE_SIZE,
    PREDICT_BATCH_SIZE,
    SIZE_MULTIPLE,
    resolve_precision,
)
from .data import pad_slices, padded_size
from .errors import Cancelled, ConfigError, InputError
from .segmentation_model import SegmentationModel, as_model, compiled

Progress = Callable[[int, int], None]


@dataclass
class PredictResult:
    """Output of :func:`predict_volume`.

    Attributes
    ----------
    labels : ndarray (Z, Y, X) uint8
        Class ids (``info.class_map.decode`` gives the original values).
    probabilities : ndarray (Z, Y, X, K) float32 or None
        Softmax probabilities, when asked for.
    uncertainty : ndarray (Z, Y, X) float32 or None
        Normalised entropy of the probabilities, 0 (certain) .. 1 (uniform), when asked for.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


def _as_volume(volume) -> np.ndarray:
    """Accept (Z, Y, X) or a single (Y, X) slice (memmaps stay memmaps)."""
    if not hasattr(volume, "ndim"):
        volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise InputError(f"volume must be (Z, Y, X) or (Y, X) grayscale, got shape {tuple(volume.shape)}")
    if not (np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating)):
        raise InputError(f"volume dtype {volume.dtype} is not numeric")
    return volume


def predict_function(model, tta: bool = False):
    """The compiled prediction graph of the Keras ``model`` (kept for it; see
    :func:`napari_sandseg.segmentation_model.compiled`)."""
    return compiled(model, tta)



def resolve_predict_precision(precision: str = AUTO, gpu: bool | None = None) -> str:
    """The precision prediction computes in on this machine.

    Parameters
    ----------
    precision : {"float32", "mixed_bfloat16", "auto"}
        ``"auto"`` becomes ``"mixed_bfloat16"`` on a CPU with native bfloat16
        (:func:`napari_sandseg.choices.native_bf16`) when TensorFlow sees no GPU, else
        ``"float32"``; the others are returned as they are.
    gpu : bool, optional
        Whether prediction runs on a GPU; None asks TensorFlow (only when it matters).

    Returns
    -------
    str
        ``"float32"`` or ``"mixed_bfloat16"``.

    Raises
    ------
    ConfigError
        For a precision not in :data:`napari_sandseg.choices.PRECISIONS` (every prediction path
        resolves it here, through :func:`napari_sandseg.choices.resolve_precision`).
    """
    from ._tf import has_gpu

    return resolve_precision(precision, has_gpu if gpu is None else lambda: gpu)


def model_at(model, precision: str):
    """The Keras model of ``model`` computing in ``precision``: the model itself, or its kept twin.

    Parameters
    ----------
    model : SegmentationModel or keras.Model
        A segmentation model; it is not changed (see
        :meth:`napari_sandseg.segmentation_model.SegmentationModel.at`).
    precision : {"float32", "mixed_bfloat16", "auto"}
        See :func:`resolve_predict_precision`.
    """
    return as_model(model).at(resolve_predict_precision(precision))


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Normalised Shannon entropy over the last axis, in [0, 1] (float32)."""
    p = np.clip(probabilities, 1e-12, 1.0)
    k = probabilities.shape[-1]
    h = -(probabilities * np.log(p)).sum(axis=-1)
    return np.clip(h / np.log(k), 0.0, 1.0).astype(np.float32) if k > 1 else np.zeros(h.shape, np.float32)


#: Most padded pixels sent to the model in one call. The UNet's activations cost about 400 MB
#: per million input pixels (measured: 8 slices of 1024 x 1024 peaked at 4.5 GB RSS), so this
#: caps a call near half a gigabyte whatever the slice size; small slices still batch fully.
MAX_PIXELS_PER_CALL = 2**20


def slab_size(batch_size: int, height: int, width: int) -> int:
    """Slices per model call: ``batch_size``, lowered so a call stays under :data:`MAX_PIXELS_PER_CALL`.

    Never below 1: a single slice larger than the cap goes alone, and :func:`iter_predict` cuts
    it into tiles of at most ``tile_size`` pixels a side.
    """
    pixels = padded_size(height) * padded_size(width)
    return max(1, min(batch_size, MAX_PIXELS_PER_CALL // pixels))


#: Tiles and slices are aligned to this: the Unet downsamples 5 times, so only shifts by a
#: multiple of 32 leave its pooling grid, and hence its output, unchanged.
_ALIGN = SIZE_MULTIPLE


@dataclass(frozen=True)
class AxisTiles:
    """How one padded slice axis is cut into tiles.

    Attributes
    ----------
    starts : tuple of int
        First pixel of each tile (multiples of 32; the first is 0, the last tile ends at the
        axis end).
    size : int
        Tile length (a multiple of 32), the same for every tile of the axis.
    cuts : tuple of int
        ``len(starts) + 1`` boundaries: tile ``i`` supplies pixels ``cuts[i]:cuts[i + 1]``,
        at least ``halo`` pixels away from its own inner borders.
    """

    starts: tuple[int, ...]
    size: int
    cuts: tuple[int, ...]


def tile_axis(length: int, tile_size: int, halo: int) -> AxisTiles:
    """Cut a padded axis of ``length`` pixels into the fewest tiles of at most ``tile_size``.

    Neighbouring tiles overlap by at least ``2 * halo`` and the seam is put in the middle of the
    overlap, so every kept pixel has ``halo`` pixels of real context on each inner side; the
    outer tiles start and end at the axis ends, exactly where the whole slice does. The tile is
    shrunk to the smallest multiple of 32 that still covers the axis with that many tiles, so a
    slice just over ``tile_size`` does not pay for two full tiles.

    Parameters
    ----------
    length : int
        Axis length, a multiple of 32 (see :func:`napari_sandseg.data.padded_size`).
    tile_size : int
        Largest tile, a multiple of 32 with ``tile_size >= 2 * halo + 32``.
    halo : int
        Context pixels discarded at each inner tile border (>= 0).

    Returns
    -------
    AxisTiles
        A single tile spanning the axis when ``length <= tile_size``.
    """
    if length <= tile_size:
        return AxisTiles((0,), length, (0, length))
    blocks, max_blocks = length // _ALIGN, tile_size // _ALIGN
    max_stride = (tile_size - 2 * halo) // _ALIGN  # in blocks; keeps every overlap >= 2 * halo
    n = 1 + -(-(blocks - max_blocks) // max_stride)
    size = next(t for t in range(-(-(length + (n - 1) * 2 * halo) // (n * _ALIGN)), max_blocks + 1)
                if -(-(blocks - t) // (n - 1)) * _ALIGN <= t * _ALIGN - 2 * halo)
    starts = tuple(i * (blocks - size) // (n - 1) * _ALIGN for i in range(n))
    size *= _ALIGN
    seams = tuple((nxt + prev + size) // 2 for prev, nxt in zip(starts, starts[1:]))
    return AxisTiles(starts, size, (0, *seams, length))


def check_tiling(tile_size: int | None, tile_halo: int) -> None:
    """Validate the tiling arguments of :func:`iter_predict` (:class:`ConfigError` if bad)."""
    if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer))
                                  or tile_size < _ALIGN or tile_size % _ALIGN):
        raise ConfigError(f"tile_size must be None or a multiple of {_ALIGN} >= {_ALIGN}, got {tile_size!r}")
    if isinstance(tile_halo, bool) or not isinstance(tile_halo, (int, np.integer)) or tile_halo < 0:
        raise ConfigError(f"tile_halo must be an integer >= 0, got {tile_halo!r}")
    if tile_size is not None and tile_size < 2 * tile_halo + _ALIGN:
        raise ConfigError(f"tile_size ({tile_size}) must be at least 2 * tile_halo + {_ALIGN} "
                          f"({2 * tile_halo + _ALIGN} with tile_halo {tile_halo}) so that tiles advance")


def _check_cancel(cancel: threading.Event | None, done: int, total: int) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set (``done`` of ``total`` slices written)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"prediction cancelled after {done} of {total} slices")


def _predict_tiled(fn, x: np.ndarray, shape: tuple[int, int], tiles: tuple[AxisTiles, AxisTiles], *,
                   probabilities: bool, uncertainty: bool, check_cancel: Callable[[], None]
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Labels (and probabilities / entropy) of a padded slab ``x`` (n, H, W), tile by tile.

    Tiles of all slices of the slab go to the model together, up to
    :data:`MAX_PIXELS_PER_CALL` pixels per call; each tile's kept part is written straight
    into the outputs, so a slice's full probability array exists only when asked for.
    """
    h, w = shape
    ty, tx = tiles
    boxes = [(z, iy, ix) for z in range(x.shape[0]) for iy in range(len(ty.starts)) for ix in range(len(tx.starts))]
    per_call = max(1, MAX_PIXELS_PER_CALL // (ty.size * tx.size))
    labels = np.empty((x.shape[0], h, w), np.uint8)
    probs = unc = None
    for b0 in range(0, len(boxes), per_call):
        check_cancel()
        batch = boxes[b0:b0 + per_call]
        inputs = np.stack([x[z, ty.starts[iy]:ty.starts[iy] + ty.size, tx.starts[ix]:tx.starts[ix] + tx.size]
                           for z, iy, ix in batch])
        out = fn(inputs[..., None]).numpy()
        if probabilities and probs is None:
            probs = np.empty(labels.shape + out.shape[-1:], np.float32)
        if uncertainty and unc is None:
            unc = np.empty(labels.shape, np.float32)
        for (z, iy, ix), p in zip(batch, out):
            y0, y1 = ty.cuts[iy], min(ty.cuts[iy + 1], h)
            x0, x1 = tx.cuts[ix], min(tx.cuts[ix + 1], w)
            if y0 >= y1 or x0 >= x1:  # a tile that holds only bottom/right padding
                continue
            kept = p[y0 - ty.starts[iy]:y1 - ty.starts[iy], x0 - tx.starts[ix]:x1 - tx.starts[ix]]
            labels[z, y0:y1, x0:x1] = kept.argmax(axis=-1)
            if probs is not None:
                probs[z, y0:y1, x0:x1] = kept
            if unc is not None:
                unc[z, y0:y1, x0:x1] = entropy(kept)
    return labels, probs, unc


def _with_info(model, info) -> tuple[SegmentationModel, object]:
    """``(model object, the info to predict with)``: ``info``, else the model object's own."""
    model = as_model(model, info)
    info = model.info if info is None else info
    if info is None:
        raise ConfigError("a bare Keras model needs its ModelInfo (info=) to predict: its normalisation")
    return model, info


def iter_predict(
    model,
    volume: np.ndarray,
    info=None,
    *,
    batch_size: int = PREDICT_BATCH_SIZE,
    probabilities: bool = False,
    uncertainty: bool = False,
    tta: bool = False,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_halo: int = DEFAULT_TILE_HALO,
    precision: str = DEFAULT_PRECISION,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Predict slab by slab, for streaming writers.

    Parameters
    ----------
    model : SegmentationModel or keras.Model
        A segmentation model (:class:`~napari_sandseg.segmentation_model.SegmentationModel`,
        or a bare Keras model with its ``info``); its precision twin and compiled graph are
        kept with it for the next call.
    volume : ndarray (Z, Y, X) or (Y, X)
        Raw grey values; a memory map is read one slab at a time.
    info : ModelInfo, optional
        Supplies the normalisation; by default the :class:`SegmentationModel`'s own.
    batch_size : int
        Slices per model call (the slab size), lowered for big slices by :func:`slab_size`.
    probabilities, uncertainty : bool
        Also yield the float32 probabilities / normalised entropy of each slab.
    tta : bool
        Average the predictions of the four flips of each slice (4x slower, smoother).
    cancel : threading.Event, optional
        Checked before each slab (and each model call on a tiled slice); when set,
        :class:`Cancelled` is raised.
    progress : callable, optional
        ``progress(done_slices, total_slices)`` after each slab.
    tile_size : int or None
        Largest model input side (a multiple of 32). A padded slice longer than this on a side
        is cut along that side into overlapping tiles (:func:`tile_axis`); smaller slices are
        predicted whole, as before. None predicts every slice whole.
    tile_halo : int
        Pixels discarded at each inner tile border, so seams do not show (see
        :data:`DEFAULT_TILE_HALO`).
    precision : {"float32", "mixed_bfloat16", "auto"}
        Arithmetic of the model (:func:`model_at`); probabilities are float32 either way.
        float32 (the default) is exact and the same on every machine; bfloat16 is faster on
        CPUs that compute it natively and agrees on nearly every label.

    Yields
    ------
    z_start, z_stop : int
        Slab range in the volume.
    labels : ndarray (n, Y, X) uint8
    probs : ndarray (n, Y, X, K) float32 or None
    unc : ndarray (n, Y, X) float32 or None
    """
    volume = _as_volume(volume)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_tiling(tile_size, tile_halo)
    model, info = _with_info(model, info)
    fn = predict_function(model_at(model, precision), tta)
    norm = info.normalization
    n, h, w = volume.shape
    slab = slab_size(batch_size, h, w)
    tiles = None
    if tile_size is not None:
        tiles = (tile_axis(padded_size(h), tile_size, tile_halo), tile_axis(padded_size(w), tile_size, tile_halo))
        if len(tiles[0].starts) == len(tiles[1].starts) == 1:
            tiles = None  # the slice fits in one tile: predicted whole, as without tiling
    for z0 in range(0, n, slab):
        _check_cancel(cancel, z0, n)
        z1 = min(n, z0 + slab)
        x = pad_slices(norm.apply(np.asarray(volume[z0:z1])))
        if tiles is not None:
            labels, probs, unc = _predict_tiled(
                fn, x, (h, w), tiles, probabilities=probabilities, uncertainty=uncertainty,
                check_cancel=functools.partial(_check_cancel, cancel, z0, n),
            )
        else:
            probs = fn(x[..., None]).numpy()[:, :h, :w]
            labels = probs.argmax(axis=-1).astype(np.uint8)
            unc = entropy(probs) if uncertainty else None
        yield z0, z1, labels, (probs if probabilities else None), unc
        if progress is not None:
            progress(z1, n)


def predict_volume(
    model,
    volume: np.ndarray,
    info=None,
    *,
    batch_size: int = PREDICT_BATCH_SIZE,
    probabilities: bool = False,
    uncertainty: bool = False,
    tta: bool = False,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_halo: int = DEFAULT_TILE_HALO,
    precision: str = DEFAULT_PRECISION,
) -> PredictResult:
    """Segment a whole volume in memory.

    Parameters are those of :func:`iter_predict`. Only ``probabilities=True`` allocates a
    float32 array for the whole volume (Z*Y*X*K*4 bytes); labels and uncertainty are small.

    Returns
    -------
    PredictResult

    Raises
    ------
    Cancelled
        When ``cancel`` is set before the last slab.
    """
    volume = _as_volume(volume)
    model, info = _with_info(model, info)
    k = int(info.n_classes)
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty(volume.shape + (k,), np.float32) if probabilities else None
    unc = np.empty(volume.shape, np.float32) if uncertainty else None
    for z0, z1, lab, p, u in iter_predict(
        model, volume, info, batch_size=batch_size, probabilities=probabilities,
        uncertainty=uncertainty, tta=tta, cancel=cancel, progress=progress, tile_size=tile_size,
        tile_halo=tile_halo, precision=precision,
    ):
        labels[z0:z1] = lab
        if probs is not None:
            probs[z0:z1] = p
        if unc is not None:
            unc[z0:z1] = u
    return PredictResult(labels, probs, unc)
