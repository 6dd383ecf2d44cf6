"""Accuracy: the classic recipe against the project's recipe, on the same data, same script.

Usage
-----
    python benchmarks/accuracy.py                      # both protocols, both recipes
    python benchmarks/accuracy.py --protocol slices --recipe classic
    python benchmarks/accuracy.py --quick              # smoke run (seconds, tiny model/data)

Each (protocol, recipe) result is merged into ``benchmarks/results/accuracy.json`` (or
``--out``), shaped ``{"slices": {"classic": R, "project": R}, "patches": {...}}``; ``R`` holds
per-class IoU, mean IoU, pixel accuracy, epochs, training seconds, ``seconds_to_085`` /
``seconds_to_088`` (training seconds, evaluation excluded, at which the held-out mean IoU
first reached 0.85 / 0.88, evaluated after every epoch without test-time augmentation), the
protocol, the seeds, the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import _common as C

#: The classic recipe (published notebook): fixed, never tuned.
CLASSIC = {
    "name": "classic",
    "backbone": "resnet34",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "loss": "categorical_crossentropy",
    "batch_size": 16,
    "epochs": 50,
    "patience": 5,
    "restore_best_weights": True,
    "val_fraction": 0.1,
    "input": "128x128 patches (numpy), images / 255",
    "augment": False,
    "tta": False,
}

#: The project's recipe (what the CLI and the Train widget default to).
PROJECT = {
    "name": "project",
    "backbone": "resnet34",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": "cosine decay to 0 over all epochs (1 warm-up epoch from lr/10)",
    "loss": "ce_dice",
    "batch_size": 16,
    "patch_batch_size": 16,
    "crop_size": 128,
    "crops_per_epoch": 384,
    "epochs": 50,
    "patch_epochs": 30,
    "budget_minutes": 28,
    "patch_budget_minutes": 22,
    "precision": "mixed_bfloat16",
    "normalization": "0.5/99.5 percentiles of the training images (engine Normalization)",
    "val": "best weights by validation mean IoU",
    "augment": "D4 flips/rot90",
    "tta": "D4 (8 flips/rotations averaged)",
    "input": "random 128x128 crops from whole slices (slices protocol) / the 128x128 patches "
             "(patches protocol), engine tf.data pipeline",
}


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [0, 1] (both recipes)."""
    return images.astype(np.float32) / 255.0


def one_hot(ids: np.ndarray, k: int = C.N_CLASSES) -> np.ndarray:
    """Class ids ``(N, Y, X)`` to float32 one-hot ``(N, Y, X, K)``."""
    return np.eye(k, dtype=np.float32)[ids]


def build_unet(backbone: str) -> Any:
    """Unet with a ResNet encoder, no pretrained weights, any input size, 1 channel, softmax."""
    from napari_sandseg._tf import sm

    return sm().Unet(
        backbone,
        encoder_weights=None,
        input_shape=(None, None, 1),
        classes=C.N_CLASSES,
        activation="softmax",
    )


# --------------------------------------------------------------------------------------------
# classic recipe
# --------------------------------------------------------------------------------------------
def train_classic(split: C.Split, seed: int, quick: bool, log: Callable[[str], None]) -> tuple[Any, Any, dict, Callable]:
    """Fit the classic recipe on numpy patches.

    Returns (model, epoch-eval callback, details, normalize).
    """
    import keras

    x, y = split.train_images, split.train_ids
    if split.protocol == "slices":
        x, y = C.patchify(x), C.patchify(y)
    tr, va = C.val_split(len(x), CLASSIC["val_fraction"], seed)
    xn, yh = normalize(x)[..., None], one_hot(y)
    model = build_unet("resnet18" if quick else CLASSIC["backbone"])
    model.compile(keras.optimizers.Adam(CLASSIC["learning_rate"]), loss="categorical_crossentropy")
    eval_cb = C.make_epoch_eval_callback(next(iter(split.test.values())), normalize, log=log)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=CLASSIC["patience"], restore_best_weights=True
    )
    model.fit(
        xn[tr], yh[tr],
        batch_size=CLASSIC["batch_size"],
        epochs=2 if quick else CLASSIC["epochs"],
        validation_data=(xn[va], yh[va]),
        shuffle=True,
        callbacks=[stop, eval_cb],
        verbose=0,
    )
    details = {"n_train": int(len(tr)), "n_val": int(len(va)), "best_epoch": _best_epoch(stop)}
    return model, eval_cb, details, normalize


def _best_epoch(stop: Any) -> int | None:
    """1-based epoch whose weights EarlyStopping kept (None when unknown)."""
    best = getattr(stop, "best_epoch", None)
    return None if best is None else int(best) + 1


