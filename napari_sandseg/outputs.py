"""Write a ``(Z, Y, X[, K])`` result slab by slab to a TIFF stack or a zarr store, atomically.

Prediction produces its output a slab of slices at a time; these writers put each slab on
disk as it comes, so an output bigger than memory is never held whole. The destination appears
only when it is complete: a TIFF is written to a temp file renamed over the target
(:func:`napari_sandseg.io.atomic_write`), a zarr store to a temp folder renamed likewise.
A zarr label volume is an OME-Zarr (0.5) label image: its voxel size as the scale transform,
its classes' names and colours as ``image-label`` metadata.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

import numpy as np

from .errors import OutputError
from .targets import check_target, is_zarr_path

if TYPE_CHECKING:
    from .classmap import ClassMap


class SlabWriter(Protocol):
    """Something that takes consecutive slabs of a volume."""

    def write(self, z0: int, slab: np.ndarray) -> None:
        """Store ``slab`` as slices ``z0 .. z0 + len(slab) - 1``."""


class _TiffWriter:
    """One TIFF page per slice, so readers see a single ``(Z, Y, X[, K])`` series."""

    def __init__(self, writer, first_page: dict | None = None) -> None:
        self._writer = writer
        self._first_page = first_page or {}  # tags only the first page carries (ImageJ description)

    def write(self, z0: int, slab: np.ndarray) -> None:
        extra = {"planarconfig": "contig"} if slab.ndim == 4 else {}
        for plane in slab:
            # contiguous=True: tifffile joins the pages into one series (slabs would not be).
            self._writer.write(plane, contiguous=True, photometric="minisblack", **extra, **self._first_page)
            self._first_page = {k: v for k, v in self._first_page.items() if k == "resolution"}


def imagej_voxel_tags(shape: tuple[int, ...], voxel_size) -> dict:
    """First-page keywords of ``TiffWriter.write`` that carry a voxel size the ImageJ way.

    The ImageJ description (``spacing`` = z edge, ``unit``) is written as the page's own
    description, since tifffile's ImageJ mode cannot be fed one slice at a time; the y/x edges
    go in the resolution tags (pixels per unit). ``voxel_size`` is ``((z, y, x), unit)``
    (:mod:`napari_sandseg.units`); only ``(Z, Y, X)`` stacks in a physical unit get tags.
    """
    import tifffile

    if voxel_size is None or len(shape) != 3 or voxel_size[1] == "px":
        return {}
    (z, y, x), unit = voxel_size
    # ImageJ shows "micron" as µm; its other units are written as they are.
    description = tifffile.imagej_description(
        (1, shape[0], 1, shape[1], shape[2], 1), spacing=float(z), unit="micron" if unit == "um" else unit
    )
    return {"description": description, "metadata": None, "resolution": (1 / float(x), 1 / float(y))}


class _ZarrWriter:
    """Slabs into a zarr array chunked one slice at a time (what a viewer reads)."""

    def __init__(self, array) -> None:
        self._array = array

    def write(self, z0: int, slab: np.ndarray) -> None:
        self._array[z0 : z0 + len(slab)] = slab


def ome_image_label(class_map: "ClassMap") -> dict:
    """OME-Zarr ``image-label`` metadata of a label volume holding ``class_map``'s values.

    ``colors``: each class value's RGBA (0..255), the colour its napari Labels layer shows
    (:func:`napari_sandseg._napari.layers.label_colormap` takes the same class-map colours);
    ``properties``: each class value's name, under ``class``.
    """
    colors = []
    for value, color in zip(class_map.values, class_map.colors):
        rgba = (list(color) + [1.0])[:4]  # an RGB colour is opaque
        colors.append({"label-value": int(value), "rgba": [int(round(255 * float(c))) for c in rgba]})
    properties = [{"label-value": int(v), "class": str(name)} for v, name in zip(class_map.values, class_map.names)]
    return {"colors": colors, "properties": properties}


def image_label_of(path: str | os.PathLike) -> dict | None:
    """The OME-Zarr ``image-label`` metadata of the zarr group at ``path``, or None.

    Read from the group's ``ome`` attribute (OME-Zarr 0.5, what :func:`slab_writer` writes) or
    from its top level (0.4). None for a plain array, a group without it, or anything unreadable.
    """
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except (zarr.errors.BaseZarrError, OSError):  # a plain array, or no group there: no label metadata
        return None
    label = attrs.get("ome", {}).get("image-label", attrs.get("image-label"))
    return label if isinstance(label, dict) else None


def class_map_from_image_label(values: "tuple[int, ...]", image_label: dict | None) -> "ClassMap":
    """The class map of a label volume holding ``values``, named and coloured by its ``image-label``.

    Inverse of :func:`ome_image_label` for the values it lists; values it does not list (or
    malformed entries) keep the default names and colours.
    """
    from .classmap import ClassMap

    default = ClassMap(tuple(values))
    names, colors = dict(zip(default.values, default.names)), dict(zip(default.values, default.colors))
    for entry in (image_label or {}).get("properties", []):
        if isinstance(entry, dict) and entry.get("label-value") in names and isinstance(entry.get("class"), str):
            names[entry["label-value"]] = entry["class"]
    for entry in (image_label or {}).get("colors", []):
        rgba = entry.get("rgba") if isinstance(entry, dict) else None
        if entry and entry.get("label-value") in colors and isinstance(rgba, list) and len(rgba) == 4:
            colors[entry["label-value"]] = tuple(float(c) / 255.0 for c in rgba)
    return ClassMap(default.values, tuple(names[v] for v in default.values), tuple(colors[v] for v in default.values))


def ome_label_attrs(name: str, voxel_size, class_map: "ClassMap", path: str = "0") -> dict:
    """The ``ome`` attribute of an OME-Zarr (0.5) label image group: one ``(Z, Y, X)`` level at ``path``."""
    from .units import OME_VERSION, ome_multiscales

    return {"version": OME_VERSION, "multiscales": [ome_multiscales(voxel_size, name, path)],
            "image-label": ome_image_label(class_map)}


@contextlib.contextmanager
def slab_writer(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype, overwrite: bool = False, voxel_size=None,
    class_map: "ClassMap | None" = None,
) -> Iterator[SlabWriter]:
    """Open an atomic slab writer for ``path`` (``*.zarr`` -> zarr store, else TIFF).

    Parameters
    ----------
    path : path-like
        Destination; ``.zarr`` writes a zarr (v3) array, anything else a (Big)TIFF stack.
    shape : tuple of int
        Full output shape, ``(Z, Y, X)`` or ``(Z, Y, X, K)``.
    dtype : numpy dtype
        Output dtype.
    overwrite : bool
        Replace an existing file or store (else :class:`OutputError`).
    voxel_size : ((z, y, x), unit), optional
        Kept in a ``(Z, Y, X)`` TIFF as ImageJ ``spacing``/``unit`` and resolution tags
        (:func:`imagej_voxel_tags`); in a zarr label volume as its OME-Zarr scale transform,
        in any other zarr array as an attribute (:func:`napari_sandseg.units.zarr_voxel_attrs`).
    class_map : ClassMap, optional
        The classes of a ``(Z, Y, X)`` label volume (original class values). A zarr output
        is then an OME-Zarr label image (:func:`ome_label_attrs`): a group whose array ``0``
        holds the labels; without it, a plain zarr array.

    Yields
    ------
    SlabWriter
        Call ``write(z0, slab)`` for consecutive slabs; the output appears when the block ends
        without an exception (on an exception nothing is left behind).
    """
    target = Path(path)
    dtype = np.dtype(dtype)
    if not is_zarr_path(target):
        import tifffile

        from .io import atomic_write, needs_bigtiff

        nbytes = int(np.prod(shape)) * dtype.itemsize
        with atomic_write(target, overwrite=overwrite) as tmp:
            with tifffile.TiffWriter(tmp, bigtiff=needs_bigtiff(nbytes)) as tif:
                yield _TiffWriter(tif, imagej_voxel_tags(tuple(shape), voxel_size))
        return
    yield from _zarr_writer(target, shape, dtype, overwrite, voxel_size, class_map)


def _zarr_writer(target: Path, shape: tuple[int, ...], dtype: np.dtype, overwrite: bool,
                 voxel_size=None, class_map: "ClassMap | None" = None) -> Iterator[SlabWriter]:
    import zarr

    from .io import cannot_start, write_failure
    from .units import OME_AXES, zarr_voxel_attrs

    check_target(target, overwrite, store=True)  # an existing folder is replaced only if it is a zarr store
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp.zarr")
    chunks = (1,) + tuple(shape[1:])
    try:
        try:
            if class_map is not None and len(shape) == 3:
                group = zarr.open_group(str(tmp), mode="w")
                group.attrs["ome"] = ome_label_attrs(target.stem, voxel_size, class_map)
                array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, dimension_names=OME_AXES)
            else:
                array = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype=dtype)
                array.attrs["axes"] = "ZYX" if len(shape) == 3 else "ZYXC"
                array.attrs.update(zarr_voxel_attrs(voxel_size))
        except OSError as exc:
            raise OutputError(cannot_start(target, exc)) from exc
        try:
            yield _ZarrWriter(array)
        except OSError as exc:  # disk full, quota, ...: said in words, like the TIFF writer does
            raise OutputError(f"{target}: {write_failure(exc)}; nothing was changed") from exc
        try:
            if target.exists():  # overwrite: a folder cannot be renamed over a non-empty one
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"{target}: could not replace the store ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
