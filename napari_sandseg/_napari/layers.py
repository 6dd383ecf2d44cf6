"""How sandseg data looks inside napari layers (shared by the reader, writer and widgets).

A Labels layer holds ``class id + 1``: 0 means "not painted" (ignored by training, see
:func:`napari_sandseg.data.sparse_targets`) and ``k > 0`` is class id ``k - 1``. The class
map (original mask values, names, colours) travels in ``layer.metadata[CLASS_MAP_KEY]`` as
:meth:`ClassMap.to_dict`, so a writer can put the user's original values back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classmap import ClassMap
from ..errors import InputError

#: ``layer.metadata`` key of the class map (``ClassMap.to_dict()``).
CLASS_MAP_KEY = "sandseg_class_map"
#: ``layer.metadata`` key of the file a layer was read from or last written to.
SOURCE_KEY = "sandseg_source"
#: ``layer.metadata`` key marking a layer made for painting (sparse) annotations (value True).
ANNOTATION_KEY = "sandseg_annotation"
#: Name shown for layer value 0 (napari's status bar reads it from the layer's features).
UNPAINTED_NAME = "unpainted"

_UNPAINTED = (0.0, 0.0, 0.0, 0.0)
# Values outside the class map (a user painting label 9 with 4 classes) stay visible.
_UNKNOWN = (1.0, 0.0, 1.0, 1.0)


def label_colormap(class_map: ClassMap) -> Any:
    """A napari colormap giving each class its colour and leaving unpainted pixels clear.

    Parameters
    ----------
    class_map : ClassMap
        Class ``i`` is drawn for layer value ``i + 1``.

    Returns
    -------
    napari.utils.colormaps.DirectLabelColormap
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple[float, ...]] = {None: _UNKNOWN, 0: _UNPAINTED}
    for i, color in enumerate(class_map.colors):
        colors[i + 1] = tuple(color)
    return DirectLabelColormap(color_dict=colors)


def class_features(class_map: ClassMap) -> dict[str, list[Any]]:
    """A Labels layer ``features`` table naming each layer value, so napari's status bar says "quartz".

    Parameters
    ----------
    class_map : ClassMap
        Class ``i`` is layer value ``i + 1``.

    Returns
    -------
    dict
        Columns ``index`` (layer values ``0..K``; napari matches it to the pixel value) and
        ``class`` (:data:`UNPAINTED_NAME`, then the class names).
    """
    return {
        "index": list(range(class_map.n_classes + 1)),
        "class": [UNPAINTED_NAME, *class_map.names],
    }


def labels_layer_data(ids: np.ndarray) -> np.ndarray:
    """Class ids ``0..K-1`` -> Labels layer values ``1..K`` (uint8 when they fit)."""
    ids = np.asarray(ids)
    dtype = np.uint8 if ids.size == 0 or int(ids.max()) < 255 else np.uint16
    return ids.astype(dtype) + dtype(1)


def labels_layer_kwargs(class_map: ClassMap, name: str, source: str | Path | None = None) -> dict[str, Any]:
    """``add_labels`` keyword arguments that carry the class map and its colours."""
    metadata: dict[str, Any] = {CLASS_MAP_KEY: class_map.to_dict()}
    if source is not None:
        metadata[SOURCE_KEY] = str(source)
    return {
        "name": name, "colormap": label_colormap(class_map), "features": class_features(class_map),
        "metadata": metadata,
    }


def class_map_from_metadata(metadata: dict[str, Any] | None) -> ClassMap | None:
    """The class map stored in a layer's metadata, or None when there is none."""
    if not metadata or CLASS_MAP_KEY not in metadata:
        return None
    return ClassMap.from_dict(metadata[CLASS_MAP_KEY])


def default_class_map(data: np.ndarray) -> ClassMap:
    """Class map for a Labels layer that carries none: values ``1..max`` are ids ``0..max-1``.

    The original values are then the ids themselves (what a user painting labels 1..K means).
    """
    top = int(np.max(data)) if np.size(data) else 1
    return ClassMap(tuple(range(max(top, 1))))


def dense_ids(data: np.ndarray, layer_name: str, hint: str = "") -> np.ndarray:
    """Class ids of a fully labelled layer (every pixel painted).

    Parameters
    ----------
    data : ndarray
        Layer values (0 = unpainted, ``k`` = class id ``k - 1``).
    layer_name : str
        For the error message.
    hint : str, optional
        What the caller offers instead (e.g. a setting to tick), appended to the error message.

    Raises
    ------
    InputError
        If some pixels are unpainted (0), naming the layer and how many.
    """
    data = np.asarray(data)
    unpainted = int(np.count_nonzero(data == 0))
    if unpainted:
        raise InputError(
            f"layer '{layer_name}': {unpainted} pixels are unpainted (value 0); every pixel needs a "
            "class here, e.g. a segmentation or a fully labelled ground truth" + (f"; {hint}" if hint else "")
        )
    return (data - 1).astype(np.uint8 if data.max() <= 256 else np.uint16)


def layer_source(layer: Any) -> Path | None:
    """The file a layer was read from (napari's ``layer.source.path`` or our metadata)."""
    path = layer.metadata.get(SOURCE_KEY) or getattr(layer.source, "path", None)
    return Path(path) if path else None
