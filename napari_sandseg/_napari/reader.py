"""napari reader: TIFF stacks, single TIFFs and folders of slice TIFFs.

Images open as an Image layer; label stacks as a Labels layer with one colour per class and the
class map in its metadata. A file or folder is taken for labels when its name says so ("mask",
"label") or when it holds integers with only a few distinct values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from ..classmap import ClassMap
from ..errors import SandsegError
from ..io import TIFF_SUFFIXES, read_volume
from ..lazy import LAZY_BYTES, is_zarr, nbytes_on_disk
from ..units import layer_kwargs, read_voxel_size
from .layers import SOURCE_KEY, labels_layer_data, labels_layer_kwargs

#: Integer data with at most this many distinct values (in a sample) opens as labels.
MAX_LABEL_VALUES = 16
#: Voxels looked at when counting distinct values; enough to see every phase of a CT stack.
SAMPLE_VOXELS = 1_000_000
_LABEL_WORDS = ("mask", "label")

LayerData = tuple[np.ndarray, dict[str, Any], str]


def napari_get_reader(path: Union[str, list[str]]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` when ``path`` is something we read, else None.

    Parameters
    ----------
    path : str or list of str
        A TIFF file, a folder holding TIFF slices, or a one-element list of either.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None  # several files: napari stacks them itself (or another reader does)
        path = path[0]
    p = Path(path)
    if is_zarr(p):
        return read_layers
    if p.is_dir():
        has_tiffs = any(f.suffix.lower() in TIFF_SUFFIXES for f in p.iterdir() if f.is_file())
        return read_or_notify if has_tiffs else None
    if p.suffix.lower() in TIFF_SUFFIXES:
        return read_or_notify
    return None


#: What a reader returns for "handled, no layers" (napari's null-layer sentinel).
NO_LAYERS: list = [(None,)]


def read_or_notify(path: Union[str, list[str]]) -> list[LayerData]:
    """:func:`read_layers` for napari: a file we cannot use becomes one error notification.

    Raising would make napari show "Tried opening with napari-sandseg, but failed" in a reader
    dialog with the traceback behind it; the user only needs our message (file, problem, what
    is valid). Anything that is not a :class:`SandsegError` is a bug and is raised as usual.
    """
    try:
        return read_layers(path)
    except SandsegError as exc:
        from napari.utils.notifications import show_error

        show_error(str(exc))
        return NO_LAYERS


def read_layers(path: Union[str, list[str]]) -> list[LayerData]:
    """Read one stack as an Image or Labels layer-data tuple.

    A voxel size the TIFF carries (:func:`napari_sandseg.units.read_voxel_size`) becomes the
    layer's ``scale`` and ``units``, so napari shows physical lengths (and its scale bar).
    Errors the user can fix (a corrupt or RGB file, a folder of mismatched slices) are raised
    as :class:`~napari_sandseg.errors.SandsegError`; napari shows them as a notification.
    """
    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    layers = _read(p)  # first, so a damaged file gets the reader's own message
    voxel_size = read_voxel_size(p)
    return [(data, {**kwargs, **layer_kwargs(voxel_size, _ndim(data))}, kind) for data, kwargs, kind in layers]


def _ndim(data: Any) -> int:
    """Dimensions of layer data (a multiscale image is a list of levels)."""
    return (data[0] if isinstance(data, list) else data).ndim


def _read(p: Path) -> list[LayerData]:
    """:func:`read_layers` without the voxel size."""
    if is_zarr(p) or nbytes_on_disk(p) >= LAZY_BYTES:
        # Big volumes and zarr stores open as dask arrays that napari reads slice by slice.
        from .lazy_layers import lazy_layer_data

        return lazy_layer_data(p, looks_like_labels)
    volume = read_volume(p)
    if looks_like_labels(p, volume):
        try:
            class_map = ClassMap.from_mask(volume, source=p.name)
        except SandsegError:
            # Named "mask" but not a valid one (fractional values, too many classes): an image.
            pass
        else:
            ids = class_map.encode(volume, source=p.name)
            return [(labels_layer_data(ids), labels_layer_kwargs(class_map, p.stem, source=p), "labels")]
    return [(volume, {"name": p.stem, "metadata": {SOURCE_KEY: str(p)}}, "image")]


def looks_like_labels(path: Path, volume: np.ndarray) -> bool:
    """Whether a stack should open as labels rather than as an image.

    Parameters
    ----------
    path : Path
        The file or folder; a name containing "mask" or "label" means labels.
    volume : ndarray
        The data; integers with at most :data:`MAX_LABEL_VALUES` distinct values in a sample
        of :data:`SAMPLE_VOXELS` voxels mean labels.
    """
    name = path.name.lower()
    if any(word in name for word in _LABEL_WORDS):
        return True
    if not (np.issubdtype(volume.dtype, np.integer) or volume.dtype == bool):
        return False
    flat = volume.reshape(-1)
    step = max(1, flat.size // SAMPLE_VOXELS)
    return np.unique(flat[::step]).size <= MAX_LABEL_VALUES
