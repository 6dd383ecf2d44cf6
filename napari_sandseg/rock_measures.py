"""The rock measures themselves: plain functions on arrays, lengths in physical units.

Each function takes a label volume (or a boolean pore mask) of shape ``(Z, Y, X)`` and the voxel
size ``(z, y, x)`` in one length unit, and returns numbers in that unit. A volume with a single
slice (``Z == 1``) is measured in 2D (areas become lengths, volumes areas); each function says so.
:mod:`napari_sandseg.analyze` chooses the pore class and assembles the report.

Which measures stream and which need the whole pore space at once:

- streamed slab by slab (any size, memory-mapped input fine): phase fractions and per-slice
  profiles (:func:`phase_fractions`), specific surface area (:func:`specific_surface_area`),
  Euler number (:func:`euler_number`), REV curve (:func:`rev_curve`, one sub-cube at a time);
- whole pore space at once: connectivity (:func:`connectivity`, a label image) and local thickness
  (:func:`local_thickness`, distance transforms). :func:`check_memory` refuses them up front
  when they would not fit.

Connectivity conventions, as in PoreSpy: pore voxels connect through faces (6-connectivity in 3D,
4 in 2D) for percolation, the strictest choice (fluid does not flow through an edge contact); the
Euler number counts the pore space with 26-connectivity (8 in 2D), scikit-image's default.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError

#: Slices per slab for the streamed measures (bounded memory on big, memory-mapped volumes).
SLAB = 32

#: Axis names of a (Z, Y, X) volume.
AXES = ("z", "y", "x")

#: Bytes per voxel the whole-volume measures need at their peak, measured with tracemalloc on a
#: 32 x 192 x 192 volume (12 and 59) plus the caller's boolean pore mask: local thickness holds a
#: float32 distance map and result while scipy's distance transform allocates a float64 output
#: and int32 feature indices per axis; connectivity an int32 label image and its counts.
BYTES_PER_VOXEL = {"connectivity": 13, "local thickness": 60}


def is_2d(shape: Sequence[int]) -> bool:
    """Whether a ``(Z, Y, X)`` volume is a single slice, measured in 2D."""
    return shape[0] == 1


def phase_fractions(labels: np.ndarray, values: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Volume fraction of each class value, whole and per slice (streamed slab by slab).

    Returns
    -------
    whole : ndarray, shape (K,)
        Fraction of all voxels holding each value.
    per_slice : ndarray, shape (K, Z)
        Fraction of each slice's pixels holding each value.
    """
    values = np.asarray(values)
    per_slice = np.zeros((len(values), labels.shape[0]))
    plane = labels.shape[1] * labels.shape[2]
    for z0 in range(0, labels.shape[0], SLAB):
        slab = np.asarray(labels[z0 : z0 + SLAB]).reshape(-1, plane)
        for k, value in enumerate(values):
            per_slice[k, z0 : z0 + len(slab)] = np.count_nonzero(slab == value, axis=1) / plane
    return per_slice.mean(axis=1), per_slice


