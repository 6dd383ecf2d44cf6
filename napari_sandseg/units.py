"""Voxel size: parsed from text (``2.5um``, ``2.5 µm``, ``0.0025mm``, ``5,2.5,2.5um``) or read from a TIFF.

One home for the rule, used by the command line, the widgets and the readers. A voxel size is
``(z, y, x)`` edges and a unit; lengths stay in the unit they were given in (no conversion),
except TIFF resolution tags in centimetres, which are turned into micrometres.
"""

from __future__ import annotations

import math
import re

import numpy as np
from pathlib import Path
from typing import Sequence, Union

from .errors import ConfigError

#: Unit spellings -> the canonical name written in reports.
UNITS = {
    "nm": "nm", "nanometer": "nm", "nanometre": "nm", "nanometers": "nm", "nanometres": "nm",
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometer": "um",
    "micrometre": "um", "micrometers": "um", "micrometres": "um", "\\u00b5m": "um",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm", "millimeters": "mm", "millimetres": "mm",
    "cm": "cm", "centimeter": "cm", "centimetre": "cm", "m": "m", "meter": "m", "metre": "m",
    "px": "px", "pixel": "px", "pixels": "px", "voxel": "px", "voxels": "px",
}

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_PATTERN = re.compile(rf"^\s*({_NUMBER}(?:\s*[,x×]\s*{_NUMBER}){{0,2}})\s*([^\d\s,].*)?$")

VoxelSize = tuple[tuple[float, float, float], str]


def parse_voxel_size(text: str) -> VoxelSize:
    """Parse ``"2.5um"``, ``"2.5 µm"``, ``"0.0025mm"`` or ``"5,2.5,2.5 um"`` (z, y, x).

    A number without a unit is in pixels (``px``). One number means a cubic voxel.

    Returns
    -------
    (z, y, x), unit

    Raises
    ------
    ConfigError
        Naming the text and what would be valid.
    """
    match = _PATTERN.match(str(text))
    unit_text = (match.group(2) or "px").strip().lower() if match else ""
    if not match or unit_text not in UNITS:
        raise ConfigError(
            f"voxel size {text!r}: expected a positive number and a unit, such as 2.5um, '2.5 µm', 0.0025mm, "
            f"or three numbers z,y,x such as 5,2.5,2.5um (units: nm, um, mm, cm, m, px)"
        )
    numbers = [float(n) for n in re.split(r"\s*[,x×]\s*", match.group(1).strip())]
    try:
        sizes = check_voxel_size(numbers)
    except ConfigError:
        raise ConfigError(f"voxel size {text!r}: give one edge or three (z, y, x), all above zero") from None
    return sizes, UNITS[unit_text]


def check_voxel_size(voxel_size) -> tuple[float, float, float]:
    """Three positive, finite voxel edges ``(z, y, x)``; one number means a cubic voxel.

    Raises
    ------
    ConfigError
        Naming the values given.
    """
    try:
        many = hasattr(voxel_size, "__iter__") and not isinstance(voxel_size, str)
        sizes = tuple(float(v) for v in (voxel_size if many else [voxel_size]))
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise ConfigError(f"voxel size must be one or three positive numbers (z, y, x), got {voxel_size!r}")
    return sizes  # type: ignore[return-value]


