"""Segmentation metrics from one confusion matrix: IoU, Dice, accuracy, phase fractions.

Every figure derives from a single ``(K, K)`` confusion matrix (rows = truth, columns =
prediction), counted with :func:`numpy.bincount` over slabs of slices so memory stays bounded
for volumes of any depth. Per-class IoU is ``TP / (TP + FP + FN)`` per class id. (The
``logical_and(truth, pred)`` "IoU" seen in tutorial notebooks treats class ids as booleans and
measures nothing useful; it is deliberately not reproduced here.)

A class absent from both truth and prediction has no defined IoU or Dice: it is NaN and left
out of the mean. :func:`to_json_dict` turns NaN into ``None`` for JSON.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .classmap import default_names
from .errors import InputError
from .io import jsonable

#: Voxels counted per bincount call; bounds the int64 temporaries to ~100 MB.
CHUNK_VOXELS = 1 << 22


#: Plain-language names of the figures training and evaluation report (Keras log keys and
#: report keys), for every label, legend and status line a user reads.
METRIC_LABELS = {
    "loss": "training loss",
    "val_loss": "validation loss",
    "val_mean_iou": "validation mean IoU",
    "mean_iou": "mean IoU",
    "pixel_accuracy": "pixel accuracy",
    "learning_rate": "learning rate",
}


def metric_label(name: str) -> str:
    """The plain-language label of an internal metric name (the name itself when unknown)."""
    return METRIC_LABELS.get(name, name.replace("_", " "))


def format_figure(name: str, value: float | None) -> str:
    """A figure rounded for reading: IoU, Dice and accuracy to 3 decimals, others to 4 significant digits.

    Parameters
    ----------
    name : str
        Internal metric name (``"val_mean_iou"``, ``"loss"``, ...); its kind decides the rounding.
    value : float or None
        None or NaN gives ``"n/a"``.
    """
    if _is_missing(value):
        return "n/a"
    if any(word in name for word in ("iou", "dice", "accuracy")):
        return f"{float(value):.3f}"
    return f"{float(value):.4g}"


def class_value_mismatch(truth_values: Sequence[int], pred_values: Sequence[int], truth_name: str = "truth",
                         pred_name: str = "prediction") -> str | None:
    """A warning when truth and prediction seem to number their classes differently, else None.

    IoU compares equal class values only. When each side holds values the other lacks (truth
    1..4 and prediction 0..3, say), the two were most likely written with different class
    numberings and every figure is meaningless; a prediction that merely misses a class of the
    truth is not warned about.

    Parameters
    ----------
    truth_values, pred_values : sequence of int
        The class values present in each.
    truth_name, pred_name : str
        What to call each in the message (file or layer names).
    """
    truth_set, pred_set = {int(v) for v in truth_values}, {int(v) for v in pred_values}
    shared = truth_set & pred_set
    if len(shared) >= len(truth_set) or len(shared) >= len(pred_set):
        return None
    return (
        f"{truth_name} holds class values {_value_list(truth_set)} but {pred_name} holds "
        f"{_value_list(pred_set)} (shared: {_value_list(shared)}); IoU compares equal values only, so check "
        "that both use the same class values (e.g. not 0..3 in one and 1..4 in the other)"
    )


def _value_list(values: set[int], limit: int = 12) -> str:
    """``[0, 1, 2]``, cut to ``limit`` values for very many."""
    ordered = sorted(values)
    if len(ordered) <= limit:
        return str(ordered)
    return "[" + ", ".join(str(v) for v in ordered[:limit]) + f", ... ({len(ordered)} values)]"


def confusion_matrix(truth_ids: np.ndarray, pred_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Count voxels per (truth class, predicted class) pair.

    Parameters
    ----------
    truth_ids, pred_ids : ndarray
        Integer class ids in ``0..n_classes-1``, same shape (any number of dimensions).
    n_classes : int
        Number of classes ``K``.

    Returns
    -------
    ndarray
        ``(K, K)`` int64; ``cm[i, j]`` counts voxels of true class ``i`` predicted as ``j``.

    Raises
    ------
    InputError
        If the shapes differ, the arrays are not integer, or an id is out of range.
    """
    truth_ids, pred_ids = _as_volumes(truth_ids, pred_ids, n_classes)
    return _slice_confusions(truth_ids, pred_ids, n_classes).sum(axis=0)


