"""Image and mask files -> what training takes: images, per-pixel targets and the class map.

A mask holds the user's class values. Dense masks give every pixel a class (targets are class
ids ``0..K-1``); with ``sparse`` a mask value 0 means "not annotated" and the targets follow the
Labels-layer convention (0 = unpainted, ``k`` = class id ``k-1``). When fine-tuning, the
targets are re-expressed in the classes of the model being fine-tuned. Volumes of
``lazy.LAZY_BYTES`` or more (and every zarr store) are opened lazily and the mask mapped slice
by slice, so training reads patches from disk (:mod:`napari_sandseg.patches`).
"""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from .classmap import MAX_CLASSES, ClassMap, check_integer_valued
from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]


def is_big(path: PathLike) -> bool:
    """Whether a volume should be opened lazily: a zarr store, or at least ``lazy.LAZY_BYTES`` on disk."""
    from .lazy import LAZY_BYTES, is_zarr, nbytes_on_disk

    return is_zarr(path) or nbytes_on_disk(path) >= LAZY_BYTES


def read_training_pair(images_path: PathLike, masks_path: PathLike, *, sparse: bool = False,
                       model_map: ClassMap | None = None, init_model: PathLike | None = None,
                       **reading: Any) -> tuple[Any, Any, ClassMap]:
    """Read an image volume and its mask as training images, targets and class map.

    Parameters
    ----------
    images_path, masks_path : path-like
        The image volume and its mask (same shape).
    sparse : bool
        Mask value 0 means "not annotated" (targets 0 = unpainted, ``k`` = class id ``k-1``).
    model_map : ClassMap, optional
        Classes of the model being fine-tuned (``init_model``): the targets are expressed in
        them, and a mask value outside them is refused.
    init_model : path-like, optional
        The model being fine-tuned, named in messages.
    **reading
        Reading options of :func:`napari_sandseg.io.read_volume` (``rgb_as_slices``).

    Returns
    -------
    images, targets, class_map
        numpy arrays, or for big volumes a lazy volume and a
        :class:`~napari_sandseg.lazy.MappedVolume` mapping the mask slice by slice.

    Raises
    ------
    InputError
        Shapes differ, the mask is not integer-valued, holds one class only, no annotated
        pixel (``sparse``), too many values, or values the fine-tuned model does not know.
    """
    if is_big(images_path):
        return open_big_pair(images_path, masks_path, sparse, model_map, **reading)
    from .io import check_pair, read_mask, read_volume

    images = read_volume(images_path, **reading)
    if sparse:
        targets, class_map = read_sparse_mask(masks_path, **reading)
    else:
        targets, class_map = read_mask(masks_path, **reading)
    check_pair(images, targets, str(images_path), str(masks_path))
    if model_map is not None:
        return images, *to_model_classes(targets, class_map, model_map, masks=masks_path,
                                         init_model=init_model, sparse=sparse)
    if class_map.n_classes < 2:
        raise InputError(
            f"{masks_path}: holds only one class (value {class_map.values[0]}); training needs masks "
            "with at least two classes (e.g. 0..3 for pore/clay/quartz/bright mineral)"
        )
    return images, targets, class_map


def to_model_classes(targets: np.ndarray, class_map: ClassMap, model_map: ClassMap, *, masks: PathLike,
                     init_model: PathLike | None, sparse: bool) -> tuple[np.ndarray, ClassMap]:
    """Re-express mask targets in the classes of the model being fine-tuned.

    A mask may hold a subset of the model's classes (corrections often show only some
    phases); a value the model does not know is refused, naming it and the valid values.
    """
    extra = sorted(set(class_map.values) - set(model_map.values))
    if extra:
        raise InputError(
            f"{masks}: values {extra} are not classes of the model {init_model} "
            f"(its classes are {list(model_map.values)}); a mask for fine-tuning may only hold those values"
        )
    lut = np.searchsorted(np.asarray(model_map.values), np.asarray(class_map.values))
    if sparse:  # layer convention: 0 = unpainted, k = class id k-1
        lut = np.concatenate([[-1], lut]) + 1
    return lut[targets].astype(targets.dtype if lut.max() <= np.iinfo(targets.dtype).max else np.uint16), model_map


def open_big_pair(images_path: PathLike, masks_path: PathLike, sparse: bool, model_map: ClassMap | None,
                  **reading: Any) -> tuple[Any, Any, ClassMap]:
    """Images and masks opened lazily; the mask is mapped to training targets slice by slice.

    One pass over the mask finds its class values (at most ``MAX_CLASSES``); the targets are
    class ids, or with ``sparse`` Labels-layer values (mask value 0 = not annotated).
    """
    from .io import check_pair
    from .lazy import MappedVolume, open_volume, unique_values

    images = open_volume(images_path, **reading)
    raw = open_volume(masks_path, **reading)
    check_pair(images, raw, str(images_path), str(masks_path))
    values = unique_values(raw, limit=MAX_CLASSES + 1)
    if values.size and not np.array_equal(values, np.round(values)):
        raise InputError(f"{masks_path}: holds fractional values; a mask holds integer class values")
    painted = values[values != 0] if sparse else values
    if painted.size > MAX_CLASSES:
        raise InputError(f"{masks_path}: more than {MAX_CLASSES} distinct values; is this the image rather than the mask?")
    class_map = model_map if model_map is not None else ClassMap(tuple(int(v) for v in painted))
    unknown = sorted(set(int(v) for v in painted) - set(class_map.values))
    if unknown:
        raise InputError(f"{masks_path}: values {unknown} are not classes of the model (its classes are {list(class_map.values)})")
    if class_map.n_classes < 2:
        raise InputError(f"{masks_path}: holds only one class; training needs masks with at least two classes")
    known = np.asarray(class_map.values)
    ids = np.arange(class_map.n_classes, dtype=np.int16)
    if sparse:  # Labels-layer convention: 0 = unpainted, k = class id k-1
        known, ids = np.concatenate([[0], known]), np.concatenate([[0], ids + 1]).astype(np.int16)
    return images, MappedVolume(raw, known.astype(raw.dtype), ids, source=str(masks_path)), class_map


def read_sparse_mask(path: PathLike, **reading: Any) -> tuple[np.ndarray, ClassMap]:
    """A mask file whose 0 means "not annotated", as Labels-layer targets (0 = unpainted, k = id k-1).

    ``reading``: the reading options of :func:`napari_sandseg.io.read_volume`.
    """
    from .io import read_volume

    raw = read_volume(path, **reading)
    check_integer_valued(raw, str(path))
    painted = raw != 0
    if not painted.any():
        raise InputError(f"{path}: --sparse mask has no annotated pixel (every value is 0 = not annotated)")
    class_map = ClassMap.from_mask(raw[painted], source=str(path))
    layer = np.zeros(raw.shape, dtype=np.uint8 if class_map.n_classes < 255 else np.uint16)
    layer[painted] = class_map.encode(raw[painted], str(path)) + 1
    return layer, class_map
