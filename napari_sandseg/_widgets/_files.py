"""Files behind layers, for command lines: the layer's own file, or a copy in the session folder.

Runs in worker threads on arrays copied from layers (never on the layers themselves).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classmap import ClassMap, value_dtype
from ..io import write_labels, write_volume
from ..targets import OVERWRITE_WIDGET, SEGMENTATION_SUFFIXES, target_problem


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


def labels_file(snapshot: LayerSnapshot, folder: Path, ids: np.ndarray | None = None) -> tuple[Path, str]:
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
    note : str
        What the file cannot say about the run ('' when it says everything; see
        :func:`write_sparse_mask`).
    """
    class_map = snapshot.class_map
    # A layer's own file serves a sparse run too unless it holds class value 0, which --sparse
    # would read as "not annotated".
    if snapshot.source is not None and (ids is not None or (class_map is not None and 0 not in class_map.values)):
        return snapshot.source, ""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{safe_name(snapshot.name)}.tif"
    if ids is None:
        return target, write_sparse_mask(target, snapshot.data, class_map)
    return write_labels(target, ids, class_map, overwrite=True, compression="zlib"), ""


def sparse_mask_problem(class_map: ClassMap | None) -> str | None:
    """Why ``sandseg train --sparse --init-model`` cannot take this annotation, or None.

    ``--sparse`` reads mask value 0 as "not annotated", and a fine-tune's mask may hold only
    the model's class values, so a painted class whose value is 0 has no way to be written.
    """
    if class_map is None or 0 in class_map.values:
        return ("no equivalent command: 'sandseg train --sparse' reads mask value 0 as 'not annotated', so "
                "fine-tuning on painted class value 0 cannot be written as a --sparse mask file")
    return None


def write_sparse_mask(path: Path, layer_values: np.ndarray, class_map: ClassMap | None) -> str:
    """Write a sparse annotation for ``sandseg train --sparse`` (0 = not annotated, else class values).

    That convention cannot say "class value 0" (0 means unannotated there), so when 0 is a
    class value the layer values themselves (0 = unpainted, k = class id k-1) are written:
    the command then trains on the same pixels, with the classes numbered 1..K.

    Returns
    -------
    str
        A note for the command line about what differs from this run ('' when nothing does).
        ``sandseg train --sparse`` takes its classes from the painted values, so classes no
        pixel is painted with are missing from its model.
    """
    layer_values = np.asarray(layer_values)
    painted = layer_values > 0
    notes = []
    if class_map is None or 0 in class_map.values:
        write_volume(path, layer_values, overwrite=True, compression="zlib")
        notes.append("--sparse reads mask value 0 as 'not annotated', so the masks file holds the painted "
                     "classes as 1..K and the command's model numbers its classes 1..K")
    else:
        values = np.zeros(layer_values.shape, value_dtype(class_map.values))
        values[painted] = class_map.decode(layer_values[painted].astype(np.int64) - 1)
        write_volume(path, values, overwrite=True, compression="zlib")
    if class_map is not None:
        present = set(np.unique(layer_values).tolist())
        unused = [v for i, v in enumerate(class_map.values) if i + 1 not in present]
        if unused:
            notes.append(f"no pixel is painted with class value(s) {unused}, so the command's model has only the "
                         f"painted classes (this run kept all {class_map.n_classes})")
    return "; ".join(notes)


def layer_file(layer: Any, state: Any) -> Path | None:
    """The file (or folder, or zarr store) a layer still matches, or None.

    None when the layer was never read from disk, was painted since, or its file is gone.
    """
    from .._napari.layers import layer_source

    source = layer_source(layer)
    if source is None or state.is_edited(layer) or not source.exists():
        return None
    return source


def is_lazy(layer: Any) -> bool:
    """Whether a layer's data is not an in-memory numpy array (dask, zarr, multiscale levels).

    Copying such data (:func:`snapshot_layer`) would read the whole volume into memory.
    """
    return bool(getattr(layer, "multiscale", False)) or not isinstance(layer.data, np.ndarray)


def snapshot_layer(layer: Any, state: Any, class_map: ClassMap | None = None) -> LayerSnapshot:
    """Copy a layer's data and note its file, unless the layer was edited since it was read."""
    return LayerSnapshot(layer.name, np.array(layer.data), layer_file(layer, state), class_map)


def default_output(image_name: str, source: Path | None, fallback: Path) -> Path:
    """Where a streamed segmentation goes by default: ``<folder>/<image>_segmentation.tif``.

    The folder is the image file's own (big scans live on disks with room for their labels)
    when it is writable, else ``fallback`` (the session folder). A zarr input gives a zarr
    output, anything else a TIFF.
    """
    folder = source.parent if source is not None and os.access(source.parent, os.W_OK) else fallback
    suffix = ".zarr" if source is not None and source.suffix.lower() == ".zarr" else ".tif"
    return folder / f"{safe_name(image_name)}_segmentation{suffix}"


def extra_output(out: Path, what: str) -> Path:
    """A companion file of a segmentation: ``scan_segmentation.tif`` -> ``scan_<what>.tif``."""
    stem = out.stem[: -len("_segmentation")] if out.stem.endswith("_segmentation") else out.stem
    return out.with_name(f"{stem}_{what}{out.suffix}")


def output_problem(path: Path, overwrite: bool, source: Path | None = None) -> str | None:
    """Why ``path`` cannot take a streamed segmentation (a message for the user), or None.

    The package's one output check (:func:`napari_sandseg.targets.target_problem`), with the
    endings a segmentation may have and the widget's overwrite box named in the message.

    Parameters
    ----------
    path : Path
        Destination: ``.tif``/``.tiff`` file or ``.zarr`` store.
    overwrite : bool
        The user agreed to replace an existing output.
    source : Path, optional
        The image file being segmented, which must never be replaced.
    """
    return target_problem(path, overwrite, suffixes=SEGMENTATION_SUFFIXES, inputs=[source], allow=OVERWRITE_WIDGET)


def human_size(nbytes: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    size = nbytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
