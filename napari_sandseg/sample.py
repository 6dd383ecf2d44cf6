"""Synthetic 4-phase "sandstone" volumes with exact ground truth, for tests and demos.

The generator imitates what makes the real micro-CT data hard, so that a model that works
here has learned something a global threshold cannot do:

* quartz grains are blobs of a smooth 3D random field, so they continue across slices;
* clay sits as patchy rims and throat fillings in the pore space next to grains; it is
  strongly speckled at the voxel scale (micro-porosity), so its grey values spread over the
  pore and quartz ranges while its texture stays recognisable;
* small, rare bright-mineral grains are attached to quartz grains;
* the scanner's partial-volume blur smears every boundary into intermediate grey values,
  a slow beam-hardening shading (darker core, drift along Z) moves every phase's grey level
  by a few tens of grey values, and detector noise is added on top.

Phase ids are ordered by mean intensity like the real data: 0 pore < 1 clay < 2 quartz <
3 bright mineral. :func:`threshold_baseline` finds the best possible global thresholds for
that order, showing how far below a learned model they stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
from scipy import ndimage as ndi

from . import io
from .classmap import SANDSTONE_NAMES, ClassMap
from .errors import ConfigError
from .metrics import evaluate

PathLike = Union[str, Path]

#: Grey level of each phase before blur, shading and noise (the real data's means are
#: 14 / 85 / 125 / 244; pore is brighter here because real pore includes the air outside).
PHASE_MEANS = (30.0, 90.0, 140.0, 245.0)

#: Target volume fractions, near the real sandstone's 0.48 / 0.04 / 0.46 / 0.02.
GRAIN_FRACTION = 0.50  # quartz + bright
CLAY_FRACTION = 0.065  # carved from the pore side of the grain boundaries
BRIGHT_FRACTION = 0.02

#: Geometry, in voxels.
GRAIN_SIGMA = 5.0  # correlation length of the grain field: grains ~15-25 voxels across
CLAY_PATCH_SIGMA = 6.0  # size of the clay patches
CLAY_PATCHINESS = 1.7  # weight of the patch field: higher = patchier, less rim-like clay
BRIGHT_SIGMA = 5.0  # size of the bright-mineral grains
BRIGHT_BAND = 0.08  # volume fraction of pore next to grains where bright grains may reach

#: Imaging, in voxels and grey values.
BLUR_SIGMA = 0.9  # partial-volume blur of the scanner
CLAY_SPECKLE = 50.0  # std of the clay texture
CLAY_SPECKLE_SIGMA = 0.7  # grain of the clay texture
NOISE_STD = 8.0  # detector noise


def make_sandstone(shape: tuple[int, int, int] = (1600, 128, 128), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate a synthetic sandstone volume and its exact 4-phase labels.

    Parameters
    ----------
    shape : tuple of int
        ``(Z, Y, X)`` size; each side at least 8.
    seed : int
        Random seed; the same seed and shape always give the same volume.

    Returns
    -------
    image : ndarray
        ``(Z, Y, X)`` uint8 grey values.
    labels : ndarray
        ``(Z, Y, X)`` uint8 phase ids: 0 pore, 1 clay, 2 quartz, 3 bright mineral.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    labels = _phase_labels(shape, rng)
    image = _render(labels, rng)
    return image, labels


def threshold_baseline(image: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Score the best global grey-value thresholds for intensity-ordered phases.

    The phases are assumed ordered by mean intensity (class 0 darkest). The ``K - 1`` cut
    points are chosen exactly, by dynamic programming over the 256-bin histogram of each
    class, to maximise the mean IoU; no other set of global thresholds scores higher.

    Parameters
    ----------
    image : ndarray
        Grey values (uint8 directly; other dtypes are binned into 256 levels).
    labels : ndarray
        Integer class ids ``0..K-1``, same shape.

    Returns
    -------
    dict
        The :func:`napari_sandseg.metrics.evaluate` report of the thresholded image, plus
        ``thresholds``: the ``K - 1`` cut points in image units (a voxel ``v`` goes to class
        ``i`` when ``thresholds[i-1] <= v < thresholds[i]``).
    """
    labels = np.asarray(labels)
    levels, edges = _to_levels(np.asarray(image))
    n_classes = int(labels.max()) + 1
    # hist[k, v]: voxels of class k at grey level v, counted slice by slice to bound memory.
    hist = np.zeros((n_classes, 256), dtype=np.int64)
    for z in range(levels.shape[0]):
        codes = labels[z].astype(np.int64).ravel() * 256 + levels[z].ravel()
        hist += np.bincount(codes, minlength=n_classes * 256).reshape(n_classes, 256)
    cuts = _best_cuts(hist)
    lut = np.searchsorted(np.asarray(cuts), np.arange(256), side="right").astype(np.uint8)
    report = evaluate(labels, lut[levels], n_classes)
    report["thresholds"] = [float(edges[c]) for c in cuts]
    return report


