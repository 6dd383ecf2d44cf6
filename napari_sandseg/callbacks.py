"""Keras callbacks of a training run: progress + cancellation, and the best checkpoint.

Keras' own classes are imported lazily: :func:`make_callbacks` builds the callback objects
inside the training thread's setup, so importing this module never imports TensorFlow.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Any, Callable

import numpy as np

from .events import TrainEvent


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class RunState:
    """What the callbacks share: cancellation, completed epochs, the best weights."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel if cancel is not None else threading.Event()
        self.abort = threading.Event()  # internal stop (consumer went away); leaves cancel alone
        self.cancelled = False  # set once the callback acted on the cancel request
        self.partial_epoch: int | None = None  # epoch cut short by cancellation
        self.history: dict[str, list[float]] = {}
        self.best_val: float = math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None


def make_callbacks(
    state: RunState,
    events: "queue.Queue[Any]",
    epochs: int,
    batches: int,
    save_best: Callable[[int], None],
    patience: int,
    reduce_on_plateau: bool,
) -> list:
    """Callbacks for ``model.fit``: progress/cancel, best checkpoint, early stopping.

    Parameters
    ----------
    state : RunState
        Shared state, read by the trainer after ``fit`` returns.
    events : queue.Queue
        Receives :class:`TrainEvent` objects.
    epochs, batches : int
        For the progress fraction.
    save_best : callable
        ``save_best(epoch)`` writes the current weights as the best checkpoint.
    patience : int
        Early-stopping patience on ``val_loss`` (0 disables it).
    reduce_on_plateau : bool
        Halve the learning rate when ``val_loss`` stalls.
    """
    from ._tf import keras as _keras_module
    keras = _keras_module()

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
            if partial:
                msg += " (cancelled mid-epoch; not used as a checkpoint)"
            events.put(
                TrainEvent(
                    "epoch", epoch, epochs, -1, batches, logs.get("loss"), logs.get("val_loss"), logs,
                    min((epoch + 1) / epochs, 1.0), msg,
                )
            )

    class BestCheckpoint(keras.callbacks.Callback):
        """Keeps the best weights in memory and on disk whenever ``val_loss`` improves."""

        def on_epoch_end(self, epoch, logs=None):
            if state.partial_epoch == epoch:  # weights of a half epoch are not a checkpoint
                return
            val = _float((logs or {}).get("val_loss"))
            if val is None or val >= state.best_val:
                return
            state.best_val = val
            state.best_epoch = epoch
            state.best_weights = [np.array(w) for w in self.model.get_weights()]
            save_best(epoch)

    callbacks = [Progress(), BestCheckpoint()]
    if patience > 0:
        # Restoring is done by the trainer from ``state.best_weights`` (also after a cancel).
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=False))
    if reduce_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=max(1, patience // 2), verbose=0)
        )
    return callbacks
