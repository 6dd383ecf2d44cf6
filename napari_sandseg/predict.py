"""Apply a model to a volume: labels, optional class probabilities and uncertainty.

Slices of any size are reflect-padded to a multiple of 32 and cropped back. The volume is
processed in slabs of ``batch_size`` slices, so only one slab of float probabilities is in
memory at a time unless the caller asks for the whole probability volume.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .data import pad_slices, padded_size
from .errors import Cancelled, ConfigError, InputError, OutputError

Progress = Callable[[int, int], None]

#: TIFF files above this size must be BigTIFF (classic TIFF offsets are 32-bit).
_BIGTIFF_BYTES = 2**32 - 2**25


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
    """A ``tf.function`` mapping a (B, H, W, 1) float32 batch to (B, H, W, K) float32 probabilities.

    One graph serves every batch and slice size (the spatial dimensions are left open), and it
    is cached on the model so repeated calls do not retrace. With ``tta`` the softmax outputs
    of the four flips (none, left-right, up-down, both) are averaged.
    """
    cache_name = "_sandseg_predict_tta" if tta else "_sandseg_predict"
    fn = getattr(model, cache_name, None)
    if fn is not None:
        return fn
    from ._tf import tf

    t = tf()

    def run(x):
        return t.cast(model(x, training=False), t.float32)

    def run_tta(x):
        total = run(x)
        total += t.reverse(run(t.reverse(x, [2])), [2])
        total += t.reverse(run(t.reverse(x, [1])), [1])
        total += t.reverse(run(t.reverse(x, [1, 2])), [1, 2])
        return total / 4.0

    fn = t.function(run_tta if tta else run, input_signature=[t.TensorSpec([None, None, None, 1], t.float32)])
    # object.__setattr__: keep Keras from tracking the function as part of the model.
    object.__setattr__(model, cache_name, fn)
    return fn


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

    Never below 1: a single slice larger than the cap is still predicted whole.
    """
    pixels = padded_size(height) * padded_size(width)
    return max(1, min(batch_size, MAX_PIXELS_PER_CALL // pixels))


def iter_predict(
    model,
    volume: np.ndarray,
    info,
    *,
    batch_size: int = 8,
    probabilities: bool = False,
    uncertainty: bool = False,
    tta: bool = False,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Predict slab by slab, for streaming writers.

    Parameters
    ----------
    model : keras.Model
        A segmentation model (see :func:`napari_sandseg.model.load_model`).
    volume : ndarray (Z, Y, X) or (Y, X)
        Raw grey values; a memory map is read one slab at a time.
    info : ModelInfo
        Supplies the normalisation.
    batch_size : int
        Slices per model call (the slab size), lowered for big slices by :func:`slab_size`.
    probabilities, uncertainty : bool
        Also yield the float32 probabilities / normalised entropy of each slab.
    tta : bool
        Average the predictions of the four flips of each slice (4x slower, smoother).
    cancel : threading.Event, optional
        Checked before each slab; when set, :class:`Cancelled` is raised.
    progress : callable, optional
        ``progress(done_slices, total_slices)`` after each slab.

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
    fn = predict_function(model, tta)
    norm = info.normalization
    n, h, w = volume.shape
    slab = slab_size(batch_size, h, w)
    for z0 in range(0, n, slab):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"prediction cancelled after {z0} of {n} slices")
        z1 = min(n, z0 + slab)
        x = pad_slices(norm.apply(np.asarray(volume[z0:z1])))
        probs = fn(x[..., None]).numpy()[:, :h, :w]
        labels = probs.argmax(axis=-1).astype(np.uint8)
        unc = entropy(probs) if uncertainty else None
        yield z0, z1, labels, (probs if probabilities else None), unc
        if progress is not None:
            progress(z1, n)


def predict_volume(
    model,
    volume: np.ndarray,
    info,
    *,
    batch_size: int = 8,
    probabilities: bool = False,
    uncertainty: bool = False,
    tta: bool = False,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
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
    k = int(info.n_classes)
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty(volume.shape + (k,), np.float32) if probabilities else None
    unc = np.empty(volume.shape, np.float32) if uncertainty else None
    for z0, z1, lab, p, u in iter_predict(
        model, volume, info, batch_size=batch_size, probabilities=probabilities,
        uncertainty=uncertainty, tta=tta, cancel=cancel, progress=progress,
    ):
        labels[z0:z1] = lab
        if probs is not None:
            probs[z0:z1] = p
        if unc is not None:
            unc[z0:z1] = u
    return PredictResult(labels, probs, unc)


def predict_file(
    model_path: str | os.PathLike,
    images_path: str | os.PathLike,
    out_path: str | os.PathLike,
    probabilities_path: str | os.PathLike | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Progress | None = None,
    *,
    uncertainty_path: str | os.PathLike | None = None,
    tta: bool = False,
    cancel: threading.Event | None = None,
) -> Path:
    """Segment a volume file into a label stack, streamed slab by slab.

    A TIFF or zarr input is read a slab at a time (:func:`napari_sandseg.lazy.open_volume`)
    and each output is written slab by slab (:func:`napari_sandseg.outputs.slab_writer`) into a
    temp file or store that replaces the destination only when complete, so neither the volume
    nor its probabilities need to fit in memory. Outputs ending in ``.zarr`` are zarr stores,
    anything else (Big)TIFF stacks.

    Parameters
    ----------
    model_path : path-like
        ``.keras`` model with its sidecar.
    images_path : path-like
        Volume to segment (anything :func:`napari_sandseg.io.read_volume` reads, or a zarr /
        OME-Zarr store).
    out_path : path-like
        Label stack to write, with the original class values (``ClassMap.decode``).
    probabilities_path : path-like, optional
        Also write the (Z, Y, X, K) float32 probabilities here.
    uncertainty_path : path-like, optional
        Also write the (Z, Y, X) float32 normalised entropy here.
    batch_size : int
        Slices per model call.
    tta : bool
        Flip test-time augmentation.
    overwrite : bool
        Replace existing output files (else :class:`OutputError`).
    cancel, progress
        As in :func:`iter_predict`; on cancel no output file is written.

    Returns
    -------
    Path
        ``out_path``.
    """
    import contextlib

    from .io import read_volume_lazy
    from .lazy import is_zarr, open_volume
    from .model import check_compatible, load_model
    from .outputs import slab_writer

    outputs = {"out_path": out_path, "probabilities_path": probabilities_path, "uncertainty_path": uncertainty_path}
    targets = {k: Path(v) for k, v in outputs.items() if v is not None}
    resolved = [p.resolve() for p in targets.values()]
    if len(set(resolved)) != len(resolved):
        raise OutputError(f"output paths must differ, got {[str(p) for p in targets.values()]}")
    if Path(images_path).resolve() in resolved:
        raise OutputError(f"{images_path}: an output path may not overwrite the input volume")
    for p in targets.values():  # fail before the slow part
        if p.exists() and not overwrite:
            raise OutputError(f"{p} already exists; pass overwrite=True to replace it")

    # A bad image file fails before the slow model load. Files are read through tifffile's
    # zarr store, not a memory map: touched map pages would count as resident memory.
    volume = read_volume_lazy(images_path) if Path(images_path).is_dir() and not is_zarr(images_path) else open_volume(images_path)
    model, info = load_model(model_path)
    try:
        check_compatible(info, volume)
    except InputError as exc:
        raise InputError(f"{Path(images_path).name}: {exc}") from None
    z, h, w = volume.shape
    k = info.n_classes
    label_dtype = info.class_map.decode(np.zeros(1, np.uint8)).dtype

    layouts = {
        "out_path": ((z, h, w), label_dtype),
        "probabilities_path": ((z, h, w, k), np.float32),
        "uncertainty_path": ((z, h, w), np.float32),
    }
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(slab_writer(p, *layouts[name], overwrite=overwrite)) for name, p in targets.items()
        }
        for z0, _, labels, probs, unc in iter_predict(
            model, volume, info, batch_size=batch_size, probabilities="probabilities_path" in writers,
            uncertainty="uncertainty_path" in writers, tta=tta, cancel=cancel, progress=progress,
        ):
            writers["out_path"].write(z0, info.class_map.decode(labels))
            if probs is not None:
                writers["probabilities_path"].write(z0, probs)
            if unc is not None:
                writers["uncertainty_path"].write(z0, unc)
    return Path(out_path)