def write_sample(
    out_dir: PathLike,
    shape: tuple[int, int, int] = (1600, 128, 128),
    seed: int = 0,
    overwrite: bool = False,
    compression: str | None = None,
) -> tuple[Path, Path]:
    """Generate a synthetic sandstone and write ``images.tif`` and ``masks.tif``.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created if missing).
    shape, seed
        As in :func:`make_sandstone`.
    overwrite : bool
        Replace existing files.
    compression : {None, "zlib"}
        TIFF compression, as in :func:`napari_sandseg.io.write_volume`.

    Returns
    -------
    tuple of Path
        ``(images_path, masks_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = make_sandstone(shape, seed)
    images_path = io.write_volume(out / "images.tif", image, overwrite=overwrite, compression=compression)
    masks_path = io.write_labels(
        out / "masks.tif", labels, ClassMap((0, 1, 2, 3), SANDSTONE_NAMES), overwrite=overwrite, compression=compression
    )
    return images_path, masks_path


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < 8 for s in shape):
        raise ConfigError(f"shape must be (Z, Y, X) with every side >= 8, got {tuple(shape)}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _smooth_field(shape: tuple[int, int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Standardised Gaussian random field with correlation length ``sigma`` voxels.

    Wide fields are smoothed on a grid coarsened ~sigma/1.5 times and upsampled linearly: the
    same kind of field at a fraction of the cost of a full-size 3D filter.
    """
    factor = max(1, int(sigma / 1.5))
    small = tuple(-(-s // factor) + 2 for s in shape)
    noise = rng.standard_normal(small, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, sigma / factor, mode="wrap")
    for axis in range(3):
        noise = _upsample_linear(noise, factor, axis, shape[axis])
    field = noise
    # The field is stationary: mean and std from a subset of slices are as good and much cheaper.
    sample = field[:: max(1, shape[0] // 64)]
    return (field - sample.mean()) / np.float32(sample.std() + 1e-12)


def _upsample_linear(array: np.ndarray, factor: int, axis: int, size: int) -> np.ndarray:
    """Linear interpolation by an integer ``factor`` along one axis, cropped to ``size``.

    Several times faster than :func:`scipy.ndimage.zoom` for this one job, which dominated
    the generator's run time.
    """
    if factor == 1:
        index = [slice(None)] * array.ndim
        index[axis] = slice(0, size)
        return array[tuple(index)]
    pos = np.arange(size)
    lower = pos // factor
    weight_shape = [1] * array.ndim
    weight_shape[axis] = size
    weight = ((pos % factor) / factor).astype(np.float32).reshape(weight_shape)
    low = np.take(array, lower, axis=axis)
    high = np.take(array, lower + 1, axis=axis)
    return low + (high - low) * weight


def _quantile(field: np.ndarray, q: float) -> float:
    """Quantile from a strided subsample: fractions need ~1e-3 accuracy, not a full sort."""
    flat = field.ravel()
    step = max(1, flat.size // 2_000_000)
    return float(np.quantile(flat[::step], q))


def _phase_labels(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Place quartz grains, clay rims/fillings and bright grains; return phase ids."""
    grain = _smooth_field(shape, GRAIN_SIGMA, rng)
    grain_cut = _quantile(grain, 1.0 - GRAIN_FRACTION)
    is_grain = grain > grain_cut
    # Clay hugs the grains and reaches into the pore space where a patchy field is high: the
    # smooth grain field is highest right next to grains, so adding the patch field to it gives
    # rims of varying thickness that thicken into throat fillings.
    patches = _smooth_field(shape, CLAY_PATCH_SIGMA, rng)
    clay_field = grain + CLAY_PATCHINESS * patches
    pore = ~is_grain
    clay_cut = _quantile(clay_field[pore], 1.0 - CLAY_FRACTION / max(pore.mean(), 1e-6))
    rim_cut = _quantile(grain, 1.0 - GRAIN_FRACTION - BRIGHT_BAND)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[is_grain] = 2
    labels[pore & (clay_field > clay_cut)] = 1
    # Bright mineral: small blobs of a fine field, kept only inside or against quartz grains.
    bright = _smooth_field(shape, BRIGHT_SIGMA, rng)
    allowed = grain > rim_cut
    bright_cut = _quantile(bright[allowed], 1.0 - BRIGHT_FRACTION / max(allowed.mean(), 1e-6))
    labels[allowed & (bright > bright_cut)] = 3
    return labels


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey values: phase means + texture, blur, shading and noise, as uint8."""
    image = np.asarray(PHASE_MEANS, dtype=np.float32)[labels]
    image = ndi.gaussian_filter(image, BLUR_SIGMA, truncate=3.0)
    # Clay is a fine-grained aggregate of clay minerals and micropores below the resolution:
    # strongly speckled at the voxel scale, so its grey values reach into the pore and quartz
    # ranges. That texture (not a mean shift) is what a CNN can learn and a threshold cannot.
    # It is added after the blur because it is the texture as imaged, not the material.
    speckle = _smooth_field(labels.shape, CLAY_SPECKLE_SIGMA, rng)
    image += np.where(labels == 1, speckle * np.float32(CLAY_SPECKLE), np.float32(0.0))
    image *= _shading(labels.shape, rng)
    image += rng.standard_normal(labels.shape, dtype=np.float32) * np.float32(NOISE_STD)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shading(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative beam-hardening shading: darker core, slow drift along Z, low-frequency wobble."""
    z, y, x = (np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape)
    radial = y[:, None] ** 2 + x[None, :] ** 2  # 0 at the centre, 2 in the corners
    phase = rng.uniform(0, 2 * np.pi)
    drift = 0.12 * np.sin(2.5 * np.pi * z + phase)  # +-12 % over the depth
    # A smooth wobble of a few percent, made on a coarse grid (~1/8 of Z, 1/16 of Y and X).
    factors = (8, 16, 16)
    coarse = rng.standard_normal(tuple(-(-s // f) + 2 for s, f in zip(shape, factors)), dtype=np.float32)
    lowfreq = ndi.gaussian_filter(coarse, 1.0, mode="wrap")
    lowfreq *= np.float32(0.06) / np.float32(lowfreq.std() + 1e-12)
    for axis, factor in enumerate(factors):
        lowfreq = _upsample_linear(lowfreq, factor, axis, shape[axis])
    core = 0.86 + 0.1 * radial  # core ~14 % darker than the rim
    return (core[None] + drift[:, None, None] + lowfreq).astype(np.float32)


def _to_levels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels 0..255 and each level's lower edge in image units."""
    if image.dtype == np.uint8:
        return image, np.arange(257, dtype=np.float64)
    lo, hi = float(image.min()), float(image.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 257)
    levels = np.clip(np.searchsorted(edges, image, side="right") - 1, 0, 255).astype(np.uint8)
    return levels, edges


def _best_cuts(hist: np.ndarray) -> list[int]:
    """Exact mean-IoU-optimal cut points for intensity-ordered classes.

    Class ``k`` takes the levels ``[c_k, c_{k+1})`` with ``c_0 = 0`` and ``c_K = 256``. Its
    IoU for interval ``[a, b)`` is ``TP / (T_k + P - TP)`` with ``TP`` its own voxels in the
    interval and ``P`` all voxels in it; both come from cumulative histograms, so the IoU of
    every interval is one (257, 257) table per class, and the best chain of intervals follows
    by dynamic programming in O(K * 257^2).
    """
    n_classes = hist.shape[0]
    cum = np.concatenate([np.zeros((n_classes, 1), np.int64), np.cumsum(hist, axis=1)], axis=1)
    cum_all = cum.sum(axis=0)
    a = np.arange(257)[:, None]
    b = np.arange(257)[None, :]
    valid = b >= a
    present = hist.sum(axis=1) > 0
    best = np.where(np.arange(257) == 0, 0.0, -np.inf)  # best[t]: score with cut at t so far
    choices = []
    for k in range(n_classes):
        tp = np.where(valid, cum[k][b] - cum[k][a], 0)
        pred = np.where(valid, cum_all[b] - cum_all[a], 0)
        union = cum[k][-1] + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, 0.0)
        # A class absent from the truth scores nothing either way (and may take no levels).
        score = np.where(valid, iou if present[k] else 0.0, -np.inf)
        total = best[:, None] + score
        choices.append(np.argmax(total, axis=0))
        best = total.max(axis=0)
    cuts = [256]
    for k in range(n_classes - 1, 0, -1):
        cuts.append(int(choices[k][cuts[-1]]))
    return sorted(cuts[1:])
