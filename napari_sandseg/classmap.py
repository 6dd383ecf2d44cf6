"""Explicit mapping between a mask's original class values and contiguous class ids.

Masks come with arbitrary values (0..3, 1..4, 0/85/170/255, ...). The model works on ids
0..K-1; the original values, names and colours travel with the model so an export writes the
user's values back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import InputError

#: Names used for the reference 4-phase sandstone when the user gives none.
SANDSTONE_NAMES = ("pore", "clay", "quartz", "bright mineral")

#: One distinct RGBA colour per class id (napari Labels layers take these).
DEFAULT_COLORS = (
    (0.12, 0.35, 0.95, 1.0),
    (0.15, 0.75, 0.25, 1.0),
    (0.90, 0.25, 0.20, 1.0),
    (0.98, 0.85, 0.10, 1.0),
    (0.60, 0.30, 0.80, 1.0),
    (0.10, 0.80, 0.80, 1.0),
    (0.95, 0.55, 0.10, 1.0),
    (0.55, 0.55, 0.55, 1.0),
)

#: Largest number of classes we accept; more usually means an image was passed as a mask.
MAX_CLASSES = 64


@dataclass(frozen=True)
class ClassMap:
    """Original class values (ascending), with a name and an RGBA colour per class.

    Attributes
    ----------
    values : tuple of int
        Original mask values, strictly ascending. Class id ``i`` stands for ``values[i]``.
    names : tuple of str
        Human-readable class names, one per value.
    colors : tuple of tuple of float
        RGBA colours in [0, 1], one per value.
    """

    values: tuple[int, ...]
    names: tuple[str, ...] = field(default=())
    colors: tuple[tuple[float, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        values = tuple(int(v) for v in self.values)
        if len(values) == 0:
            raise InputError("a class map needs at least one class value")
        if list(values) != sorted(set(values)):
            raise InputError(f"class values must be unique and ascending, got {list(values)}")
        if len(values) > MAX_CLASSES:
            raise InputError(
                f"{len(values)} distinct class values found; at most {MAX_CLASSES} are supported "
                "(is this an image rather than a mask?)"
            )
        names = tuple(self.names) or default_names(len(values))
        colors = tuple(tuple(c) for c in self.colors) or tuple(
            DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(values))
        )
        if len(names) != len(values) or len(colors) != len(values):
            raise InputError(
                f"class map has {len(values)} values but {len(names)} names and {len(colors)} colours"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colors", colors)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.values)

    @classmethod
    def from_mask(cls, mask: np.ndarray, names: Sequence[str] = (), source: str = "mask") -> "ClassMap":
        """Build the class map of a dense mask from the values it contains.

        Parameters
        ----------
        mask : ndarray
            Integer (or integer-valued float) mask of any shape.
        names : sequence of str, optional
            Class names; default names are used when empty.
        source : str
            What to call the mask in error messages (usually its file name).
        """
        check_integer_valued(mask, source)
        values = np.unique(mask)
        return cls(tuple(int(v) for v in values), tuple(names))

    def encode(self, mask: np.ndarray, source: str = "mask") -> np.ndarray:
        """Map original values to class ids 0..K-1 (uint8 or uint16).

        Raises
        ------
        InputError
            If the mask holds a value that is not in the class map.
        """
        check_integer_valued(mask, source)
        values = np.asarray(self.values)
        present = np.unique(mask)
        unknown = np.setdiff1d(present, values)
        if unknown.size:
            raise InputError(
                f"{source}: values {unknown[:10].tolist()} are not in the class map "
                f"{list(self.values)}; every mask value must be one of those"
            )
        dtype = np.uint8 if self.n_classes <= 256 else np.uint16
        return np.searchsorted(values, mask).astype(dtype, copy=False)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Map class ids 0..K-1 back to the original values, in the smallest fitting dtype."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_classes):
            raise InputError(
                f"class ids must be in 0..{self.n_classes - 1}, got {int(ids.min())}..{int(ids.max())}"
            )
        lut = np.asarray(self.values, dtype=value_dtype(self.values))
        return lut[ids]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the model sidecar)."""
        return {"values": list(self.values), "names": list(self.names), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassMap":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(data["values"]), tuple(data.get("names", ())), tuple(tuple(c) for c in data.get("colors", ())))


def default_names(n_classes: int) -> tuple[str, ...]:
    """Sandstone phase names for 4 classes, ``class <i>`` otherwise."""
    if n_classes == len(SANDSTONE_NAMES):
        return SANDSTONE_NAMES
    return tuple(f"class {i}" for i in range(n_classes))


def value_dtype(values: Sequence[int]) -> np.dtype:
    """Smallest integer dtype that holds all ``values``."""
    lo, hi = min(values), max(values)
    for dt in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def check_integer_valued(mask: np.ndarray, source: str = "mask") -> None:
    """Raise :class:`InputError` unless ``mask`` holds whole numbers only."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return
    if np.issubdtype(mask.dtype, np.integer):
        return
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)):
            raise InputError(f"{source}: mask holds NaN or Inf values; a mask must hold whole class values")
        if not np.all(np.equal(np.mod(mask, 1), 0)):
            raise InputError(
                f"{source}: mask holds fractional values (dtype {mask.dtype}); "
                "a mask must hold whole class values such as 0..3 or 0/85/170/255"
            )
        return
    raise InputError(f"{source}: dtype {mask.dtype} cannot be a mask; use an integer label image")
