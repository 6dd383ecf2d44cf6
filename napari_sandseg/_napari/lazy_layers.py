"""Layer data for volumes too big to read at once: dask arrays napari pages in slice by slice.

Used by :mod:`napari_sandseg._napari.reader` for zarr stores (always) and for files of at least
:data:`napari_sandseg.lazy.LAZY_BYTES`. Opening reads headers and a few sample slices only, so
it returns at once whatever the volume size; napari then reads the slices it shows. Label
stacks are the exception: their class values must be known up front, so they are scanned once,
a slab at a time (memory stays small; time grows with the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classmap import ClassMap
from ..errors import SandsegError
from ..lazy import MappedVolume, as_dask, is_zarr, open_levels, open_volume, sample_slices, unique_values
from ..outputs import class_map_from_image_label, image_label_of
from .layers import SOURCE_KEY, labels_layer_kwargs


def lazy_layer_data(path: Path, looks_like_labels) -> list[tuple[Any, dict[str, Any], str]]:
    """One Image (or Labels) layer-data tuple backed by dask arrays.

    Parameters
    ----------
    path : Path
        TIFF file, folder of TIFF slices, or zarr / OME-Zarr store.
    looks_like_labels : callable
        ``looks_like_labels(path, sample)``: the reader's labels-vs-image rule, applied to a
        few sample slices.
    """
    levels = open_levels(path) if is_zarr(path) else [open_volume(path, check_finite=False)]
    sample = sample_slices(levels[-1])  # the smallest level: cheapest to sample
    source = {SOURCE_KEY: str(path)}
    # An OME-Zarr label image (what sandseg writes to .zarr) says so, and names and colours its classes.
    image_label = image_label_of(path) if is_zarr(path) else None
    if image_label is not None or looks_like_labels(path, sample):
        try:
            values = tuple(int(v) for v in unique_values(levels[0], limit=64))
            class_map = class_map_from_image_label(values, image_label)
        except SandsegError:
            pass  # not a valid mask (too many or fractional values): show it as an image
        else:
            codes = np.arange(1, class_map.n_classes + 1, dtype=np.uint8)  # layer value = id + 1
            known = np.asarray(class_map.values).astype(levels[0].dtype)
            data = as_dask(MappedVolume(levels[0], known, codes, source=path.name))
            return [(data, labels_layer_kwargs(class_map, path.stem, source=path), "labels")]
    finite = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    kwargs: dict[str, Any] = {
        "name": path.stem,
        "metadata": source,
        # From the sample: napari would otherwise read data to find them.
        "contrast_limits": (low, high if high > low else low + 1.0),
    }
    if len(levels) > 1:
        return [([as_dask(level) for level in levels], {**kwargs, "multiscale": True}, "image")]
    return [(as_dask(levels[0]), kwargs, "image")]


def lazy_labels(path: Path, class_map: ClassMap) -> Any:
    """A label stack of original class values on disk as lazy Labels-layer values (class id + 1).

    Parameters
    ----------
    path : Path
        TIFF stack or zarr store, e.g. written by :func:`napari_sandseg.file_prediction.predict_file`.
    class_map : ClassMap
        The classes the file holds; any other value raises when its slice is read.

    Returns
    -------
    dask.array.Array
        ``(Z, Y, X)`` uint8, one chunk per slice.
    """
    volume = open_volume(path, check_finite=False)
    codes = np.arange(1, class_map.n_classes + 1, dtype=np.uint8)  # layer value = id + 1
    known = np.asarray(class_map.values).astype(volume.dtype)
    return as_dask(MappedVolume(volume, known, codes, source=path.name))


def lazy_array(path: Path, ndim: int) -> Any:
    """An ``ndim``-D ``(Z, ...)`` array in a TIFF stack or zarr store (e.g. ``(Z, Y, X, K)`` probabilities), lazily.

    A one-slice stack may be stored without its Z axis; it comes back with it.

    Returns
    -------
    dask.array.Array
        One chunk per slice, read when napari shows it.
    """
    import dask.array as da
    import zarr

    if is_zarr(path):
        array = zarr.open_array(str(path), mode="r")
    else:
        import tifffile

        array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    shape = tuple(int(n) for n in array.shape)
    one_slice = len(shape) == ndim - 1
    chunks = shape if one_slice else (1,) + shape[1:]
    data = da.from_array(array, chunks=chunks, name=False, lock=False, asarray=True, fancy=False)
    return data[None] if one_slice else data