def per_slice_iou(truth_ids: np.ndarray, pred_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean IoU of each slice along the first axis.

    Parameters
    ----------
    truth_ids, pred_ids : ndarray
        ``(Z, Y, X)`` integer class ids (a 2D pair counts as one slice).
    n_classes : int
        Number of classes ``K``.

    Returns
    -------
    ndarray
        ``(Z,)`` float64; each slice's IoU averaged over the classes present in that slice's
        truth or prediction.
    """
    truth_ids, pred_ids = _as_volumes(truth_ids, pred_ids, n_classes)
    return _mean_iou_per_slice(_slice_confusions(truth_ids, pred_ids, n_classes))


def changed_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of pixels whose class changed between two segmentations of the same slice.

    A training figure that needs no labels: while a model trained on a few strokes is still
    learning, its segmentation of a slice keeps changing; once the share stays near 0, more
    training of the same kind will not change what the user sees. Unlike a validation IoU on
    painted pixels, it looks at every pixel of the slice.

    Parameters
    ----------
    before, after : ndarray
        Class ids (or label values) of the same shape.

    Returns
    -------
    float
        In [0, 1].
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"segmentations of shape {before.shape} and {after.shape} cannot be compared")
    return float(np.count_nonzero(before != after)) / max(before.size, 1)


def report_from_confusion(
    cm: np.ndarray,
    class_values: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Derive every metric from a confusion matrix.

    Parameters
    ----------
    cm : ndarray
        ``(K, K)`` counts, rows = truth, columns = prediction.
    class_values : sequence of int, optional
        The original mask value of each class (default ``0..K-1``).
    names : sequence of str, optional
        Class names (default: the sandstone names for 4 classes, ``class i`` otherwise).

    Returns
    -------
    dict
        ``per_class_iou``, ``dice``, ``phase_fractions`` (truth), ``predicted_fractions``
        (``(K,)`` float arrays, NaN where undefined), ``mean_iou`` and ``pixel_accuracy``
        (floats), ``confusion_matrix`` (``(K, K)`` int64), ``class_values``, ``class_names``,
        ``n_classes``, ``n_voxels``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise InputError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    k = cm.shape[0]
    values = list(range(k)) if class_values is None else [int(v) for v in class_values]
    labels = list(default_names(k)) if names is None else [str(n) for n in names]
    if len(values) != k or len(labels) != k:
        raise InputError(f"{k} classes but {len(values)} class values and {len(labels)} names")
    iou, dice = _iou_dice(cm)
    total = int(cm.sum())
    return {
        "per_class_iou": iou,
        "mean_iou": _nanmean(iou),
        "dice": dice,
        "pixel_accuracy": float(np.trace(cm) / total) if total else math.nan,
        "confusion_matrix": cm,
        "phase_fractions": _fractions(cm.sum(axis=1), total),
        "predicted_fractions": _fractions(cm.sum(axis=0), total),
        "class_values": values,
        "class_names": labels,
        "n_classes": k,
        "n_voxels": total,
    }


def evaluate(
    truth_ids: np.ndarray,
    pred_ids: np.ndarray,
    n_classes: int,
    class_values: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare a prediction with ground truth.

    Parameters
    ----------
    truth_ids, pred_ids : ndarray
        Integer class ids ``0..n_classes-1``, same shape; ``(Z, Y, X)`` or 2D.
    n_classes : int
        Number of classes ``K``.
    class_values, names : sequence, optional
        As in :func:`report_from_confusion`.

    Returns
    -------
    dict
        The :func:`report_from_confusion` report plus ``per_slice_iou`` (``(Z,)`` mean IoU per
        slice), all from one pass over the data.
    """
    truth_ids, pred_ids = _as_volumes(truth_ids, pred_ids, n_classes)
    per_slice = _slice_confusions(truth_ids, pred_ids, n_classes)
    report = report_from_confusion(per_slice.sum(axis=0), class_values, names)
    report["per_slice_iou"] = _mean_iou_per_slice(per_slice)
    return report


def to_json_dict(report: dict[str, Any]) -> dict[str, Any]:
    """A JSON-serialisable copy of a report: arrays to lists, NaN/Inf to ``None``.

    Parameters
    ----------
    report : dict
        Any (nested) dict of numbers, arrays, lists and strings.

    Returns
    -------
    dict
        Same structure with only plain Python types.
    """
    return jsonable(report)


def format_table(report: dict[str, Any]) -> str:
    """The per-class table the CLI prints.

    Parameters
    ----------
    report : dict
        As returned by :func:`evaluate` or :func:`report_from_confusion` (or its JSON form).

    Returns
    -------
    str
        One row per class (name, value, IoU, Dice, truth and predicted fraction), then the
        mean IoU and pixel accuracy.
    """
    header = f"{'class':<16}{'value':>7}{'IoU':>8}{'Dice':>8}{'truth frac':>12}{'pred frac':>11}"
    rows = [header, "-" * len(header)]
    columns = zip(
        report["class_names"],
        report["class_values"],
        report["per_class_iou"],
        report["dice"],
        report["phase_fractions"],
        report["predicted_fractions"],
    )
    for name, value, iou, dice, truth_frac, pred_frac in columns:
        rows.append(
            f"{str(name)[:15]:<16}{int(value):>7}{_fmt(iou, 3):>8}{_fmt(dice, 3):>8}"
            f"{_fmt(truth_frac, 4):>12}{_fmt(pred_frac, 4):>11}"
        )
    n_defined = sum(1 for v in report["per_class_iou"] if not _is_missing(v))
    rows.append(f"mean IoU:       {_fmt(report['mean_iou'], 4)} (over {n_defined} classes present)")
    rows.append(f"pixel accuracy: {_fmt(report['pixel_accuracy'], 4)}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_volumes(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a truth/prediction pair and view 0D-2D inputs as a stack of slices."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if int(n_classes) < 1:
        raise InputError(f"n_classes must be at least 1, got {n_classes}")
    if truth.shape != pred.shape:
        raise InputError(f"truth has shape {truth.shape} but prediction has shape {pred.shape}; they must match")
    for name, arr in (("truth", truth), ("prediction", pred)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise InputError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n_classes):
            raise InputError(
                f"{name} holds class ids {int(arr.min())}..{int(arr.max())}; expected 0..{n_classes - 1}"
            )
    if truth.ndim < 3:
        truth, pred = truth.reshape((1, -1)), pred.reshape((1, -1))
    return truth, pred


def _slice_confusions(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``(Z, K, K)`` confusion matrices, one per slice, counted in bounded-memory slabs."""
    n_slices = truth.shape[0]
    per_slice_voxels = max(1, int(np.prod(truth.shape[1:])))
    step = max(1, CHUNK_VOXELS // per_slice_voxels)
    out = np.empty((n_slices, k, k), dtype=np.int64)
    for z0 in range(0, n_slices, step):
        z1 = min(n_slices, z0 + step)
        t = truth[z0:z1].reshape(z1 - z0, -1).astype(np.int64)
        p = pred[z0:z1].reshape(z1 - z0, -1).astype(np.int64)
        # One bincount for the slab: each slice gets its own block of K*K bins.
        slice_offset = (np.arange(z1 - z0, dtype=np.int64) * (k * k))[:, None]
        codes = slice_offset + t * k + p
        counts = np.bincount(codes.ravel(), minlength=(z1 - z0) * k * k)
        out[z0:z1] = counts.reshape(z1 - z0, k, k)
    return out


def _iou_dice(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and Dice over the last two axes; NaN where a class is in neither."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (union + tp), np.nan)
    return iou, dice


def _mean_iou_per_slice(per_slice: np.ndarray) -> np.ndarray:
    """Mean of the defined per-class IoUs of each slice."""
    iou, _ = _iou_dice(per_slice)
    defined = ~np.isnan(iou)
    n = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, iou, 0.0).sum(axis=-1) / n, np.nan)


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a RuntimeWarning) when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _fractions(counts: np.ndarray, total: int) -> np.ndarray:
    if total == 0:
        return np.full(counts.shape, np.nan)
    return counts / float(total)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if _is_missing(value) else f"{float(value):.{digits}f}"
