"""Fit a Unet: config + images + targets -> saved model, as a generator of progress events.

``model.fit`` runs in a background thread; Keras callbacks push :class:`TrainEvent` objects
into a queue which :func:`train` yields from, so a napari ``thread_worker``, the CLI and tests
all consume the same stream. Setting the ``cancel`` event stops at the next batch end and keeps
the best weights. The best checkpoint is written atomically whenever the monitored validation
figure (``TrainConfig.monitor``) improves, so even a killed process leaves a loadable model.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

from .classmap import ClassMap
from .choices import AUTO, PREDICT_BATCH_SIZE
from .config import PRESETS, TrainConfig
from .data import (
    IGNORE,
    Normalization,
    annotated_slices,
    make_dataset,
    sparse_targets,
    split_indices,
)
from .errors import InputError, ModelError
from .events import TrainEvent, TrainResult
from .targets import MODEL_SUFFIX, check_target

__all__ = ["PRESETS", "TrainConfig", "TrainEvent", "TrainResult", "prepare_targets", "run_training", "train"]

#: Queue item the fit thread sends when it is finished (with an exception or None).
_FINISHED = "finished"

#: A warm-up starts at this fraction of ``TrainConfig.learning_rate`` (as the benchmark's recipe).
WARMUP_START = 0.1


def prepare_targets(targets: np.ndarray, n_classes: int, sparse: bool) -> np.ndarray:
    """Check ``targets`` and convert them to int16 ids with ``-1`` = not annotated.

    Parameters
    ----------
    targets : ndarray (Z, Y, X) of int
        With ``sparse``: a napari Labels layer (0 = unpainted, k = class id k-1). Otherwise:
        class ids ``0..K-1`` (``-1`` allowed for "not annotated").
    n_classes : int
        Number of classes K.
    sparse : bool
        Which convention ``targets`` follows.
    """
    t = np.asarray(targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"targets must be integer class ids, got dtype {t.dtype}")
    t = sparse_targets(t) if sparse else t.astype(np.int16)
    if t.size and (t.min() < IGNORE or t.max() >= n_classes):
        what = "labels layer values" if sparse else "target class ids"
        valid = f"0..{n_classes}" if sparse else f"-1..{n_classes - 1}"
        lo, hi = (int(t.min()) + 1, int(t.max()) + 1) if sparse else (int(t.min()), int(t.max()))
        raise InputError(f"{what} span {lo}..{hi} but the class map has {n_classes} classes (valid: {valid})")
    return t


def train(
    images: np.ndarray,
    targets: np.ndarray,
    class_map: ClassMap,
    config: TrainConfig | None = None,
    out_path: str | os.PathLike = "model.keras",
    *,
    init_model: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
    preview: Callable[[], int | None] | None = None,
    preview_uncertainty: Callable[[], bool] | None = None,
    voxel_size=None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train a model, yielding progress events; returns a :class:`TrainResult`.

    Parameters
    ----------
    images : ndarray (Z, Y, X)
        Grey-value slices.
    targets : ndarray (Z, Y, X) of int
        Class ids 0..K-1 (``-1`` = not annotated); with ``config.sparse`` a napari Labels
        layer instead (0 = unpainted, k = class k-1). Slices with no annotated pixel are
        skipped; the rest are split into train/validation/test slices.
    class_map : ClassMap
        Classes of the targets (saved with the model).
    config : TrainConfig, optional
        Defaults to ``TrainConfig()``. Its ``"auto"`` settings are decided here (see
        :meth:`TrainConfig.resolve_crop` and :meth:`TrainConfig.resolve_precision`); the
        sidecar stores the decided values.
    out_path : path-like
        ``.keras`` file for the model (the best checkpoint during training, the final model
        with test metrics at the end); a ``.json`` sidecar is written next to it.
    init_model : path-like, optional
        Fine-tune this saved model instead of starting from scratch; its class map must equal
        ``class_map`` and its normalisation is kept.
    cancel : threading.Event, optional
        Set it to stop at the next batch end; the best weights so far are kept and saved.
    preview : callable, optional
        ``preview()`` -> the index of a slice of ``images`` (or None): soon after training
        starts, every few seconds within long epochs and after every whole epoch, that slice
        is segmented with the current weights and sent on the event (``TrainEvent.preview``),
        so a user can watch it improve. Called each time, so the slice may change during the run.
    preview_uncertainty : callable, optional
        ``preview_uncertainty()`` -> whether the preview also carries the slice's per-pixel
        entropy (``TrainEvent.preview_uncertainty``); asked at each preview, so the user can
        switch it on and off during the run.
    voxel_size : ((z, y, x), unit), optional
        Voxel size of ``images``, recorded in the sidecar (the voxel size trained on). When
        fine-tuning without one, the ``init_model``'s is kept.

    Yields
    ------
    TrainEvent
        ``start``, then ``batch``/``epoch`` events, then ``done``.

    Returns
    -------
    TrainResult
        As ``StopIteration.value`` (use :func:`run_training` to get it directly).

    Raises
    ------
    ConfigError, InputError, ModelError
        For invalid settings, data or init model (before any training starts).
    """
    from .callbacks import RunState

    plan = _plan(images, targets, class_map, config, Path(out_path))
    run = _build_or_load(plan, class_map, init_model, Path(out_path), voxel_size)
    if plan.use_patches:
        train_ds, val_ds, batches = _patch_data(plan, run)
    else:
        train_ds, val_ds, batches = _slice_data(plan, run)
    momentum = _compile_run(run, batches)
    state = RunState(cancel, run.config.monitor)
    events: queue.Queue[Any] = queue.Queue()
    callbacks = _callbacks(run, plan, state, events, train_ds, val_ds, batches, momentum,
                           fresh=init_model is None, preview=preview, preview_uncertainty=preview_uncertainty)
    config = run.config
    yield TrainEvent(
        "start", 0, config.epochs, -1, batches, message=(
            f"training {run.backbone} on {len(plan.train_idx)} slices, validating on {len(plan.val_idx)}, "
            f"holding out {len(plan.test_idx)} for the test ({config.precision}, best epoch by {config.monitor})"
        ),
    )
    yield from _fit_stream(run.model, train_ds, val_ds, config.epochs, callbacks, state, events)
    return (yield from _finish(plan, run, state, batches))


