"""Does the synthetic sandstone need learning? Best global thresholds vs a trained UNet.

Generates the reference-sized synthetic volume (1600 x 128 x 128, seed 0), holds out a block
of slices, and compares on those held-out slices:

* the best possible per-class global intensity thresholds (fitted on the training slices,
  so the comparison is fair; the exact optimum on the test slices is reported too), and
* a UNet trained with the engine (``napari_sandseg.train``) on the training slices.

Writes ``benchmarks/results/synthetic.json``. ``--quick`` is a seconds-long smoke run.

Usage::

    python benchmarks/synthetic.py            # full run (~10-20 min on 2 CPU cores)
    python benchmarks/synthetic.py --quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_sandseg.classmap import ClassMap
from napari_sandseg.config import TrainConfig
from napari_sandseg.metrics import evaluate, to_json_dict
from napari_sandseg.predict import predict_volume
from napari_sandseg.sample import make_sandstone, threshold_baseline
from napari_sandseg.train import run_training

import _common as C  # noqa: E402

RESULTS = C.RESULTS


def apply_thresholds(image: np.ndarray, cuts: list[int]) -> np.ndarray:
    """Class ids from global intensity cut points (class k for cuts[k-1] <= v < cuts[k])."""
    return np.searchsorted(np.asarray(cuts), image, side="right").astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--train-slices", type=int, default=480, help="slices used for training + validation")
    parser.add_argument("--test-slices", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args(argv)
    shape = (1600, 128, 128)
    if args.quick:
        shape, args.train_slices, args.test_slices, args.epochs = (48, 64, 64), 32, 16, 1

    t0 = time.perf_counter()
    image, labels = make_sandstone(shape, seed=0)
    gen_seconds = time.perf_counter() - t0
    # Contiguous blocks at both ends: the test block is never next to a training slice.
    train_img, train_lab = image[: args.train_slices], labels[: args.train_slices]
    test_img, test_lab = image[-args.test_slices:], labels[-args.test_slices:]

    fitted = threshold_baseline(train_img, train_lab)
    thr_test = evaluate(test_lab, apply_thresholds(test_img, fitted["thresholds"]), 4)
    oracle = threshold_baseline(test_img, test_lab)

    config = TrainConfig(backbone=args.backbone, epochs=args.epochs, batch_size=16, patience=4,
                         val_fraction=0.1, test_fraction=0.0, augment=True, seed=0)
    class_map = ClassMap((0, 1, 2, 3))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_training(train_img, train_lab, class_map, config, Path(tmp) / "m.keras")
        train_seconds = time.perf_counter() - t0
        pred = predict_volume(result.model, test_img, result.info).labels
    unet = evaluate(test_lab, pred, 4)

    out = {
        **C.stamp(),
        "volume_shape": list(shape), "seed": 0, "generate_seconds": round(gen_seconds, 2),
        "train_slices": args.train_slices, "test_slices": args.test_slices,
        "thresholds_fitted_on_train": {"cuts": fitted["thresholds"], **_brief(thr_test)},
        "thresholds_best_on_test": {"cuts": oracle["thresholds"], **_brief(oracle)},
        "unet": {"backbone": args.backbone, "epochs_run": len(result.history.get("loss", [])),
                 "train_seconds": round(train_seconds, 1), "config": config.to_dict(), **_brief(unet)},
    }
    for name in ("thresholds_fitted_on_train", "thresholds_best_on_test", "unet"):
        r = out[name]
        ious = " ".join(f"{v:.3f}" if v is not None else "nan" for v in r["per_class_iou"])
        print(f"{name:28s} mean IoU {r['mean_iou']:.3f}  per class [{ious}]")
    if not args.quick:
        C.write_json(RESULTS / "synthetic.json", out)
        print(f"wrote {RESULTS / 'synthetic.json'}")
    return 0


def _brief(report: dict) -> dict:
    r = to_json_dict(report)
    return {k: r[k] for k in ("per_class_iou", "mean_iou", "pixel_accuracy")}


if __name__ == "__main__":
    raise SystemExit(main())
