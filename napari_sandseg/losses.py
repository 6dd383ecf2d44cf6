"""Masked losses for partly annotated targets.

Targets are one-hot and all-zero where a pixel is not annotated, so ``y * log(p)`` already
vanishes there: no weight map is needed, and a dense mask (every pixel one-hot, class 0 a real
phase) is just the special case with nothing ignored.
"""

from __future__ import annotations

from typing import Callable

from .choices import LOSSES, check_choice

_EPS = 1e-7


def masked_crossentropy(y_true, y_pred):
    """Cross-entropy averaged over annotated pixels: ``sum(-y log p) / max(sum(y), 1)``.

    Parameters
    ----------
    y_true : tensor (B, H, W, K)
        One-hot targets, all-zero at ignored pixels.
    y_pred : tensor (B, H, W, K)
        Softmax probabilities.

    Returns
    -------
    scalar tensor
        Mean over the annotated pixels of the whole batch; 0 when none is annotated.
    """
    from ._tf import tf

    t = tf()
    y_true = t.cast(y_true, t.float32)
    y_pred = t.clip_by_value(t.cast(y_pred, t.float32), _EPS, 1.0)
    total = -t.reduce_sum(y_true * t.math.log(y_pred))
    return total / t.maximum(t.reduce_sum(y_true), 1.0)


def masked_dice_loss(y_true, y_pred):
    """Soft Dice loss, ``1 - mean_k dice_k``, over annotated pixels only.

    Ignored pixels (all-zero target rows) are removed from the prediction too, so they neither
    add false positives nor change the score. Classes absent from both target and prediction
    count as a perfect match (smoothing term).
    """
    from ._tf import tf

    t = tf()
    y_true = t.cast(y_true, t.float32)
    annotated = t.reduce_sum(y_true, axis=-1, keepdims=True)  # 1 where annotated, else 0
    y_pred = t.cast(y_pred, t.float32) * annotated
    axes = [0, 1, 2]
    inter = t.reduce_sum(y_true * y_pred, axis=axes)
    denom = t.reduce_sum(y_true, axis=axes) + t.reduce_sum(y_pred, axis=axes)
    dice = (2.0 * inter + 1.0) / (denom + 1.0)
    return 1.0 - t.reduce_mean(dice)


def masked_ce_dice(y_true, y_pred):
    """Masked cross-entropy plus masked soft Dice loss (helps rare phases)."""
    return masked_crossentropy(y_true, y_pred) + masked_dice_loss(y_true, y_pred)


def masked_accuracy(y_true, y_pred):
    """Share of annotated pixels whose most probable class is the target class."""
    from ._tf import tf

    t = tf()
    y_true = t.cast(y_true, t.float32)
    annotated = t.reduce_sum(y_true, axis=-1)
    hit = t.cast(t.equal(t.argmax(y_true, -1), t.argmax(y_pred, -1)), t.float32) * annotated
    return t.reduce_sum(hit) / t.maximum(t.reduce_sum(annotated), 1.0)


def get_loss(name: str) -> Callable:
    """Loss function for ``TrainConfig.loss`` (one of :data:`napari_sandseg.choices.LOSSES`)."""
    table = {"ce": masked_crossentropy, "ce_dice": masked_ce_dice}
    return table[check_choice("loss", name, LOSSES)]
