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


def labels_file(snapshot: LayerSnapshot, folder: Path, ids: np.ndarray | None = None) -> Path:
    """The Labels layer's mask file (original class values), writing it first when needed.

    Parameters
    ----------
    snapshot : LayerSnapshot
        Its ``class_map`` decodes ``ids`` to the original values.
    folder : Path
        Session folder.
    ids : ndarray, optional
        Class ids to write; without them the layer data (0 = unpainted, k = class k-1) is
        written as it is (the ``--sparse`` convention).
    """
    if snapshot.source is not None:
        return snapshot.source
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{safe_name(snapshot.name)}.tif"
    if ids is None or snapshot.class_map is None:
        return write_volume(target, snapshot.data, overwrite=True, compression="zlib")
    return write_labels(target, ids, snapshot.class_map, overwrite=True, compression="zlib")


def snapshot_layer(layer: Any, state: Any, class_map: ClassMap | None = None) -> LayerSnapshot:
    """Copy a layer's data and note its file, unless the layer was edited since it was read."""
    from .._layers import layer_source

    source = layer_source(layer)
    if source is not None and (state.is_edited(layer) or not source.exists()):
        source = None
    return LayerSnapshot(layer.name, np.array(layer.data), source, class_map)
