"""Put segmentation results into layers on the main thread, updating the same layers on re-runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from .._layers import SOURCE_KEY, labels_layer_data, labels_layer_kwargs
from ..classmap import ClassMap


@dataclass
class Segmentation:
    """Prediction for slices ``z_start .. z_start + len(labels)`` of an image layer."""

    image_name: str
    class_map: ClassMap
    labels: np.ndarray  # (n, Y, X) class ids
    z_start: int = 0
    probabilities: np.ndarray | None = None  # (n, Y, X, K)
    uncertainty: np.ndarray | None = None  # (n, Y, X)
    full_shape: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)


def segmentation_name(image_name: str) -> str:
    """Name of the Labels layer that holds an image's segmentation."""
    return f"{image_name} segmentation"


def _put(viewer: Any, name: str, block: np.ndarray, z0: int, full_shape: tuple[int, ...], kind: str,
         kwargs: dict[str, Any]) -> Any:
    """Write ``block`` at slice ``z0`` of layer ``name``, creating or replacing it as needed."""
    layer_type = Labels if kind == "labels" else Image
    whole = block.shape[0] == full_shape[0]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and (not isinstance(existing, layer_type) or tuple(existing.data.shape) != tuple(full_shape)
                                 or existing.data.dtype != block.dtype):
        viewer.layers.remove(existing)  # wrong type, shape or dtype: replace rather than corrupt
        existing = None
    if existing is None:
        data = block if whole else np.zeros(full_shape, block.dtype)
        if not whole:
            data[z0:z0 + block.shape[0]] = block
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        return add(data, name=name, **kwargs)
    if whole:
        existing.data = block
    else:
        existing.data[z0:z0 + block.shape[0]] = block
        existing.refresh()
    for key, value in kwargs.get("metadata", {}).items():
        existing.metadata[key] = value
    return existing


def show_segmentation(viewer: Any, seg: Segmentation, state: Any, keep: dict[int, np.ndarray] | None = None) -> Any:
    """Show a segmentation (and its probability / uncertainty layers) in ``viewer``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    seg : Segmentation
    state : SessionState
        Told that the layer's hand edits were replaced (unless kept).
    keep : dict, optional
        ``{z: layer slice}`` hand-corrected slices to put back over the new prediction, so a
        re-segmentation never throws away the user's corrections.

    Returns
    -------
    napari.layers.Labels
        The segmentation layer.
    """
    full = seg.full_shape or seg.labels.shape
    kwargs = labels_layer_kwargs(seg.class_map, segmentation_name(seg.image_name))
    name = kwargs.pop("name")
    # Half transparent, so the grey values under a class boundary stay visible while correcting.
    layer = _put(viewer, name, labels_layer_data(seg.labels), seg.z_start, full, "labels", {**kwargs, "opacity": 0.5})
    layer.colormap = kwargs["colormap"]
    layer.metadata.pop(SOURCE_KEY, None)  # no longer what any file holds
    if keep:
        for z, values in keep.items():
            layer.data[z] = values
        layer.refresh()
    elif seg.labels.shape[0] == full[0]:
        state.clear_edits(layer)
    if seg.probabilities is not None:
        from napari.utils.colormaps import Colormap

        for k, class_name in enumerate(seg.class_map.names):
            color = seg.class_map.colors[k]
            cmap = Colormap([[0, 0, 0, 1], list(color[:3]) + [1]], name=f"sandseg-{class_name}")
            _put(viewer, f"{seg.image_name} P({class_name})", np.ascontiguousarray(seg.probabilities[..., k]), seg.z_start,
                 full, "image", {"colormap": cmap, "contrast_limits": (0.0, 1.0), "blending": "additive", "visible": False})
    if seg.uncertainty is not None:
        _put(viewer, f"{seg.image_name} uncertainty", seg.uncertainty, seg.z_start, full, "image",
             {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive", "visible": False})
    # The segmentation stays on top so the probability layers never hide it.
    viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    viewer.layers.selection.active = layer  # ready for painting corrections
    return layer