@dataclass
class _Plan:
    """What :func:`train` decides before it builds anything: settings, data layout and split."""

    config: TrainConfig  # crop size decided; precision not yet
    images: Any  # (Z, Y, X) array, or a volume read on the fly when use_patches
    targets: Any  # int16 ids (-1 = not annotated), or the raw target volume when use_patches
    use_patches: bool
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    notes: list[str]  # what the sidecar should tell a user about the run, in the order decided
    patch: int | None = None  # patch side when use_patches
    index: Any = None  # patches.scan_targets' index when use_patches


def _plan(images, targets, class_map: ClassMap, config: TrainConfig | None, out_path: Path) -> _Plan:
    """Check the settings, the data and the destination; decide the crop and the split."""
    from .patches import patch_size, scan_targets, wants_patches

    config = (config if config is not None else TrainConfig()).validate()
    # Volumes on disk (or too big to copy as float32) are trained from patches read on the fly;
    # small in-memory arrays keep the whole-slice pipeline.
    use_patches = wants_patches(images, targets)
    if not use_patches:
        images = np.asarray(images)
    if images.ndim != 3:
        raise InputError(f"images must be (Z, Y, X), got shape {images.shape}")
    if np.shape(targets) != images.shape:
        raise InputError(f"targets shape {np.shape(targets)} differs from images shape {images.shape}")
    # Found now rather than when the first checkpoint is written, an epoch later. Checkpoints
    # replace each other, so an existing file is no obstacle here (the CLI and widgets ask first).
    check_target(out_path, overwrite=True, suffixes=(MODEL_SUFFIX,))
    k = class_map.n_classes
    notes: list[str] = []
    resolved = config.resolve_crop(images.shape[1:])
    if config.crop_size == AUTO and resolved.crop_size is None:
        notes.append(f"crop_size 'auto': slices of {images.shape[1]} x {images.shape[2]} were trained whole")
    config = resolved
    patch = index = None
    if use_patches:
        patch = patch_size(config.crop_size, images.shape[1:])
        index = scan_targets(targets, k, config.sparse, block=min(32, patch))
        slices = index.slices
    else:
        targets = prepare_targets(targets, k, config.sparse)
        slices = annotated_slices(targets)
    config.validate(n_slices=len(slices), slice_shape=images.shape[1:])
    train_idx, val_idx, test_idx = (slices[i] for i in split_indices(len(slices), config.val_fraction, config.test_fraction, config.seed))
    return _Plan(config, images, targets, use_patches, train_idx, val_idx, test_idx, notes, patch, index)


