"""napari sample data: synthetic sandstone image + ground-truth labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..classmap import ClassMap
from .layers import SOURCE_KEY, labels_layer_data, labels_layer_kwargs

#: Shape of the full-size sample (the reference data set's shape).
FULL_SHAPE = (1600, 128, 128)

LayerData = tuple[np.ndarray, dict[str, Any], str]


def sample_layers(image: np.ndarray, labels: np.ndarray, name: str, source: Any = None) -> list[LayerData]:
    """Image + Labels layer-data tuples for a sandstone volume and its 0..3 labels."""
    class_map = ClassMap.from_mask(labels)
    return [
        (image, {"name": f"{name} image"}, "image"),
        (labels_layer_data(class_map.encode(labels)), labels_layer_kwargs(class_map, f"{name} truth", source), "labels"),
    ]


def make_sandstone_sample() -> list[LayerData]:
    """The 1600 x 128 x 128 synthetic sandstone, generated (seed 0)."""
    from ..sample import make_sandstone

    image, labels = make_sandstone(FULL_SHAPE, seed=0)
    return sample_layers(image, labels, "sandstone")


def bundled_sandstone_sample() -> list[LayerData]:
    """The small bundled stack from ``sample_data/`` (generated if the files are absent)."""
    from ..bundled import bundled_sample_paths
    from ..io import read_volume

    image_path, mask_path = bundled_sample_paths()
    layers = sample_layers(read_volume(image_path), read_volume(mask_path), "sandstone", mask_path)
    layers[0][1]["metadata"] = {SOURCE_KEY: str(image_path)}
    return layers