def read_voxel_size(path: Union[str, Path]) -> VoxelSize | None:
    """The voxel size a TIFF or zarr store carries, or None when it carries none.

    A zarr store is read by :func:`read_zarr_voxel_size`.

    ImageJ metadata (``unit``, ``spacing`` for z) with the X/YResolution tags (pixels per unit)
    is read first; plain TIFF resolution tags count only in centimetres (converted to um): an
    inch resolution is the 72/96/300 dpi that image editors write, not a voxel size. For a folder
    of slices, the first slice in name order is read. z defaults to the y edge when the file has
    no spacing.
    """
    import tifffile
    from natsort import natsorted

    from .lazy import is_zarr

    path = Path(path)
    if is_zarr(path):
        return read_zarr_voxel_size(path)
    if path.is_dir():
        files = natsorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            return None
        path = files[0]
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            ij = tif.imagej_metadata or {}
            x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
            res_unit = page.tags.get("ResolutionUnit")
            res_unit = int(res_unit.value) if res_unit is not None else 2
            x_res, y_res = (_rational(t.value) if t is not None else None for t in (x_res, y_res))
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):  # IndexError: a TIFF without pages
        return None  # unreadable files are refused by the volume readers, with their own message
    unit = UNITS.get(str(ij.get("unit", "")).strip().lower())
    if unit is not None and unit != "px":
        y = 1 / y_res if y_res else 1.0
        x = 1 / x_res if x_res else y
        z = float(ij.get("spacing", y))
        return (z, y, x), unit
    if res_unit == 3 and x_res and y_res:  # centimetre
        y, x = 1e4 / y_res, 1e4 / x_res
        return (y, y, x), "um"
    return None


#: Key of the voxel size in the attributes of a zarr array this package writes
#: (``{"zyx": [z, y, x], "unit": unit}``, the model sidecar's form).
ZARR_VOXEL_KEY = "voxel_size"


def zarr_voxel_attrs(voxel_size: VoxelSize | None) -> dict:
    """Attributes that record ``voxel_size`` on a plain zarr array (none for pixels or None)."""
    if voxel_size is None or voxel_size[1] == "px":
        return {}
    return {ZARR_VOXEL_KEY: {"zyx": [float(v) for v in voxel_size[0]], "unit": voxel_size[1]}}


#: OME-Zarr version written (0.5: zarr v3, metadata under the ``ome`` attribute).
OME_VERSION = "0.5"
#: Canonical unit -> the UDUNITS-2 name OME-Zarr axes take.
OME_UNITS = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter"}
#: Axis names of a ``(Z, Y, X)`` OME-Zarr volume (also the arrays' ``dimension_names``).
OME_AXES = ("z", "y", "x")


