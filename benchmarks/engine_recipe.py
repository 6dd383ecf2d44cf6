"""The engine's default recipe on the slices protocol, run exactly as a user runs it: the CLI.

Usage
-----
    python benchmarks/engine_recipe.py            # real slices, resnet34, project preset defaults
    python benchmarks/engine_recipe.py --quick    # smoke run (resnet18, 3 epochs, small corners)

``accuracy.py`` measures the recipes with a benchmark script built from the engine's blocks;
this checks that ``sandseg train`` with its defaults (the ``project`` preset) gets there too.
Training slices 1,2,3,5,6,7,8 (the CLI holds out one of them for validation; no test split),
test slices 0 and 9 at full size, written as TIFF stacks to a temporary folder; then

    sandseg train --images train_images.tif --masks train_masks.tif --out model.keras
                  --backbone resnet34 --batch-size 16 --val-fraction 0.15 --test-fraction 0
    sandseg predict  --model model.keras --images test_images.tif --out pred.tif [--tta]
    sandseg evaluate --truth test_masks.tif --pred pred.tif --json eval.json

Metrics come from ``sandseg evaluate`` (``napari_sandseg.metrics``). Results go to
``benchmarks/results/engine_recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


import _common as C


def sandseg(*args: Any, cwd: Path) -> float:
    """Run one ``sandseg`` command (this Python's installation); return its wall seconds."""
    cmd = [sys.executable, "-m", "napari_sandseg.cli", *map(str, args)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def write_split(folder: Path, quick: bool) -> str:
    """Training and test stacks of the slices protocol as TIFFs in ``folder``; returns the data source."""
    import tifffile

    images, masks, source = C.load_data(quick)
    for name, index in (("train", C.TRAIN_SLICES), ("test", C.TEST_SLICES)):
        tifffile.imwrite(folder / f"{name}_images.tif", images[list(index)])
        tifffile.imwrite(folder / f"{name}_masks.tif", masks[list(index)])
    return source


def accuracy_reference() -> dict[str, Any]:
    """The benchmark script's figures for the same protocol, read from accuracy.json (none when absent)."""
    path = C.RESULTS / "accuracy.json"
    project = C.accuracy_run(C.read_json(path), "slices", "project")
    if not project:
        return {"source": str(path.relative_to(C.REPO)), "note": "no slices/project result there"}
    plain = project.get("details", {}).get("without_tta", {}).get(project.get("test_set", ""), {})
    return {
        "source": str(path.relative_to(C.REPO)) + " slices/project (benchmark script)",
        "source_date_utc": project.get("date_utc"),
        "mean_iou_tta": project.get("mean_iou"),
        "mean_iou_no_tta": plain.get("mean_iou"),
    }


def main(argv: list[str] | None = None) -> None:
    """Train, predict (with and without TTA) and evaluate through the CLI; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet18, 3 epochs, small slices")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-model", type=Path, default=None,
                    help="also keep the trained model (.keras, with its .json sidecar) here, e.g. for throughput.py --model")
    args = ap.parse_args(argv)
    out_path = args.out or (C.RESULTS / ("quick" if args.quick else "") / "engine_recipe.json")
    backbone, extra = ("resnet18", ["--epochs", "3"]) if args.quick else ("resnet34", [])
    with tempfile.TemporaryDirectory(prefix="sandseg-engine-") as tmp:
        work = Path(tmp)
        source = write_split(work, args.quick)
        train_args = ["train", "--images", "train_images.tif", "--masks", "train_masks.tif", "--out", "model.keras",
                      "--backbone", backbone, "--batch-size", "16", "--val-fraction", "0.15",
                      "--test-fraction", "0", *extra]
        train_s = sandseg(*train_args, cwd=work)
        sidecar = json.loads((work / "model.json").read_text())
        print(f"trained in {train_s:.0f} s: {sidecar.get('notes')}", flush=True)
        if args.keep_model is not None:
            args.keep_model.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / "model.keras", args.keep_model)
            shutil.copy2(work / "model.json", args.keep_model.with_suffix(".json"))
        results: dict[str, Any] = {}
        for label, tta in (("no_tta", []), ("tta", ["--tta"])):
            pred_s = sandseg("predict", "--model", "model.keras", "--images", "test_images.tif",
                             "--out", f"pred_{label}.tif", *tta, cwd=work)
            sandseg("evaluate", "--truth", "test_masks.tif", "--pred", f"pred_{label}.tif",
                    "--json", f"eval_{label}.json", cwd=work)
            evaluation = json.loads((work / f"eval_{label}.json").read_text())
            results[label] = {"mean_iou": evaluation["mean_iou"], "per_class_iou": evaluation.get("per_class_iou"),
                              "pixel_accuracy": evaluation.get("pixel_accuracy"), "predict_seconds": round(pred_s, 1)}
            print(f"{label}: mean IoU {evaluation['mean_iou']:.4f}", flush=True)
    history = sidecar.get("history", {})
    out = {
        "protocol": "slices: train 1,2,3,5,6,7,8 (one held out by the CLI for validation), test 0 and 9 at full size",
        "commands": ["sandseg " + " ".join(train_args), "sandseg predict ... [--tta]", "sandseg evaluate ..."],
        "train_seconds": round(train_s, 1),
        "epochs": len(history.get("loss", [])),
        "val_mean_iou_per_epoch": [round(float(v), 4) for v in history.get("val_mean_iou", [])],
        "config": sidecar.get("config"),
        "notes": sidecar.get("notes"),
        **results,
        "compare": accuracy_reference(),
        "data": source,
        **C.stamp(),
    }
    C.write_json(out_path, out)
    print(f"wrote {out_path}", flush=True)


if __name__ == "__main__":
    main()