def connectivity(pore: np.ndarray) -> tuple[dict[str, float], dict[str, bool | None], float]:
    """Pore space that connects opposite faces of the volume, per axis (face connectivity).

    A pore cluster (face-connected, as PoreSpy's ``trim_nonpercolating_paths``) is connected along
    an axis when it touches both faces normal to that axis. A single slice has no z faces: its z
    entries are None.

    Returns
    -------
    per_axis : dict
        Axis name -> fraction of the whole volume in clusters connecting that axis' faces.
    percolates : dict
        Axis name -> whether any cluster connects that axis' faces (None for z in 2D).
    connected : float
        Fraction of the volume in clusters that connect the faces of at least one axis.
    """
    axes = (1, 2) if is_2d(pore.shape) else (0, 1, 2)
    structure = ndi.generate_binary_structure(3, 1)
    if is_2d(pore.shape):
        structure[0] = structure[2] = False  # no neighbours across the (absent) z direction
    labels, n = ndi.label(pore, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    per_axis: dict[str, float] = {name: None for name in AXES}  # type: ignore[misc]
    percolates: dict[str, bool | None] = {name: None for name in AXES}
    spanning_any = np.zeros(n + 1, dtype=bool)
    for axis in axes:
        first = np.unique(labels.take(0, axis=axis))
        last = np.unique(labels.take(-1, axis=axis))
        spanning = np.intersect1d(first, last)
        spanning = spanning[spanning != 0]
        spanning_any[spanning] = True
        per_axis[AXES[axis]] = float(sizes[spanning].sum() / pore.size)
        percolates[AXES[axis]] = bool(spanning.size)
    return per_axis, percolates, float(sizes[spanning_any].sum() / pore.size)


def _blurred(mask: np.ndarray, two_d: bool) -> np.ndarray:
    """Mean over each voxel and its face neighbours (PoreSpy's ``mesh_region`` blur with ball(1)).

    The blur gives marching cubes a grey level to place the surface between voxels; without it
    a binary sphere's area comes out ~10 % high, with it within ~3 % for radii of 4-25 voxels.
    """
    structure = ndi.generate_binary_structure(3, 1).astype(np.float32)
    if two_d:
        structure[0] = structure[2] = 0
    structure /= structure.sum()
    return ndi.convolve(mask.astype(np.float32), structure, mode="nearest")


def specific_surface_area(labels: np.ndarray, value: int, voxel_size: Sequence[float]) -> float:
    """Interface area of one phase per unit volume (1/length), streamed slab by slab.

    3D: marching cubes (scikit-image) at level 0.5 on the phase mask blurred over face
    neighbours, vertices in physical units, area divided by the volume's physical volume. The
    volume's outer faces are not counted (the surface stays open there). 2D (one slice): the
    perimeter of the phase per unit area, by marching squares on the same blur.
    """
    from skimage.measure import find_contours, marching_cubes, mesh_surface_area

    spacing = np.asarray(voxel_size, dtype=float)
    if is_2d(labels.shape):
        grey = _blurred(np.asarray(labels) == value, two_d=True)[0]
        length = 0.0
        if grey.min() < 0.5 < grey.max():
            for contour in find_contours(grey, 0.5):
                length += float(np.linalg.norm(np.diff(contour * spacing[1:], axis=0), axis=1).sum())
        return length / (grey.size * spacing[1] * spacing[2])
    area = 0.0
    n_z = labels.shape[0]
    for z0 in range(0, n_z - 1, SLAB):
        # Slabs overlap by one slice (plus one for the blur on each side) so that every cube
        # between two slices is meshed exactly once.
        lo, hi = max(z0 - 1, 0), min(z0 + SLAB + 2, n_z)
        grey = _blurred(np.asarray(labels[lo:hi]) == value, two_d=False)
        grey = grey[z0 - lo : z0 - lo + SLAB + 1]
        if len(grey) < 2 or not grey.min() < 0.5 < grey.max():
            continue
        verts, faces, _, _ = marching_cubes(grey, 0.5, spacing=tuple(spacing))
        area += float(mesh_surface_area(verts, faces))
    return area / (labels.size * float(np.prod(spacing)))


def euler_number(pore: np.ndarray) -> int:
    """Euler characteristic of the pore space, 26-connected (8 in 2D), streamed slab by slab.

    The Euler number is additive: for slabs overlapping by one slice,
    chi(whole) = sum chi(slab) - sum chi(shared slice).
    """
    from skimage.measure import euler_number as skimage_euler

    if is_2d(pore.shape):
        return int(skimage_euler(np.asarray(pore[0]), connectivity=2))
    n_z, chi = pore.shape[0], 0
    starts = list(range(0, n_z - 1, SLAB)) or [0]
    for i, z0 in enumerate(starts):
        chi += skimage_euler(np.asarray(pore[z0 : z0 + SLAB + 1]), connectivity=3)
        if i + 1 < len(starts):
            chi -= skimage_euler(np.asarray(pore[z0 + SLAB : z0 + SLAB + 1]), connectivity=3)
    return int(chi)


def local_thickness(pore: np.ndarray, voxel_size: Sequence[float], n_sizes: int = 25) -> np.ndarray:
    """Local thickness of the pore space: the diameter of the largest ball that fits in the pore
    space and covers the voxel (Hildebrand & Rüegsegger 1997), in physical units.

    The distance map is the Euclidean distance (with the voxel size as sampling) from each pore
    voxel centre to the nearest non-pore voxel centre, as in PoreSpy; pore space open to the
    volume's faces is not closed by them. Ball radii are ``n_sizes`` values from the smallest
    voxel edge to the largest distance; each voxel takes the largest radius whose balls reach it
    (``2 * radius`` is stored). One slice: discs in the slice plane.

    Returns
    -------
    ndarray, float32
        Local thickness (diameter) of each pore voxel; 0 outside the pore space, and 0 everywhere
        when the volume holds no solid (nothing bounds the balls).
    """
    pore = np.asarray(pore, dtype=bool)
    squeeze = is_2d(pore.shape)
    mask = pore[0] if squeeze else pore
    physical = np.asarray(voxel_size[1:] if squeeze else voxel_size, dtype=float)
    # Work in units of the smallest edge, so scaling the voxel size scales the result exactly
    # (float32 rounding of physical distances would otherwise move voxels between radii).
    scale = float(physical.min())
    sampling = tuple(physical / scale)
    result = np.zeros(mask.shape, dtype=np.float32)
    if not mask.any() or mask.all():  # no pore, or no wall: no ball is bounded, no thickness
        return result[None] if squeeze else result
    dist = ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)
    radii = np.unique(np.linspace(1.0, float(dist.max()), n_sizes).astype(np.float32))[::-1]
    for radius in radii:
        seeds = dist >= radius
        if not seeds.any():
            continue
        reach = ndi.distance_transform_edt(~seeds, sampling=sampling) <= radius
        result[reach & mask & (result == 0)] = 2 * radius
    result *= np.float32(scale)
    return result[None] if squeeze else result


