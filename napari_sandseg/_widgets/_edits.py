"""Which slices a napari Labels ``paint`` event touched.

napari emits ``layer.events.paint(value=item)`` once per committed edit (a whole brush stroke,
a fill, a polygon, or ``data_setitem``), where ``item`` is a list of history atoms. In napari
0.9 an atom is either a mask-based edit with a ``slice_key`` (a tuple of slices: the bounding
box in data coordinates) or the older ``(indices, old_values, new_values)`` tuple whose
``indices`` is a numpy multi-index. Undo/redo emit no paint event.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def slices_from_paint(atoms: Iterable[Any], ndim: int) -> set[int]:
    """Slice indices (axis 0) of a 3D layer touched by the atoms of one paint event.

    Parameters
    ----------
    atoms : iterable
        ``event.value`` of a Labels layer's ``paint`` event.
    ndim : int
        The layer's number of dimensions; anything but 3 gives an empty set (no slices).
    """
    if ndim != 3:
        return set()
    touched: set[int] = set()
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            first = key[0]
            if isinstance(first, slice):
                touched.update(range(first.start or 0, first.stop if first.stop is not None else (first.start or 0) + 1))
            else:
                touched.add(int(first))
            continue
        indices = atom[0]
        first = indices[0] if isinstance(indices, tuple) else indices
        touched.update(int(z) for z in np.unique(np.asarray(first)))
    return touched
