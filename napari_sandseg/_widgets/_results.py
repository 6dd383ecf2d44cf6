"""Put segmentation results into layers on the main thread, updating the same layers on re-runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from .._napari.layers import SOURCE_KEY, labels_layer_data, labels_layer_kwargs
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


@dataclass
class StreamedSegmentation:
    """A segmentation streamed to files, with lazy (dask) views of them for layers."""

    image_name: str
    class_map: ClassMap
    images: Path  # the file that was segmented
    labels_path: Path
    labels: Any  # dask (Z, Y, X) Labels-layer values (class id + 1)
    nbytes: int  # all outputs together, on disk
    probabilities_path: Path | None = None
    probabilities: Any = None  # dask (Z, Y, X, K) float32
    uncertainty_path: Path | None = None
    uncertainty: Any = None  # dask (Z, Y, X) float32


def segmentation_name(image_name: str) -> str:
    """Name of the Labels layer that holds an image's segmentation."""
    return f"{image_name} segmentation"


def is_segmentation(name: str) -> bool:
    """Whether a layer name looks like a segmentation (ours, or one the user named so).

    The widgets that work on a segmentation (Evaluate's prediction, Correct, Export) prefer
    such layers and adopt a new one as it appears.
    """
    return "segmentation" in name.lower()


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
    existing.metadata.pop(SOURCE_KEY, None)  # held in memory now, no longer what a file holds
    if whole:
        existing.data = block
    else:
        if not isinstance(existing.data, np.ndarray):
            # A result streamed to a file is a read-only dask view; this image is in memory,
            # so its segmentation fits there too.
            existing.data = np.asarray(existing.data)
        existing.data[z0:z0 + block.shape[0]] = block
        existing.refresh()
    for key, value in kwargs.get("metadata", {}).items():
        existing.metadata[key] = value
    _set_scale(existing, kwargs)
    return existing


def preview_name(image_name: str) -> str:
    """Name of the Labels layer that shows the live preview of a training run on an image."""
    return f"{image_name} preview"


def show_preview(viewer: Any, image_name: str, class_map: ClassMap, z: int, ids: np.ndarray,
                 full_shape: tuple[int, ...], uncertainty: np.ndarray | None = None) -> Any:
    """Show the class ids of slice ``z`` segmented during training in the preview layer.

    The layer (created on first use, half transparent) holds only the slices previewed so far;
    it is not a segmentation (the pickers of Evaluate, Correct and Export do not adopt it).
    With ``uncertainty`` (2D entropy, 0..1), slice ``z`` of the preview-uncertainty Image
    layer shows it (created visible the first time, since the user asked for it).
    """
    kwargs = {**labels_layer_kwargs(class_map, preview_name(image_name)),
              **physical_scale(viewer, image_name, len(full_shape))}
    name = kwargs.pop("name")
    layer = _put(viewer, name, labels_layer_data(ids[None]), int(z), tuple(full_shape), "labels",
                 {**kwargs, "opacity": 0.5})
    layer.colormap = kwargs["colormap"]
    if uncertainty is not None:
        _put(viewer, uncertainty_name(preview_name(image_name)), np.asarray(uncertainty, np.float32)[None], int(z),
             tuple(full_shape), "image", {**_UNCERTAINTY_KWARGS, "visible": True})
    return layer


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
    physical = physical_scale(viewer, seg.image_name, len(full))
    kwargs = {**labels_layer_kwargs(seg.class_map, segmentation_name(seg.image_name)), **physical}
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
        for k, class_name in enumerate(seg.class_map.names):
            _put(viewer, probability_name(seg.image_name, class_name), np.ascontiguousarray(seg.probabilities[..., k]),
                 seg.z_start, full, "image", {**_probability_kwargs(seg.class_map, k), **physical})
    if seg.uncertainty is not None:
        _put(viewer, uncertainty_name(seg.image_name), seg.uncertainty, seg.z_start, full, "image",
             {**_UNCERTAINTY_KWARGS, **physical})
    _on_top(viewer, layer)
    return layer


