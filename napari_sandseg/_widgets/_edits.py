"""Which pixels a napari Labels ``paint`` event changed.

napari emits ``layer.events.paint(value=item)`` once per committed edit (a whole brush stroke,
a fill, a polygon, or ``data_setitem``), where ``item`` is a list of history atoms. In napari
0.9 an atom is either a mask-based edit (``_MaskedPaintAtom``: ``slice_key``, a tuple of slices
giving the bounding box in data coordinates, and ``mask``, the changed pixels within it with one
axis per data dimension, or None when every pixel of the box changed) or the older
``(indices, old_values, new_values)`` tuple whose ``indices`` is a numpy multi-index. Only
pixels whose value changed are reported (napari skips pixels that already held the painted
value). Undo/redo emit no paint event.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

#: One painted patch of a slice: ``(z, (rows, cols), mask)``, ``mask`` a bool array of the box's shape.
PaintedPatch = tuple[int, tuple[slice, slice], np.ndarray]


def painted_pixels(atoms: Iterable[Any], shape: tuple[int, ...]) -> Iterator[PaintedPatch]:
    """The pixels of a 3D layer that one paint event changed, slice by slice.

    Parameters
    ----------
    atoms : iterable
        ``event.value`` of a Labels layer's ``paint`` event.
    shape : tuple of int
        The layer's data shape; anything but 3D yields nothing (no slices).

    Yields
    ------
    tuple
        ``(z, (rows, cols), mask)``: the slice index, the bounding box within the slice and a
        boolean mask of that box's shape (True = changed). A slice may come several times
        (several atoms, or a 3D brush spanning slices).
    """
    if len(shape) != 3:
        return
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            yield from _masked_atom(key, atom.mask, shape)
        else:
            yield from _indexed_atom(atom[0], shape)


def _masked_atom(key: tuple[Any, ...], mask: np.ndarray | None, shape: tuple[int, ...]) -> Iterator[PaintedPatch]:
    """Patches of a mask-based atom (its box may span several slices: a 3D brush or fill)."""
    # An integer in the key (older napari) dropped that axis from the mask: give it back.
    box = tuple(slice(k, k + 1) if isinstance(k, (int, np.integer)) else k for k in key)
    if mask is None:
        mask = np.ones([len(range(*s.indices(n))) for s, n in zip(box, shape)], bool)
    else:
        mask = np.asarray(mask, bool)
        for axis, k in enumerate(key):
            if isinstance(k, (int, np.integer)):
                mask = np.expand_dims(mask, axis)
    zs = range(*box[0].indices(shape[0]))
    rows, cols = (slice(*s.indices(n)[:2]) for s, n in zip(box[1:], shape[1:]))
    for i, z in enumerate(zs):
        if mask[i].any():
            yield z, (rows, cols), mask[i]


def _indexed_atom(indices: Any, shape: tuple[int, ...]) -> Iterator[PaintedPatch]:
    """Patches of an ``(indices, old, new)`` atom: one box per slice around its indices."""
    # Negative indices count from the end, as numpy reads them.
    zi, yi, xi = (np.asarray(i).ravel() % n for i, n in zip(np.broadcast_arrays(*indices), shape))
    order = np.argsort(zi, kind="stable")
    zi, yi, xi = zi[order], yi[order], xi[order]
    starts = np.flatnonzero(np.r_[True, zi[1:] != zi[:-1]]) if zi.size else np.empty(0, int)
    for start, stop in zip(starts, np.r_[starts[1:], zi.size]):
        ys, xs = yi[start:stop], xi[start:stop]
        y0, x0 = int(ys.min()), int(xs.min())
        mask = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), bool)
        mask[ys - y0, xs - x0] = True
        yield int(zi[start]), (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1])), mask

