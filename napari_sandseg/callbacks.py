"""Keras callbacks of a training run: progress + cancellation, and the best checkpoint.

Keras' own classes are imported lazily: :func:`make_callbacks` builds the callback objects
inside the training thread's setup, so importing this module never imports TensorFlow.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Any, Callable, Iterable

import numpy as np

from .events import TrainEvent


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


#: Whether a lower or a higher value of a monitored validation figure is better.
MODES = {"val_loss": "min", "val_mean_iou": "max"}


class RunState:
    """What the callbacks share: cancellation, completed epochs, the best weights.

    Parameters
    ----------
    cancel : threading.Event or None
        The user's cancel request.
    monitor : {"val_loss", "val_mean_iou"}
        Validation figure whose best value picks the kept weights (see :data:`MODES`).
    """

    def __init__(self, cancel: threading.Event | None, monitor: str = "val_loss") -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self.abort = threading.Event()  # internal stop (consumer went away); leaves cancel alone
        self.cancelled = False  # set once the callback acted on the cancel request
        self.partial_epoch: int | None = None  # epoch cut short by cancellation
        self.history: dict[str, list[float]] = {}
        self.monitor = monitor
        self.mode = MODES[monitor]
        self.best_val: float = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` of the monitored figure beats the best so far (None/NaN never does)."""
        if value is None:
            return False
        return value < self.best_val if self.mode == "min" else value > self.best_val


def validation_mean_iou(
    predict_batch: Callable[[Any], Any], batches: Iterable[tuple[Any, Any]], n_classes: int
) -> float:
    """Mean IoU over a whole validation set, from one confusion matrix of its annotated pixels.

    Per-class IoU is ``TP / (TP + FP + FN)`` (:mod:`napari_sandseg.metrics`) of the matrix
    summed over all batches, not an average of per-batch figures; classes absent from both
    truth and prediction are left out of the mean.

    Parameters
    ----------
    predict_batch : callable
        ``x (B, H, W, 1) -> probabilities (B, H, W, K)``.
    batches : iterable of (x, y)
        ``y`` one-hot ``(B, H, W, K)``, all-zero where a pixel is not annotated (ignored).
    n_classes : int
        Number of classes K.

    Returns
    -------
    float
        NaN when no pixel is annotated.
    """
    from .metrics import confusion_matrix, report_from_confusion

    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for x, y in batches:
        y = np.asarray(y)
        annotated = y.sum(axis=-1) > 0
        truth = y.argmax(axis=-1)[annotated]
        pred = np.asarray(predict_batch(x)).argmax(axis=-1)[annotated]
        cm += confusion_matrix(truth, pred, n_classes)
    return float(report_from_confusion(cm)["mean_iou"])


def make_callbacks(
    state: RunState,
    events: "queue.Queue[Any]",
    epochs: int,
    batches: int,
    save_best: Callable[[int], None],
    patience: int,
    reduce_on_plateau: bool,
    val_mean_iou: Callable[[], float] | None = None,
) -> list:
    """Callbacks for ``model.fit``: validation IoU, progress/cancel, best checkpoint, early stopping.

    Parameters
    ----------
    state : RunState
        Shared state, read by the trainer after ``fit`` returns; ``state.monitor`` is the
        figure the best checkpoint, early stopping and the plateau schedule follow.
    events : queue.Queue
        Receives :class:`TrainEvent` objects.
    epochs, batches : int
        For the progress fraction.
    save_best : callable
        ``save_best(epoch)`` writes the current weights as the best checkpoint.
    patience : int
        Early-stopping patience on ``state.monitor`` (0 disables it).
    reduce_on_plateau : bool
        Halve the learning rate when ``state.monitor`` stalls.
    val_mean_iou : callable, optional
        ``val_mean_iou()`` -> the validation mean IoU of the current weights (see
        :func:`validation_mean_iou`); added to each epoch's logs as ``val_mean_iou``, before
        the other callbacks read them. Required when ``state.monitor`` is ``"val_mean_iou"``.
    """
    from ._tf import keras as _keras_module
    keras = _keras_module()

    if state.monitor == "val_mean_iou" and val_mean_iou is None:
        raise ValueError("monitor 'val_mean_iou' needs the val_mean_iou function")

    class ValMeanIoU(keras.callbacks.Callback):
        """Adds ``val_mean_iou`` to the epoch logs (Keras hands the same dict to every callback)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            # A cut-short (cancelled) epoch is not scored: NaN keeps the history's lists aligned.
            logs["val_mean_iou"] = float("nan") if state.partial_epoch == epoch else val_mean_iou()

    class Progress(keras.callbacks.Callback):
        """Pushes batch/epoch events and stops at the next batch end once cancel is set."""

        def on_train_batch_end(self, batch, logs=None):
            logs = {k: _float(v) for k, v in (logs or {}).items()}
            epoch = self._epoch
            done = epoch * batches + batch + 1
            events.put(
                TrainEvent(
                    "batch", epoch, epochs, batch, batches, logs.get("loss"), None, logs,
                    min(done / (epochs * batches), 1.0), f"epoch {epoch + 1}/{epochs}, batch {batch + 1}/{batches}",
                )
            )
            if (state.cancel.is_set() or state.abort.is_set()) and not self.model.stop_training:
                self.model.stop_training = True
                state.cancelled = True
                if batch + 1 < batches:
                    state.partial_epoch = epoch

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: _float(v) for k, v in (logs or {}).items()}
            try:  # the learning rate, for live plots of a schedule
                # convert_to_numpy: float() refuses the distributed variable of a tf.distribute run.
                logs.setdefault("learning_rate", _float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            except (AttributeError, TypeError, ValueError):
                pass
            for key, value in logs.items():
                state.history.setdefault(key, []).append(value if value is not None else float("nan"))
            partial = state.partial_epoch == epoch
            msg = f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss')}, val_loss {logs.get('val_loss')}"
            if logs.get("val_mean_iou") is not None:
                msg += f", val_mean_iou {logs['val_mean_iou']:.4f}"
            if partial:
                msg += " (cancelled mid-epoch; not used as a checkpoint)"
            events.put(
                TrainEvent(
                    "epoch", epoch, epochs, -1, batches, logs.get("loss"), logs.get("val_loss"), logs,
                    min((epoch + 1) / epochs, 1.0), msg,
                )
            )

    class BestCheckpoint(keras.callbacks.Callback):
        """Keeps the best weights in memory and on disk whenever ``state.monitor`` improves."""

        def on_epoch_end(self, epoch, logs=None):
            if state.partial_epoch == epoch:  # weights of a half epoch are not a checkpoint
                return
            val = _float((logs or {}).get(state.monitor))
            if not state.improves(val):
                return
            state.best_val = val
            state.best_epoch = epoch
            state.best_weights = [np.array(w) for w in self.model.get_weights()]
            save_best(epoch)

    callbacks = [Progress(), BestCheckpoint()]
    if val_mean_iou is not None:
        callbacks.insert(0, ValMeanIoU())
    if patience > 0:
        # Restoring is done by the trainer from ``state.best_weights`` (also after a cancel).
        callbacks.append(
            keras.callbacks.EarlyStopping(state.monitor, mode=state.mode, patience=patience, restore_best_weights=False)
        )
    if reduce_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                state.monitor, mode=state.mode, factor=0.5, patience=max(1, patience // 2), verbose=0
            )
        )
    return callbacks