@dataclass
class _Run:
    """The model of a run and what its sidecar needs, shared by the steps of :func:`train`."""

    config: TrainConfig  # everything decided (precision, a fine-tuned model's backbone)
    class_map: ClassMap
    norm: Normalization
    backbone: str
    model: Any  # the model being fit (distributed, mixed precision, fused batch norms)
    strategy: Any
    n_replicas: int
    write_path: Path  # out_path, or a scratch file on a non-chief worker
    notes: list[str]
    voxel_size: Any = None
    export: Any = None  # its uncompiled float32 twin: checkpoints, and predictions of a distributed run

    def info(self, history: dict[str, list[float]], metrics: dict[str, Any] | None, extra: list[str]):
        """The sidecar of the model as it stands."""
        from .model import ModelInfo

        return ModelInfo(
            config=self.config.to_dict(), class_map=self.class_map, normalization=self.norm,
            history={key: list(vals) for key, vals in history.items()}, metrics=metrics,
            backbone=self.backbone, n_classes=self.class_map.n_classes, notes=self.notes + extra,
            voxel_size=self.voxel_size,
        )

    def predictor(self):
        """A plain single-device float32 model holding the current weights."""
        return export_weights(self.export, self.model)


def _build_or_load(plan: _Plan, class_map: ClassMap, init_model, out_path: Path, voxel_size) -> _Run:
    """Pick the distribution strategy and precision, then build the model or load the one to fine-tune."""
    from . import distribute
    from ._tf import has_gpu
    from .model import build_model, load_model, to_precision
    from .patches import fit_normalization

    # Before any other TensorFlow operation: the multi-worker strategy sets up the runtime.
    strategy = distribute.select_strategy(plan.config.strategy)
    config = plan.config.resolve_precision(gpu=has_gpu())
    notes = plan.notes
    if config.precision != "float32":
        notes.append(f"trained in {config.precision} (float32 weights); the saved model computes in float32")
    with strategy.scope():  # model and optimizer variables must be created under the strategy
        if init_model is not None:
            model, init_info = load_model(init_model)
            if tuple(init_info.class_map.values) != tuple(class_map.values):
                raise ModelError(
                    f"cannot fine-tune {init_model}: its classes {list(init_info.class_map.values)} differ "
                    f"from the training classes {list(class_map.values)}"
                )
            norm = init_info.normalization  # the features were learnt on this scaling; keep it
            if voxel_size is None:  # same imagery, same voxels: the sidecar keeps saying so
                voxel_size = init_info.voxel_size
            backbone = init_info.backbone
            if backbone != config.backbone:
                notes.append(f"fine-tuned from {Path(init_model).name}; its backbone {backbone} was used")
                config = config.replace(backbone=backbone)
            if config.precision != "float32":
                model = to_precision(model, config.precision)  # saved models are float32
        else:
            from ._tf import tf

            tf().keras.utils.set_random_seed(config.seed)  # reproducible initial weights
            if plan.use_patches:
                norm = fit_normalization(plan.images, plan.train_idx, config.seed)
            else:
                norm = Normalization.fit(plan.images[plan.train_idx], seed=config.seed)
            model = build_model(config.backbone, class_map.n_classes, config.encoder_weights, precision=config.precision)
            backbone = config.backbone
    return _Run(config, class_map, norm, backbone, model, strategy, distribute.replicas(strategy),
                distribute.worker_out_path(out_path), notes, voxel_size)


