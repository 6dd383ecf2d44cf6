"""The project's training recipe, built from the engine's blocks (data, losses, model).

Used by ``accuracy.py``. It mirrors what ``napari_sandseg.train`` does with the winning
``TrainConfig`` (random crops from whole slices, D4 augmentation, masked CE + Dice loss,
cosine learning-rate decay, best weights by validation mean IoU); it is spelled out here so
the benchmark does not depend on the training loop's progress-event machinery.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

import _common as C


def split_for_training(split: C.Split, seed: int, quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train ids, val images, val ids) for the project's recipe.

    slices: the bottom eighth of every training slice (rows 896..1023 of 1024) is held out
    for validation; crops are drawn from the rest, so validation never overlaps training.
    patches: a seeded 10 % of the training patches.
    """
    x, y = split.train_images, split.train_ids
    if split.protocol == "slices":
        h = x.shape[1]
        cut = h - max(32, (h // 8) // 32 * 32)
        return x[:, :cut], y[:, :cut], x[:, cut:], y[:, cut:]
    tr, va = C.val_split(len(x), 0.1, seed)
    return x[tr], y[tr], x[va], y[va]


def make_train_dataset(x: np.ndarray, y: np.ndarray, norm: Any, settings: dict, protocol: str,
                       seed: int, quick: bool) -> tuple[Any, int]:
    """Engine tf.data pipeline: random crops (slices) or whole patches, D4 augmentation.

    For whole slices every slice is listed ``repeats`` times so one epoch draws about as many
    pixels as one epoch of the classic recipe (each listing gets its own random crop).
    """
    from napari_sandseg.data import dense_targets, make_dataset

    batch = settings["batch_size"] if protocol == "slices" else settings["patch_batch_size"]
    crop = None
    if protocol == "slices":
        crop = min(settings["crop_size"], x.shape[1], x.shape[2])
        if quick:
            crop = min(crop, 64)
        repeats = max(1, int(np.ceil(settings["crops_per_epoch"] / len(x)))) if not quick else 2
        idx = np.repeat(np.arange(len(x)), repeats)
        x, y = x[idx], y[idx]
    ds = make_dataset(x, dense_targets(y), norm, batch, augment=True, shuffle=True, seed=seed,
                      crop=crop, n_classes=C.N_CLASSES)
    steps = int(np.ceil(len(x) / batch))
    return ds, steps


def make_best_by_val_iou(val: tuple[np.ndarray, np.ndarray], normalize: Callable, log: Callable) -> Any:
    """Callback keeping the weights of the epoch with the best validation mean IoU."""
    import keras

    class BestByValIoU(keras.callbacks.Callback):
        """Validation mean IoU after each epoch; restores the best weights at the end."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -1.0
            self.best_epoch = 0
            self.best_weights = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            cms = C.evaluate_sets(self.model, {"val": val}, normalize)
            miou = C.mean_iou(cms["val"])
            if logs is not None:
                logs["val_mean_iou"] = miou
            if miou > self.best:
                self.best, self.best_epoch = miou, epoch + 1
                self.best_weights = self.model.get_weights()
            log(f"  val mIoU {miou:.4f} (best {self.best:.4f} @ {self.best_epoch})")

        def on_train_end(self, logs: dict | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestByValIoU()


def make_time_budget(seconds: float) -> Any:
    """Callback stopping training once ``seconds`` of wall time have passed."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Stop at the end of the first epoch past the budget."""

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()
            self.hit = False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if time.perf_counter() - self.t0 > seconds:
                self.hit = True
                self.model.stop_training = True

    return TimeBudget()


def bf16_supported() -> bool:
    """True when the CPU has native bfloat16 dot products (AVX512_BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & C._cpu_flags())


def build_in_precision(backbone: str, precision: str) -> Any:
    """Engine Unet built under a Keras dtype policy; softmax output cast to float32.

    With ``"mixed_bfloat16"`` the variables stay float32 (the optimiser updates float32
    master weights) and the convolutions run in bfloat16 on AVX512_BF16 CPUs.
    """
    import keras

    from napari_sandseg.model import build_model

    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(backbone, C.N_CLASSES)
        if precision != "float32":
            out = keras.layers.Activation("linear", dtype="float32")(model.output)
            model = keras.Model(model.input, out)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def train(split: C.Split, seed: int, quick: bool, log: Callable, settings: dict) -> tuple[Any, Any, dict, Callable]:
    """Fit the project's recipe.

    Returns
    -------
    model, epoch_eval_callback, details, normalize
        ``normalize`` maps raw images to the model's input (percentile normalisation).
    """
    import keras

    from napari_sandseg.data import Normalization
    from napari_sandseg.losses import get_loss
    xt, yt, xv, yv = split_for_training(split, seed, quick)
    norm = Normalization.fit(xt, seed=seed)
    ds, steps = make_train_dataset(xt, yt, norm, settings, split.protocol, seed, quick)
    patches = split.protocol == "patches"
    epochs = 2 if quick else settings["patch_epochs" if patches else "epochs"]
    lr = settings["learning_rate"]
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10, decay_steps=max(1, (epochs - 1) * steps),
        warmup_target=lr, warmup_steps=steps, alpha=0.0,
    )
    precision = settings["precision"] if bf16_supported() else "float32"
    model = build_in_precision("resnet18" if quick else settings["backbone"], precision)
    model.compile(keras.optimizers.Adam(schedule), loss=get_loss(settings["loss"]))
    best = make_best_by_val_iou((xv, yv), norm.apply, log)
    budget = make_time_budget(settings["patch_budget_minutes" if patches else "budget_minutes"] * 60)
    eval_cb = C.make_epoch_eval_callback(next(iter(split.test.values())), norm.apply, log=log)
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, callbacks=[best, budget, eval_cb], verbose=0)
    details = {
        "train_region": list(xt.shape), "val_region": list(xv.shape), "steps_per_epoch": steps,
        "best_epoch": best.best_epoch, "best_val_mean_iou": round(best.best, 5),
        "stopped_by_time_budget": budget.hit, "normalization": norm.to_dict(),
        "precision": precision,
    }
    return model, eval_cb, details, norm.apply