def show_streamed(viewer: Any, seg: StreamedSegmentation, state: Any) -> Any:
    """Show a segmentation streamed to files as lazy layers read from those files.

    The Labels layer is named and coloured as :func:`show_segmentation` makes it and replaces
    the data of an earlier result of that name (or the layer, when it is not a Labels layer).
    Probability and uncertainty layers, when written, are added hidden.

    Returns
    -------
    napari.layers.Labels
        The segmentation layer; its ``metadata`` names the labels file as its source.
    """
    physical = physical_scale(viewer, seg.image_name, seg.labels.ndim)
    kwargs = {**labels_layer_kwargs(seg.class_map, segmentation_name(seg.image_name), source=seg.labels_path),
              **physical}
    name = kwargs.pop("name")
    layer = _replace(viewer, name, seg.labels, "labels", {**kwargs, "opacity": 0.5})
    layer.colormap = kwargs["colormap"]
    state.clear_edits(layer)  # every slice is new: earlier hand edits no longer apply
    if seg.probabilities is not None:
        for k, class_name in enumerate(seg.class_map.names):
            _replace(viewer, probability_name(seg.image_name, class_name), seg.probabilities[..., k], "image",
                     {**_probability_kwargs(seg.class_map, k), "metadata": {SOURCE_KEY: str(seg.probabilities_path)},
                      **physical})
    if seg.uncertainty is not None:
        _replace(viewer, uncertainty_name(seg.image_name), seg.uncertainty, "image",
                 {**_UNCERTAINTY_KWARGS, "metadata": {SOURCE_KEY: str(seg.uncertainty_path)}, **physical})
    _on_top(viewer, layer)
    return layer


def probability_name(image_name: str, class_name: str) -> str:
    """Name of the Image layer holding one class's probabilities."""
    return f"{image_name} P({class_name})"


def uncertainty_name(image_name: str) -> str:
    """Name of the Image layer holding the per-pixel entropy."""
    return f"{image_name} uncertainty"


_UNCERTAINTY_KWARGS: dict[str, Any] = {
    "colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive", "visible": False,
}


def _probability_kwargs(class_map: ClassMap, k: int) -> dict[str, Any]:
    """Layer settings for class ``k``'s probabilities: black to the class colour, hidden."""
    from napari.utils.colormaps import Colormap

    name, color = class_map.names[k], class_map.colors[k]
    cmap = Colormap([[0, 0, 0, 1], list(color[:3]) + [1]], name=f"sandseg-{name}")
    return {"colormap": cmap, "contrast_limits": (0.0, 1.0), "blending": "additive", "visible": False}


def _replace(viewer: Any, name: str, data: Any, kind: str, kwargs: dict[str, Any]) -> Any:
    """Give layer ``name`` new (lazy) data: the same layer when its type fits, else a new one."""
    layer_type = Labels if kind == "labels" else Image
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and (not isinstance(existing, layer_type) or existing.ndim != data.ndim
                                 or getattr(existing, "multiscale", False)):
        viewer.layers.remove(existing)
        existing = None
    if existing is None:
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        return add(data, name=name, **kwargs)
    existing.data = data
    for key, value in kwargs.get("metadata", {}).items():
        existing.metadata[key] = value
    _set_scale(existing, kwargs)
    return existing


def physical_scale(viewer: Any, image_name: str, ndim: int) -> dict[str, Any]:
    """``scale`` and ``units`` of image layer ``image_name`` for a result layer of ``ndim`` axes.

    Results then lie over their image in napari's world (physical) coordinates. Empty when the
    image is gone, has other axes, or is in pixels; otherwise the scale bar is switched on,
    since its lengths now mean something (napari takes its unit from the layers).
    """
    from ..units import layer_kwargs, layer_voxel_size

    image = viewer.layers[image_name] if image_name in viewer.layers else None
    if image is None or image.ndim != ndim:
        return {}
    voxel_size = layer_voxel_size(image.scale, image.units)
    if voxel_size is not None:
        viewer.scale_bar.visible = True
    return layer_kwargs(voxel_size, ndim)


def _set_scale(layer: Any, kwargs: dict[str, Any]) -> None:
    """Give an existing result layer the ``scale`` / ``units`` of ``kwargs`` (from :func:`physical_scale`)."""
    if "scale" in kwargs:
        layer.scale, layer.units = kwargs["scale"], kwargs["units"]


def _on_top(viewer: Any, layer: Any) -> None:
    """Keep the segmentation above its probability layers and select it for corrections."""
    viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    viewer.layers.selection.active = layer