def _patch_data(plan: _Plan, run: _Run):
    """Training and validation datasets of patches read on the fly, and batches per epoch."""
    from . import distribute
    from .patches import PatchSampler, patches_per_pass

    config, k, shape = run.config, run.class_map.n_classes, plan.images.shape[1:]
    samplers = [
        PatchSampler(plan.images, plan.targets, plan.index, part, run.norm, plan.patch, k, config.sparse,
                     augment=config.augment and i == 0)
        for i, part in enumerate((plan.train_idx, plan.val_idx))
    ]
    n_train = config.patches_per_epoch or patches_per_pass(len(plan.train_idx), shape, plan.patch)
    n_val = max(config.batch_size, min(256, patches_per_pass(len(plan.val_idx), shape, plan.patch)))
    # Each multi-worker process draws its own patches (the dataset is not sharded).
    seed = config.seed + 7919 * distribute.worker_rank()
    train_ds = samplers[0].dataset(n_train, config.batch_size, seed)
    val_ds = samplers[1].dataset(n_val, config.batch_size, config.seed + 1, fixed=True)
    run.notes.append(f"trained on {plan.patch} x {plan.patch} patches read on the fly ({n_train} per epoch)")
    return train_ds, val_ds, -(-n_train // config.batch_size)


def _slice_data(plan: _Plan, run: _Run):
    """Training and validation datasets of whole slices or random crops, and batches per epoch."""
    config, k, t = run.config, run.class_map.n_classes, plan.targets
    images, train_idx, val_idx = plan.images, plan.train_idx, plan.val_idx
    # crops_per_epoch is None or comes with a crop size (validate() checks it)
    train_ds = make_dataset(
        images[train_idx], t[train_idx], run.norm, config.batch_size, augment=config.augment, shuffle=True,
        seed=config.seed, crop=config.crop_size, n_classes=k, samples=config.crops_per_epoch,
    )
    val_ds = make_dataset(images[val_idx], t[val_idx], run.norm, config.batch_size, shuffle=False, n_classes=k)
    if config.crop_size is not None:
        per_epoch = config.crops_per_epoch or len(train_idx)
        run.notes.append(f"trained on random {config.crop_size} x {config.crop_size} crops ({per_epoch} per epoch)")
    return train_ds, val_ds, -(-(config.crops_per_epoch or len(train_idx)) // config.batch_size)


def _compile_run(run: _Run, batches: int) -> float:
    """Batch-norm momentum for the run's length, replica sync, compile; make the export twin.

    Returns the momentum set (:func:`adapt_batchnorm_momentum`).
    """
    from . import distribute
    from .model import plain_copy

    model = run.model
    momentum = adapt_batchnorm_momentum(model, run.config.epochs * batches)
    if run.n_replicas > 1:
        distribute.synchronize_batchnorm(model)  # global-batch statistics on every replica
        run.notes.append(f"trained with {distribute.describe(run.strategy)}")
    with run.strategy.scope():
        _compile(model, run.config, batches, run.n_replicas)
    if distribute.is_multiworker(run.strategy):
        distribute.patch_multiworker_fit(model)
    # Uncompiled float32 twin used for checkpoints (no optimizer state) and, where the trained
    # model is distributed or mixed precision, for predictions.
    run.export = plain_copy(model)
    distribute.synchronize_batchnorm(run.export, False)  # inference needs no cross-replica sync
    return momentum


def _callbacks(run: _Run, plan: _Plan, state, events: queue.Queue, train_ds, val_ds, batches: int,
               momentum: float, *, fresh: bool, preview, preview_uncertainty) -> list:
    """The Keras callbacks of a run: events, checkpoints, validation mean IoU, previews."""
    from . import distribute
    from .callbacks import PREVIEW_REFRESH_BATCHES, FreshStatistics, make_callbacks, validation_mean_iou
    from .model import save_model

    config, model, k = run.config, run.model, run.class_map.n_classes

    def save_best(epoch: int) -> None:
        run.export.set_weights(model.get_weights())
        save_model(run.export, run.write_path, run.info(state.history, None, [f"checkpoint of epoch {epoch + 1}"]))

    def val_mean_iou() -> float:
        # The model as fit evaluates it (val_loss is computed in the training precision too).
        predictor = model if run.n_replicas == 1 else run.predictor()
        return validation_mean_iou(predictor.predict_on_batch, val_ds, k, stop=state.stopping)

    # A model built here starts its moving statistics at 0/1 (a loaded or pretrained one has
    # meaningful statistics already): they are refreshed while young, on the plain twin. Not
    # across workers, where each would compute them on its own batches.
    fresh = fresh and config.encoder_weights is None and not distribute.is_multiworker(run.strategy)
    fresh_stats = FreshStatistics(run.export, batchnorm_layers(run.export), momentum, train_ds.take) if fresh else None

    def preview_labels() -> tuple[int, np.ndarray, np.ndarray | None] | None:
        z = preview()
        if z is None or not 0 <= int(z) < plan.images.shape[0]:
            return None
        from .predict import predict_volume

        slice_ = np.asarray(plan.images[int(z) : int(z) + 1])
        entropy = bool(preview_uncertainty is not None and preview_uncertainty())
        # Within the first epochs the moving statistics lag far behind the weights (a preview with
        # them was near-blank in the middle of epochs 1 and 2): a cheap precise-BN estimate first.
        young = fresh_stats is not None and fresh_stats.young()
        predictor = fresh_stats.refresh(model, PREVIEW_REFRESH_BATCHES) if young else run.predictor()
        shown = predict_volume(predictor, slice_, run.info({}, None, []), batch_size=1, uncertainty=entropy)
        return int(z), shown.labels[0], None if shown.uncertainty is None else shown.uncertainty[0]

    return make_callbacks(
        state, events, config.epochs, batches, save_best, config.patience, config.lr_schedule == "plateau",
        val_mean_iou,
        fresh_batchnorm=fresh_stats,
        preview=preview_labels if preview is not None else None,
    )


def _fit_stream(model, train_ds, val_ds, epochs: int, callbacks: list, state, events: queue.Queue):
    """Run ``model.fit`` in a thread and yield the events its callbacks queue, until it ends.

    The fit thread's exception is re-raised here; a consumer that stops early (closes the
    generator, or fails) stops the fit at the next batch and waits for it.
    """

    def fit() -> None:
        try:
            # verbose=0 always: Keras' progress bar writes to sys.stdout, which is None in
            # napari's bundled app and crashes there.
            model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
        except BaseException as exc:  # handed to the consumer's thread and re-raised there
            events.put((_FINISHED, exc))
        else:
            events.put((_FINISHED, None))

    thread = threading.Thread(target=fit, name="sandseg-fit", daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, tuple) and item and item[0] == _FINISHED:
                if item[1] is not None:
                    raise item[1]
                break
            yield item
    finally:
        if thread.is_alive():  # consumer stopped early (generator closed or an error): stop fit
            state.abort.set()
            thread.join()


def _finish(plan: _Plan, run: _Run, state, batches: int) -> Generator[TrainEvent, None, TrainResult]:
    """Keep the best weights, score the test slices, save the model; yield ``done``."""
    from .model import save_model
    from .patches import PatchSampler, patches_per_pass

    config, model = run.config, run.model
    extra: list[str] = []
    if state.best_weights is not None:
        model.set_weights(state.best_weights)
        extra.append(f"best weights of epoch {state.best_epoch + 1} ({state.monitor} {state.best_val:.4g})")
    else:
        extra.append(f"no epoch finished with a {state.monitor}; the current (partly trained) weights were kept")
    if state.cancelled:
        extra.append("training was cancelled by the user")

    test_metrics = None
    test_idx = plan.test_idx
    if len(test_idx) and plan.use_patches:
        # A fixed sample of test patches: whole test slices of a big volume would not fit.
        tester = PatchSampler(plan.images, plan.targets, plan.index, test_idx, run.norm, plan.patch,
                              run.class_map.n_classes, config.sparse)
        n_test = max(config.batch_size, min(256, patches_per_pass(len(test_idx), plan.images.shape[1:], plan.patch)))
        test_x, test_t = tester.stack(n_test, config.seed + 2)
        test_metrics = evaluate_slices(run.predictor(), test_x, test_t, run.info({}, None, []), config.batch_size)
    elif len(test_idx):
        # The saved model: under a multi-replica strategy or mixed precision, the plain float32 twin.
        predictor = run.predictor() if run.n_replicas > 1 or config.precision != "float32" else model
        test_metrics = evaluate_slices(predictor, plan.images[test_idx], plan.targets[test_idx],
                                       run.info({}, None, []), config.batch_size)
    info = run.info(state.history, test_metrics, extra)
    run.export.set_weights(model.get_weights())
    save_model(run.export, run.write_path, info)
    yield TrainEvent(
        "done", len(state.history.get("loss", [])) - 1, config.epochs, -1, batches,
        fraction=1.0, message="; ".join(extra), logs={},
    )
    # A distributed model's variables live on several devices, and a mixed-precision one would
    # predict a little differently from the saved file: callers get the plain float32 twin.
    plain = run.n_replicas == 1 and config.precision == "float32"
    return TrainResult(model if plain else run.export, info, run.write_path, info.history, state.cancelled,
                       test_metrics, state.best_epoch)


def export_weights(export, model):
    """``export`` holding ``model``'s current weights (a plain single-device model to predict with)."""
    export.set_weights(model.get_weights())
    return export


def run_training(
    images: np.ndarray,
    targets: np.ndarray,
    class_map: ClassMap,
    config: TrainConfig | None = None,
    out_path: str | os.PathLike = "model.keras",
    *,
    init_model: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Run :func:`train` to the end (ignoring the events) and return its :class:`TrainResult`."""
    gen = train(images, targets, class_map, config, out_path, init_model=init_model, cancel=cancel)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def evaluate_slices(model, images: np.ndarray, targets: np.ndarray, info,
                    batch_size: int = PREDICT_BATCH_SIZE) -> dict[str, Any]:
    """Metrics report of ``model`` on slices, counting annotated (``>= 0``) pixels only.

    Returns the JSON-safe :func:`napari_sandseg.metrics.evaluate` report.
    """
    from .metrics import evaluate, to_json_dict
    from .predict import predict_volume

    pred = predict_volume(model, images, info, batch_size=batch_size).labels
    mask = targets >= 0
    k = info.n_classes
    # Only annotated pixels count: evaluate them as one (1, 1, N) "volume".
    truth_px = targets[mask].astype(np.int64).reshape(1, 1, -1)
    pred_px = pred[mask].astype(np.int64).reshape(1, 1, -1)
    report = evaluate(truth_px, pred_px, k, info.class_map.values, info.class_map.names)
    report.pop("per_slice_iou", None)  # per pixel list here, meaningless after masking
    report["n_slices"] = int(len(images))
    report["n_pixels"] = int(mask.sum())
    return to_json_dict(report)


def adapt_batchnorm_momentum(model, total_steps: int) -> float:
    """Set the momentum of every BatchNormalization layer so its moving statistics converge.

    Inference uses the moving mean/variance, which start at 0/1 and forget that start as
    ``momentum ** steps``. With Keras' 0.99 a short run (a few painted slices: tens of steps)
    ends with statistics still near their initial values and a model that predicts garbage
    although its training loss is low. We choose the momentum so the start is forgotten
    (weight < 1 %) within the last fifth of the run, and never above 0.99 (long runs keep the
    usual value).

    Returns
    -------
    float
        The momentum set.
    """
    import math

    momentum = min(0.99, math.exp(math.log(0.01) / max(1.0, 0.2 * total_steps)))
    for layer in batchnorm_layers(model):
        layer.momentum = momentum
    return momentum


def batchnorm_layers(model):
    """The BatchNormalization layers of ``model`` (fused ones included), nested models too."""
    from ._tf import keras as _keras_module

    keras = _keras_module()
    return [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def _all_layers(model):
    """Layers of ``model``, descending into nested models (the ImageNet wrapper)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The learning rate of a run: a float, or a Keras schedule of the optimizer step.

    ``warmup_epochs`` epochs rise linearly from ``WARMUP_START * learning_rate`` to
    ``learning_rate``; then ``"cosine"`` decays to 0 over the remaining epochs and
    ``"constant"`` stays at ``learning_rate``. ``"plateau"`` starts from a constant rate
    that its callback lowers (it takes no warm-up).

    Parameters
    ----------
    config : TrainConfig
        ``learning_rate``, ``lr_schedule``, ``warmup_epochs`` and ``epochs`` are used.
    steps_per_epoch : int
        Optimizer steps (batches) per epoch.
    """
    import keras

    lr = config.learning_rate
    warmup = config.warmup_epochs * steps_per_epoch
    if config.lr_schedule == "cosine" and not warmup:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, config.epochs * steps_per_epoch))
    if not warmup:
        return lr
    rest = max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch)
    # Keras' CosineDecay has the linear warm-up built in; with alpha=1 (the floor is the whole
    # rate) its decay part is constant.
    return keras.optimizers.schedules.CosineDecay(
        WARMUP_START * lr, decay_steps=rest, alpha=0.0 if config.lr_schedule == "cosine" else 1.0,
        warmup_target=lr, warmup_steps=warmup,
    )


def _compile(model, config: TrainConfig, steps_per_epoch: int, n_replicas: int = 1) -> None:
    """Compile with Adam, the masked loss and masked accuracy."""
    import keras

    from .distribute import replica_mean_loss
    from .losses import get_loss, masked_accuracy

    loss = get_loss(config.loss)
    if n_replicas > 1:
        loss = replica_mean_loss(loss)

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config, steps_per_epoch)),
        loss=loss,
        metrics=[masked_accuracy],
        jit_compile=config.jit_compile and not config.run_eagerly,
        run_eagerly=config.run_eagerly,
    )
