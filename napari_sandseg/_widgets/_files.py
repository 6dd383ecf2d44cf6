"""Files behind layers, for command lines: the layer's own file, or a copy in the session folder.

Runs in worker threads on arrays copied from layers (never on the layers themselves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classmap import ClassMap
from ..io import write_labels, write_volume


@dataclass
class LayerSnapshot:
    """A copy of what a job needs from a layer, taken on the main thread."""

    name: str
    data: np.ndarray
    source: Path | None  # the file the layer still matches, if any
    class_map: ClassMap | None = None


def safe_name(name: str) -> str:
    """A layer name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def image_file(snapshot: LayerSnapshot, folder: Path) -> Path:
    """The image layer's file, writing it to ``folder`` first when it has none."""
    if snapshot.source is not None:
        return snapshot.source
    folder.mkdir(parents=True, exist_ok=True)
    return write_volume(folder / f"{safe_name(snapshot.name)}.tif", snapshot.data, overwrite=True)


def labels_file(snapshot: LayerSnapshot, folder: Path, ids: np.ndarray | None = None) -> tuple[Path, bool]:
    """The Labels layer's mask file, writing it to ``folder`` first when the layer has none.

    Parameters
    ----------
    snapshot : LayerSnapshot
        Its ``class_map`` decodes class ids to the original values.
    folder : Path
        Session folder.
    ids : ndarray, optional
        Class ids of a fully labelled layer, written with their original values. Without them
        the layer is a sparse annotation, written as ``sandseg train --sparse`` reads it.

    Returns
    -------
    path : Path
    exact : bool
        False when a sparse annotation could not be written in the ``--sparse`` convention
        (see :func:`write_sparse_mask`).
    """
    if snapshot.source is not None:
        return snapshot.source, True
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{safe_name(snapshot.name)}.tif"
    if ids is None:
        return target, write_sparse_mask(target, snapshot.data, snapshot.class_map)
    return write_labels(target, ids, snapshot.class_map, overwrite=True, compression="zlib"), True


def write_sparse_mask(path: Path, layer_values: np.ndarray, class_map: ClassMap | None) -> bool:
    """Write a sparse annotation for ``sandseg train --sparse`` (0 = not annotated, else class values).

    That convention cannot say "class value 0" (0 means unannotated there), so when 0 is a
    class value the layer values themselves (0 = unpainted, k = class id k-1) are written
    instead and False is returned, for the command line to say so.
    """
    layer_values = np.asarray(layer_values)
    if class_map is None or 0 in class_map.values:
        write_volume(path, layer_values, overwrite=True, compression="zlib")
        return False
    painted = layer_values > 0
    values = np.zeros(layer_values.shape, class_map.decode(np.zeros(1, np.uint8)).dtype)
    values[painted] = class_map.decode(layer_values[painted].astype(np.int64) - 1)
    write_volume(path, values, overwrite=True, compression="zlib")
    return True


#: Appended to a command line whose --sparse masks file holds layer values (see write_sparse_mask).
SPARSE_NOTE = "<note: masks hold layer values (0 = unpainted, k = class k-1); --sparse cannot express class value 0>"


def snapshot_layer(layer: Any, state: Any, class_map: ClassMap | None = None) -> LayerSnapshot:
    """Copy a layer's data and note its file, unless the layer was edited since it was read."""
    from .._layers import layer_source

    source = layer_source(layer)
    if source is not None and (state.is_edited(layer) or not source.exists()):
        source = None
    return LayerSnapshot(layer.name, np.array(layer.data), source, class_map)