def size_distribution(thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct local-thickness diameters and the fraction of pore volume at each (ascending)."""
    values = thickness[thickness > 0]
    if values.size == 0:
        return np.zeros(0), np.zeros(0)
    diameters, counts = np.unique(values, return_counts=True)
    return diameters.astype(float), counts / values.size


def rev_curve(
    pore: np.ndarray, voxel_size: Sequence[float], n_sizes: int = 12, centres: Sequence[Sequence[float]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Porosity of growing sub-cubes (squares in 2D) around several centres.

    Edge lengths are ``n_sizes`` geometric steps from 4 voxels to the volume's shortest physical
    extent; a cube is shifted to stay inside the volume. The default centres are the middle and
    four points at a quarter / three quarters of each extent.

    Returns
    -------
    sizes : ndarray, shape (S,)
        Edge lengths, physical units.
    porosity : ndarray, shape (C, S)
        Porosity of the cube of each size around each centre.
    """
    shape = np.asarray(pore.shape)
    spacing = np.asarray(voxel_size, dtype=float)
    axes = [1, 2] if is_2d(pore.shape) else [0, 1, 2]
    extent = shape * spacing
    largest = float(extent[axes].min())
    smallest = min(4 * float(spacing[axes].max()), largest)
    sizes = np.unique(np.geomspace(smallest, largest, n_sizes))
    if centres is None:
        centres = [(0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (0.75, 0.75, 0.75), (0.25, 0.75, 0.75), (0.75, 0.25, 0.25)]
    porosity = np.zeros((len(centres), len(sizes)))
    for i, centre in enumerate(centres):
        for j, size in enumerate(sizes):
            box = []
            for axis in range(3):
                if axis not in axes:
                    box.append(slice(0, shape[axis]))
                    continue
                n = int(np.clip(round(size / spacing[axis]), 1, shape[axis]))
                start = int(np.clip(round(centre[axis] * shape[axis] - n / 2), 0, shape[axis] - n))
                box.append(slice(start, start + n))
            cube = pore[tuple(box)]
            porosity[i, j] = np.count_nonzero(cube) / cube.size
    return sizes, porosity


def rev_size(sizes: np.ndarray, porosity: np.ndarray, total: float, tolerance: float = 0.01) -> float | None:
    """Smallest edge from which every centre's porosity stays within ``tolerance`` of ``total``.

    The largest cube alone is no evidence (it nearly is the whole volume), so a curve that only
    settles there gives None, as does one that never settles.
    """
    within = np.all(np.abs(porosity - total) <= tolerance, axis=0)
    settled = None
    for j in range(len(sizes) - 1, -1, -1):
        if not within[j]:
            break
        settled = j
    if settled is None or settled == len(sizes) - 1:
        return None
    return float(sizes[settled])


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(shape: Sequence[int], measure: str, available: int | None = None) -> None:
    """Refuse a whole-volume measure that would not fit in the memory available now.

    Raises
    ------
    InputError
        Naming the measure, the volume shape, the memory it needs and what is available.
    """
    available = available_memory() if available is None else available
    need = int(np.prod(shape)) * BYTES_PER_VOXEL[measure]
    if available is not None and need > available:
        hint = ", or leave pore sizes out (--no-pore-sizes)" if measure == "local thickness" else ""
        raise InputError(
            f"{measure} needs the whole pore space in memory: about {need / 2**30:.1f} GiB for a "
            f"{' x '.join(str(s) for s in shape)} volume, but only {available / 2**30:.1f} GiB is "
            f"available; analyse a sub-volume{hint}"
        )