def ome_multiscales(voxel_size: VoxelSize | None, name: str, path: str = "0") -> dict:
    """OME-Zarr ``multiscales`` metadata of one ``(Z, Y, X)`` level at ``path`` in ``voxel_size``.

    The level's ``scale`` transform holds the voxel edges and the space axes their unit; in
    pixels (or None) the scale is 1 and the axes carry no unit. :func:`read_zarr_voxel_size`
    reads it back.
    """
    physical = voxel_size is not None and voxel_size[1] != "px"
    scale = [float(v) for v in voxel_size[0]] if physical else [1.0, 1.0, 1.0]
    unit = {"unit": OME_UNITS[voxel_size[1]]} if physical else {}
    return {
        "name": name,
        "axes": [{"name": axis, "type": "space", **unit} for axis in OME_AXES],
        "datasets": [{"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }


def read_zarr_voxel_size(path: Union[str, Path]) -> VoxelSize | None:
    """The voxel size of a zarr store: OME-Zarr ``multiscales`` (the full-resolution level's
    ``scale`` transform, times the multiscale's own, with the spatial axes' ``unit``), or the
    :data:`ZARR_VOXEL_KEY` attribute this package writes on plain arrays. None if neither says."""
    import zarr

    try:
        attrs = dict(zarr.open(str(path), mode="r").attrs)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the volume readers refuse a bad store with their own message
    own = attrs.get(ZARR_VOXEL_KEY)
    if isinstance(own, dict) and UNITS.get(str(own.get("unit", "")).lower()) not in (None, "px"):
        try:
            return check_voxel_size(own.get("zyx")), UNITS[str(own["unit"]).lower()]
        except ConfigError:
            return None
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        return _ome_voxel_size(multiscales[0]) if multiscales else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None  # malformed metadata: the volume readers say what is wrong with the store


def _ome_voxel_size(multiscale: dict) -> VoxelSize | None:
    """``((z, y, x), unit)`` of an OME-Zarr multiscale's first dataset, or None."""
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    space = [i for i, a in enumerate(axes) if a.get("type") == "space" or a.get("name") in ("z", "y", "x")]
    units = {UNITS.get(str(axes[i].get("unit", "")).lower()) for i in space}
    if len(space) not in (2, 3) or len(units) != 1 or units & {None, "px"}:
        return None
    scale = np.ones(len(axes))
    transforms = list(multiscale["datasets"][0].get("coordinateTransformations", []))
    transforms += list(multiscale.get("coordinateTransformations", []))
    for t in transforms:
        if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
            scale = scale * np.asarray(t["scale"], float)
    edges = [float(scale[i]) for i in space]
    try:
        return check_voxel_size(edges if len(edges) == 3 else [edges[0], *edges]), units.pop()
    except ConfigError:
        return None


def format_voxel_size(voxel_size: VoxelSize) -> str:
    """``voxel_size`` as :func:`parse_voxel_size` reads it back: ``2.5um``, or ``5,2.5,2.5um`` (z,y,x)."""
    sizes, unit = voxel_size
    edges = f"{sizes[0]:.10g}" if len(set(sizes)) == 1 else ",".join(f"{v:.10g}" for v in sizes)
    return edges + unit


def resolve_voxel_size(text: str | None, paths: Sequence[Union[str, Path]] = ()) -> tuple[VoxelSize, str | None]:
    """The voxel size to measure with, and a note when there was none to be had.

    ``text`` if given, else the first of ``paths`` that carries one (:func:`read_voxel_size`),
    else 1 px and a note saying how to give it (the caller warns once its work has succeeded).
    """
    if text is not None:
        return parse_voxel_size(text), None
    for path in paths:
        found = read_voxel_size(path)
        if found is not None:
            return found, None
    names = " or ".join(Path(p).name for p in paths) or "the data"
    note = f"{names} carries no voxel size; lengths are in pixels (px). Give one, e.g. --voxel-size 2.5um"
    return ((1.0, 1.0, 1.0), "px"), note


def _rational(value) -> float | None:
    """A TIFF RATIONAL tag value ``(numerator, denominator)`` (or a number) as a float; None if 0."""
    if isinstance(value, tuple):
        number = value[0] / value[1] if value[1] else 0.0
    else:
        number = float(value)
    return number or None


def layer_kwargs(voxel_size: VoxelSize | None, ndim: int) -> dict:
    """napari layer keywords (``scale``, ``units``) that show a ``(z, y, x)`` voxel size.

    Empty when there is no voxel size, it is in pixels, or the layer is not 2D or 3D; a 2D
    layer takes the y and x edges. napari's scale bar reads the layers' ``units``.
    """
    if voxel_size is None or voxel_size[1] == "px" or ndim not in (2, 3):
        return {}
    sizes, unit = voxel_size
    return {"scale": tuple(float(v) for v in sizes[-ndim:]), "units": (unit,) * ndim}


def layer_voxel_size(scale: Sequence[float], units: Sequence) -> VoxelSize | None:
    """The voxel size a napari layer shows (its ``scale`` in its ``units``), or None in pixels.

    The inverse of :func:`layer_kwargs`: a 2D layer's z edge is taken equal to its y edge.
    Layers whose axes have different units, or a unit this module does not know, give None.
    ``scale`` and ``units`` are the layer's attributes (or the writer's layer attributes).
    """
    names = {str(u).strip().lower() for u in units or ()}
    unit = UNITS.get(names.pop()) if len(names) == 1 else None
    scale = tuple(float(v) for v in scale)
    if unit in (None, "px") or len(scale) not in (2, 3):
        return None
    return check_voxel_size(scale if len(scale) == 3 else (scale[0], *scale)), unit
