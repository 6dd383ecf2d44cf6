"""napari writer: a Labels layer -> TIFF stack holding the original class values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import write_labels
from ..units import layer_voxel_size
from .layers import class_map_from_metadata, default_class_map, dense_ids


def labels_to_values(data: np.ndarray, metadata: dict[str, Any] | None, name: str) -> tuple[np.ndarray, Any]:
    """Class ids and class map of a Labels layer's data, ready for :func:`write_labels`.

    Parameters
    ----------
    data : ndarray
        Layer values: 0 unpainted, ``k`` = class id ``k - 1``.
    metadata : dict
        Layer metadata; its class map gives the original values. Without one the layer values
        are read as ids + 1 of classes ``0..max-1``.
    name : str
        Layer name, for error messages.

    Raises
    ------
    InputError
        If pixels are unpainted or a value lies outside the class map.
    """
    data = np.asarray(data)
    class_map = class_map_from_metadata(metadata) or default_class_map(data)
    return class_ids(data, class_map, name), class_map


def class_ids(data: np.ndarray, class_map: Any, name: str) -> np.ndarray:
    """Class ids of Labels-layer values (``k`` = id ``k - 1``), checked against ``class_map``.

    Raises
    ------
    InputError
        If pixels are unpainted or a value lies outside the class map.
    """
    ids = dense_ids(data, name)
    if ids.size and int(ids.max()) >= class_map.n_classes:
        raise InputError(
            f"layer '{name}': holds label {int(ids.max()) + 1} but its class map has "
            f"{class_map.n_classes} classes (labels 1..{class_map.n_classes})"
        )
    return ids


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for Labels layers.

    napari's save dialog has already asked before replacing a file, so an existing file is
    overwritten here (atomically: the old file survives any failure). A layer shown in a
    physical unit keeps its scale as the TIFF's voxel size (ImageJ ``spacing``/``unit``).

    Returns
    -------
    list of str
        The written path.
    """
    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_suffix(".tif")
    ids, class_map = labels_to_values(data, attributes.get("metadata"), attributes.get("name", "labels"))
    voxel_size = layer_voxel_size(attributes.get("scale", ()), attributes.get("units", ()))
    write_labels(target, ids, class_map, overwrite=True, compression="zlib", voxel_size=voxel_size)
    return [str(target)]
