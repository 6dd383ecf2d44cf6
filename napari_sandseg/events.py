"""Small objects that carry training progress and results to the widget, CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Kinds of :class:`TrainEvent`, in the order they occur.
EVENT_KINDS = ("start", "batch", "epoch", "stopped", "done")


@dataclass
class TrainEvent:
    """One progress report from :func:`napari_sandseg.train.train`.

    Attributes
    ----------
    kind : {"start", "batch", "epoch", "stopped", "done"}
        What happened. ``"stopped"`` reports an epoch cut short by a cancel: it is not an
        epoch (no validation figures, not in the history, never a checkpoint).
    epoch : int
        0-based epoch the event belongs to.
    epochs : int
        Maximum number of epochs.
    batch : int
        0-based batch within the epoch (``batch`` events), else -1.
    batches : int
        Batches per epoch.
    loss : float or None
        Running training loss of the epoch.
    val_loss : float or None
        Validation loss (``epoch`` events).
    logs : dict
        All Keras logs of the batch/epoch (loss, accuracy, learning rate, ...).
    fraction : float
        Share of the whole run done, 0..1 (for progress bars).
    message : str
        Human-readable status line.
    preview : ndarray or None
        In a run asked for a live preview, on every ``epoch`` event and on a ``batch`` event
        every few seconds within an epoch (see :class:`napari_sandseg.callbacks.PreviewClock`):
        the class ids (2D) of slice ``preview_z`` segmented with the current weights.
    preview_z : int or None
        The slice of ``preview``.
    preview_uncertainty : ndarray or None
        With ``preview``, when the run was asked for it: the per-pixel entropy (2D, 0..1)
        of the same prediction.
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    batch: int = -1
    batches: int = 0
    loss: float | None = None
    val_loss: float | None = None
    logs: dict[str, float] = field(default_factory=dict)
    fraction: float = 0.0
    message: str = ""
    preview: Any = None
    preview_z: int | None = None
    preview_uncertainty: Any = None


@dataclass
class TrainResult:
    """What a finished (or cancelled) training run produced.

    Attributes
    ----------
    model : keras.Model
        The trained model, holding the best weights.
    info : napari_sandseg.model.ModelInfo
        Its sidecar content (config, class map, normalisation, history, metrics).
    path : Path
        Where the model was saved.
    history : dict of str to list of float
        Per-epoch logs.
    cancelled : bool
        True when the run was stopped by the user.
    test_metrics : dict or None
        Report on the held-out test slices, None without a test part.
    best_epoch : int or None
        0-based epoch whose weights were kept, None when no epoch finished.
    """

    model: Any
    info: Any
    path: Path
    history: dict[str, list[float]]
    cancelled: bool
    test_metrics: dict[str, Any] | None
    best_epoch: int | None = None