# --------------------------------------------------------------------------------------------
# project recipe
# --------------------------------------------------------------------------------------------
def train_project(split: C.Split, seed: int, quick: bool, log: Callable[[str], None]) -> tuple[Any, Any, dict, Callable]:
    """Fit the project's recipe (see ``project_recipe.py``); same return as the classic."""
    import project_recipe as P

    return P.train(split, seed, quick, log, PROJECT)


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------
def run(protocol: str, recipe: str, seed: int, quick: bool, log: Callable[[str], None]) -> dict:
    """Train ``recipe`` on ``protocol`` and return its result record ``R``."""
    C.set_seed(seed)
    C.start_clock()  # one invocation may run several trainings: each records its own start
    images, masks, source = C.load_data(quick)
    split = C.make_split(protocol, images, masks, seed)
    log(f"== {protocol} / {recipe}  (seed {seed}) :: {split.description}")
    trainer = train_classic if recipe == "classic" else train_project
    start = time.perf_counter()
    model, eval_cb, details, norm_fn = trainer(split, seed, quick, log)
    wall = time.perf_counter() - start
    settings = CLASSIC if recipe == "classic" else PROJECT
    sets = {**split.test, **split.extra}
    t_pred = time.perf_counter()
    cms = C.evaluate_sets(model, sets, norm_fn, tta=False)
    details["final_eval_seconds_no_tta"] = round(time.perf_counter() - t_pred, 1)
    if recipe == "project":  # the scored figures use TTA; keep the plain ones for comparison
        details["without_tta"] = {k: C.report(v) for k, v in cms.items()}
        t_pred = time.perf_counter()
        cms = C.evaluate_sets(model, sets, norm_fn, tta=True)
        details["final_eval_seconds_tta"] = round(time.perf_counter() - t_pred, 1)
    test_name = next(iter(split.test))
    rec = _result(cms, test_name, eval_cb, wall, settings, details)
    rec["saved_model"] = _save(model, protocol, recipe, quick)
    rec.update(protocol=protocol, protocol_description=split.description, data=source,
               seeds={"seed": seed, "split_seed": seed, "val_seed": seed + 1, "tf_seed": seed},
               metrics_impl=C.metrics_impl(), **C.stamp())
    _print_result(protocol, recipe, rec)
    return rec


def _save(model: Any, protocol: str, recipe: str, quick: bool) -> str:
    """Save the trained model outside the repository (throughput.py reuses it for bf16 checks)."""
    path = C.MODEL_DIR / f"{protocol}_{recipe}{'_quick' if quick else ''}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return str(path)


def _result(cms: dict, test_name: str, eval_cb: Any, wall: float, settings: dict, details: dict) -> dict:
    """Assemble ``R`` from the final confusion matrices and the per-epoch records."""
    main = C.report(cms[test_name])
    records = eval_cb.records
    rec = {
        "per_class_iou": main["per_class_iou"],
        "mean_iou": main["mean_iou"],
        "pixel_accuracy": main["pixel_accuracy"],
        "epochs": len(records),
        "train_seconds": records[-1]["train_seconds"] if records else None,
        "train_seconds_note": "wall time of fit, per-epoch held-out evaluation excluded",
        "wall_seconds_including_eval": round(wall, 1),
        "seconds_to_085": C.seconds_to(records, 0.85),
        "seconds_to_088": C.seconds_to(records, 0.88),
        "seconds_to_note": "training seconds at the end of the first epoch whose held-out mean "
                           "IoU (no TTA) reached the threshold",
        "test_set": test_name,
        "confusion_matrix": main["confusion_matrix"],
        "recipe": settings,
        "details": details,
        "history": records,
    }
    for name, cm in cms.items():
        if name != test_name:
            rec[name] = {**C.report(cm), "note": "outside the targets"}
    return rec


def _print_result(protocol: str, recipe: str, rec: dict) -> None:
    """Print the figures of one run."""
    ious = ", ".join(f"{k} {v:.3f}" for k, v in rec["per_class_iou"].items() if v is not None)
    print(f"[{protocol}/{recipe}] mean IoU {rec['mean_iou']:.4f}  ({ious})  pixel acc "
          f"{rec['pixel_accuracy']:.4f}  epochs {rec['epochs']}  train {rec['train_seconds']}s  "
          f"to0.85 {rec['seconds_to_085']}s  to0.88 {rec['seconds_to_088']}s", flush=True)
    for key, val in rec.items():
        if isinstance(val, dict) and "mean_iou" in val:
            print(f"   {key}: mean IoU {val['mean_iou']:.4f}  per class "
                  f"{[round(v, 3) if v is not None else None for v in val['per_class_iou'].values()]}",
                  flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the requested protocol/recipe pairs, merge results into JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", choices=["slices", "patches", "both"], default="both")
    ap.add_argument("--recipe", choices=["classic", "project", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, resnet18, 2 epochs")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=None, help="also append the log to this file")
    args = ap.parse_args(argv)
    out = args.out or (C.RESULTS / ("quick" if args.quick else "") / "accuracy.json")
    log = C.logger(args.log)
    protocols = ["slices", "patches"] if args.protocol == "both" else [args.protocol]
    recipes = ["classic", "project"] if args.recipe == "both" else [args.recipe]
    for protocol in protocols:
        for recipe in recipes:
            rec = run(protocol, recipe, args.seed, args.quick, log)
            data = C.read_json(out)  # re-read: other runs may have merged meanwhile
            data.setdefault(protocol, {})[recipe] = rec
            C.write_json(out, data)
            log(f"wrote {out} [{protocol}][{recipe}]")


if __name__ == "__main__":
    main()
