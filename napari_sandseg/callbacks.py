"""Keras callbacks of a training run: progress + cancellation, and the best checkpoint.

Keras' own classes are imported lazily: :func:`make_callbacks` builds the callback objects
inside the training thread's setup, so importing this module never imports TensorFlow.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any, Callable, Iterable

import numpy as np

from .events import TrainEvent


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(value: float | None) -> str:
    """A loss for a status line: four significant digits."""
    return "n/a" if value is None else f"{value:.4g}"


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

    def stopping(self) -> bool:
        """True once the user cancelled or the consumer went away."""
        return self.cancel.is_set() or self.abort.is_set()

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` of the monitored figure beats the best so far (None/NaN never does)."""
        if value is None:
            return False
        return value < self.best_val if self.mode == "min" else value > self.best_val


def validation_mean_iou(
    predict_batch: Callable[[Any], Any], batches: Iterable[tuple[Any, Any]], n_classes: int,
    stop: Callable[[], bool] | None = None,
) -> float | None:
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
    stop : callable, optional
        Checked before each batch; when it returns True the pass is given up.

    Returns
    -------
    float or None
        NaN when no pixel is annotated; None when ``stop`` cut the pass short.
    """
    from .metrics import confusion_matrix, report_from_confusion

    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for x, y in batches:
        if stop is not None and stop():
            return None
        y = np.asarray(y)
        annotated = y.sum(axis=-1) > 0
        truth = y.argmax(axis=-1)[annotated]
        pred = np.asarray(predict_batch(x)).argmax(axis=-1)[annotated]
        cm += confusion_matrix(truth, pred, n_classes)
    return float(report_from_confusion(cm)["mean_iou"])


#: The first live preview comes at the first batch end this many seconds after training starts
#: (graph tracing included), so the user sees a segmentation well before the first epoch ends.
PREVIEW_FIRST_S = 10.0
#: Later previews within an epoch: at most this share of the training time goes to them ...
PREVIEW_SHARE = 0.05
#: ... and they come no more often than this.
PREVIEW_EVERY_S = 15.0


class PreviewClock:
    """When a live preview is due: soon after training starts, then every few seconds within budget.

    Previews run on the training thread, so their cost is training time lost: one is due when
    :data:`PREVIEW_EVERY_S` have passed since the last one and the last one's cost is at most
    :data:`PREVIEW_SHARE` of that time (the issue's budget is 10 % of throughput).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started: float | None = None
        self.last: float | None = None  # when the last preview ended
        self.cost = 0.0  # seconds the last preview took

    def start(self) -> None:
        """Training starts now (before the step function is traced)."""
        self.started = self.clock()

    def due(self) -> bool:
        """Whether a preview is due at this batch end."""
        now = self.clock()
        if self.last is None:
            return self.started is not None and now - self.started >= PREVIEW_FIRST_S
        return now - self.last >= max(PREVIEW_EVERY_S, self.cost / PREVIEW_SHARE)

    def take(self, preview: Callable[[], Any]) -> Any:
        """Run ``preview()``, timing it; returns its result."""
        begun = self.clock()
        shown = preview()
        self.last = self.clock()
        self.cost = self.last - begun
        return shown


def make_callbacks(
    state: RunState,
    events: "queue.Queue[Any]",
    epochs: int,
    batches: int,
    save_best: Callable[[int], None],
    patience: int,
    reduce_on_plateau: bool,
    val_mean_iou: Callable[[], float | None] | None = None,
    fresh_batchnorm: "FreshStatistics | None" = None,
    preview: Callable[[], tuple[int, np.ndarray, np.ndarray | None] | None] | None = None,
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
        It returns None when a cancel cut it short; the epoch then counts as cut short.
    fresh_batchnorm : FreshStatistics, optional
        For a model trained from scratch: before each validation while the moving statistics
        are young, they are recomputed on its plain twin and copied back (the same on one
        device or several replicas). The callbacks count the training steps on it.
    preview : callable, optional
        ``preview()`` -> ``(z, class ids of slice z, entropy of slice z or None)`` with the
        current weights, or None; its
        result rides on each whole epoch's event and, within an epoch, on a batch event
        whenever :class:`PreviewClock` says one is due (a live preview for the user).
    """
    from ._tf import keras as _keras_module
    keras = _keras_module()

    if state.monitor == "val_mean_iou" and val_mean_iou is None:
        raise ValueError("monitor 'val_mean_iou' needs the val_mean_iou function")
    callbacks = [_progress(keras, state, events, epochs, batches, preview), _best_checkpoint(keras, state, save_best)]
    if fresh_batchnorm:
        callbacks.insert(0, _refresh_batchnorm(keras, state, fresh_batchnorm))
    if val_mean_iou is not None:
        callbacks.insert(0, _val_mean_iou(keras, state, val_mean_iou))
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


# The callback classes derive from Keras' Callback, which is imported lazily (TensorFlow stays
# out of ``import napari_sandseg``): each factory defines its class once Keras is there.


def _cut_short(state: RunState, model: Any, epoch: int) -> None:
    """Stop the run; ``epoch`` is incomplete (its validation figures do not count)."""
    model.stop_training = True
    state.cancelled = True
    state.partial_epoch = epoch


def _val_mean_iou(keras: Any, state: RunState, val_mean_iou: Callable[[], float | None]) -> Any:
    """A callback adding ``val_mean_iou`` to the epoch logs (Keras hands the same dict to every callback)."""

    class ValMeanIoU(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            # A cut-short (cancelled) epoch is not scored.
            value = None if state.partial_epoch == epoch else val_mean_iou()
            if value is None:
                _cut_short(state, self.model, epoch)
            logs["val_mean_iou"] = float("nan") if value is None else value

    return ValMeanIoU()


def _progress(keras: Any, state: RunState, events: "queue.Queue[Any]", epochs: int, batches: int,
              preview: Callable[[], tuple[int, np.ndarray, np.ndarray | None] | None] | None) -> Any:
    """A callback pushing batch/epoch events (with live previews) and stopping at the next batch end once cancel is set."""
    clock = PreviewClock()

    def preview_if(due: bool) -> dict[str, Any]:
        """The live-preview fields of an event (none when no preview is due)."""
        if preview is None or state.stopping() or not due:
            return {}
        shown = clock.take(preview)
        if shown is None:
            return {}
        return {"preview_z": shown[0], "preview": shown[1], "preview_uncertainty": shown[2]}

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            clock.start()

        def on_train_batch_end(self, batch, logs=None):
            logs = {k: _float(v) for k, v in (logs or {}).items()}
            epoch = self._epoch
            done = epoch * batches + batch + 1
            # Within an epoch when due; its last batch leaves it to the epoch's end, which always previews.
            shown = preview_if(preview is not None and batch + 1 < batches and clock.due())
            events.put(
                TrainEvent(
                    "batch", epoch, epochs, batch, batches, logs.get("loss"), None, logs,
                    min(done / (epochs * batches), 1.0), f"epoch {epoch + 1}/{epochs}, batch {batch + 1}/{batches}",
                    **shown,
                )
            )
            if (state.cancel.is_set() or state.abort.is_set()) and not self.model.stop_training:
                self.model.stop_training = True
                state.cancelled = True
                if batch + 1 < batches:
                    state.partial_epoch = epoch

        def on_test_batch_end(self, batch, logs=None):
            # A cancel during validation gives up the rest of it (Keras validates even after
            # stop_training was set mid-epoch): the epoch's figures are then incomplete.
            if state.stopping():
                self.model.stop_evaluating = True
                _cut_short(state, self.model, self._epoch)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: _float(v) for k, v in (logs or {}).items()}
            try:  # the learning rate, for live plots of a schedule
                # convert_to_numpy: float() refuses the distributed variable of a tf.distribute run.
                logs.setdefault("learning_rate", _float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
            except (AttributeError, TypeError, ValueError):
                pass
            if state.partial_epoch == epoch:
                # Not an epoch: kept out of the history and reported as the point it stopped at.
                events.put(
                    TrainEvent(
                        "stopped", epoch, epochs, -1, batches, logs.get("loss"), None, {},
                        min(epoch / epochs, 1.0), f"stopped during epoch {epoch + 1}/{epochs} (not used as a checkpoint)",
                    )
                )
                return
            for key, value in logs.items():
                state.history.setdefault(key, []).append(value if value is not None else float("nan"))
            msg = f"epoch {epoch + 1}/{epochs}: loss {_fmt(logs.get('loss'))}, validation loss {_fmt(logs.get('val_loss'))}"
            if logs.get("val_mean_iou") is not None:
                msg += f", validation mean IoU {logs['val_mean_iou']:.3f}"
            shown = preview_if(True)
            events.put(
                TrainEvent(
                    "epoch", epoch, epochs, -1, batches, logs.get("loss"), logs.get("val_loss"), logs,
                    min((epoch + 1) / epochs, 1.0), msg,
                    **shown,
                )
            )

    return Progress()


def _best_checkpoint(keras: Any, state: RunState, save_best: Callable[[int], None]) -> Any:
    """A callback keeping the best weights in memory and on disk whenever ``state.monitor`` improves."""

    class BestCheckpoint(keras.callbacks.Callback):
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

    return BestCheckpoint()


def _refresh_batchnorm(keras: Any, state: RunState, fresh: "FreshStatistics") -> Any:
    """A callback recomputing young moving statistics before each validation pass (see refresh_batchnorm)."""

    class RefreshBatchNorm(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            fresh.steps += 1

        def on_test_begin(self, logs=None):
            if not fresh.young() or state.stopping():
                return
            fresh.refresh(self.model)
            self.model.set_weights(fresh.twin.get_weights())

    return RefreshBatchNorm()


#: Training batches whose statistics replace young moving statistics before a validation.
REFRESH_BATCHES = 8
#: ... and before a live preview (a cheaper estimate: the preview is only looked at).
PREVIEW_REFRESH_BATCHES = 2
#: Moving statistics are "young" while their 0/1 start still weighs more than this.
YOUNG_WEIGHT = 0.01


class FreshStatistics:
    """Precise BatchNormalization statistics for a model trained from scratch, while they are young.

    Keras' moving statistics start at 0/1 and lag far behind weights that change fast, so
    early in a run they make predictions (validation, live previews) that depend on the run's
    length and on the first weights. While their start still weighs over :data:`YOUNG_WEIGHT`
    (``momentum ** steps``), :meth:`refresh` recomputes them for the current weights on the
    model's plain single-device twin (see :func:`refresh_batchnorm`).

    Parameters
    ----------
    twin : keras.Model
        Plain copy of the trained model (the same layers and weights, one device).
    layers : list of keras.layers.BatchNormalization
        The twin's BatchNormalization layers.
    momentum : float
        The momentum the run set on them.
    batches : callable
        ``batches(n)`` -> ``n`` training batches.
    """

    def __init__(self, twin: Any, layers: list[Any], momentum: float, batches: Callable[[int], Iterable]) -> None:
        self.twin, self.layers, self.momentum, self.batches = twin, layers, momentum, batches
        self.steps = 0  # training steps so far (counted by the callbacks)
        self._forward: Callable[[Any], Any] | None = None

    def young(self) -> bool:
        """Whether the moving statistics still lean on their start."""
        return bool(self.layers) and self.momentum ** self.steps > YOUNG_WEIGHT

    def refresh(self, model: Any, n_batches: int = REFRESH_BATCHES) -> Any:
        """Give the twin ``model``'s weights with statistics recomputed on ``n_batches``; returns the twin."""
        if self._forward is None:  # traced once, with the momentum at 0 (see refresh_batchnorm)
            from ._tf import tf

            twin = self.twin
            self._forward = tf().function(lambda x: twin(x, training=True), reduce_retracing=True)
        self.twin.set_weights(model.get_weights())
        refresh_batchnorm(self._forward, self.layers, self.batches(n_batches))
        return self.twin


def refresh_batchnorm(forward: Callable[[Any], Any], layers: list[Any], batches: Iterable[tuple[Any, Any]]) -> int:
    """Set BatchNormalization moving statistics to the mean statistics of ``batches``.

    Keras starts the moving mean at 0 and the moving variance at 1, and ``train`` picks the
    momentum from the length of the whole run (:func:`napari_sandseg.train.adapt_batchnorm_momentum`),
    so after the first epoch of a long run the statistics used for validation still lean on
    that start and on the first, very different, weights. With the same seed, epoch 1 of a
    20-epoch run scored a validation mean IoU of 0.14 where a 3-epoch run scored 0.58, with
    identical training losses (training normalises with batch statistics). Recomputing the
    statistics with the current weights ("precise BN": Wu & Johnson, 2021) makes the figure
    depend on the weights only.

    Parameters
    ----------
    forward : callable
        ``forward(x)`` runs the model in training mode; it is called with every layer's
        momentum at 0, so each call leaves that batch's statistics in the moving ones.
    layers : list of keras.layers.BatchNormalization
        The model's BatchNormalization layers (updated in place).
    batches : iterable of (x, y)
        Training batches.

    Returns
    -------
    int
        The number of batches used.
    """
    saved = [layer.momentum for layer in layers]
    sums: list[list[np.ndarray]] = [[0.0, 0.0] for _ in layers]  # type: ignore[list-item]
    n = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for x, _ in batches:
            forward(x)
            for total, layer in zip(sums, layers):
                total[0] = total[0] + layer.moving_mean.numpy()
                total[1] = total[1] + layer.moving_variance.numpy()
            n += 1
        if n:
            for (mean, var), layer in zip(sums, layers):
                layer.moving_mean.assign(mean / n)
                layer.moving_variance.assign(var / n)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return n
