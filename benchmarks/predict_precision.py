"""Prediction precision: ``sandseg predict --precision float32`` against ``--precision auto``.

Usage
-----
    python benchmarks/predict_precision.py            # 3 runs of each, interleaved
    python benchmarks/predict_precision.py --reps 5

On the bundled sample (``sample_data/``, 64 x 128 x 128) with an untrained Unet-resnet34 (the
speed of the arithmetic does not depend on the weights' values), interleaved so that a change
in the shared machine's load hits both precisions alike:

* ``cli``: the whole ``sandseg predict`` command in a child process (wall seconds and the
  child's CPU seconds): Python and TensorFlow start-up, model load, the bfloat16 twin, the
  prediction, the TIFF output;
* ``warm``: :func:`napari_sandseg.predict.predict_volume` of the sample on a model already
  loaded, twin built and graph traced (the steady state of the engine process and of dask
  workers, which keep their model).

Also recorded: the fraction of labels on which the two precisions agree (an untrained model's
near-tied probabilities make this a floor, not the trained model's figure: see
``throughput.json`` for held-out IoU). Results go to ``benchmarks/results/predict_precision.json``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

PRECISIONS = ("float32", "auto")


def make_model(folder: Path) -> Path:
    """An untrained Unet-resnet34 (seed 0) saved with its sidecar in ``folder``."""
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, build_model, save_model

    C.set_seed(0)
    info = ModelInfo(config={}, class_map=ClassMap((0, 1, 2, 3)), normalization=Normalization(0.0, 255.0),
                     backbone="resnet34", n_classes=4)
    return save_model(build_model("resnet34", 4), folder / "model.keras", info)


def time_cli(model: Path, images: Path, out: Path, precision: str) -> dict[str, float]:
    """Wall and CPU seconds of one ``sandseg predict`` child process."""
    cmd = [sys.executable, "-m", "napari_sandseg.cli", "predict", "--model", str(model), "--images", str(images),
           "--out", str(out), "--overwrite", "--precision", precision]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def time_warm(model: Any, info: Any, volume: np.ndarray, precision: str) -> float:
    """Wall seconds of one ``predict_volume`` of ``volume`` on a warm model."""
    from napari_sandseg.predict import predict_volume

    start = time.perf_counter()
    predict_volume(model, volume, info, precision=precision)
    return time.perf_counter() - start


def summary(runs: dict[str, list[float]]) -> dict[str, Any]:
    """Best and median per precision, and the float32 / auto ratios (> 1: auto is faster)."""
    best = {p: min(v) for p, v in runs.items()}
    median = {p: float(np.median(v)) for p, v in runs.items()}
    return {"runs": runs, "best": best, "median": median,
            "speedup_best": best["float32"] / best["auto"], "speedup_median": median["float32"] / median["auto"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each precision (default 3)")
    args = parser.parse_args()

    from napari_sandseg.bundled import bundled_sample_paths
    from napari_sandseg.io import read_volume
    from napari_sandseg.model import load_model
    from napari_sandseg.predict import predict_volume, resolve_predict_precision

    images, _ = bundled_sample_paths()
    C.start_clock()
    record: dict[str, Any] = {}
    record["auto_resolves_to"] = resolve_predict_precision("auto")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = make_model(Path(tmp))
        cli: dict[str, list[dict[str, float]]] = {p: [] for p in PRECISIONS}
        for rep in range(args.reps):
            for precision in PRECISIONS:
                cli[precision].append(time_cli(model_path, images, Path(tmp) / f"{precision}.tif", precision))
                print(f"cli rep {rep} {precision}: {cli[precision][-1]}", flush=True)
        model, info = load_model(model_path)
    volume = read_volume(images)
    labels = {p: predict_volume(model, volume, info, precision=p).labels for p in PRECISIONS}  # warm-up
    warm: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for rep in range(args.reps):
        for precision in PRECISIONS:
            warm[precision].append(time_warm(model, info, volume, precision))
            print(f"warm rep {rep} {precision}: {warm[precision][-1]:.3f} s", flush=True)

    record["volume"] = {"path": str(Path(images).relative_to(C.REPO)), "shape": list(volume.shape)}
    record["model"] = "untrained Unet-resnet34 (seed 0), fused batch norm (load_model)"
    record["cli_wall"] = summary({p: [r["wall_s"] for r in v] for p, v in cli.items()})
    record["cli_cpu"] = summary({p: [r["cpu_s"] for r in v] for p, v in cli.items()})
    record["warm_predict_volume"] = summary(warm)
    record["warm_slices_per_s"] = {p: volume.shape[0] / t for p, t in record["warm_predict_volume"]["best"].items()}
    record["label_agreement_untrained"] = float((labels["float32"] == labels["auto"]).mean())
    record.update(C.stamp())
    C.write_json(C.RESULTS / "predict_precision.json", record)
    for key in ("cli_wall", "cli_cpu", "warm_predict_volume"):
        r = record[key]
        print(f"{key}: float32 best {r['best']['float32']:.2f} s, auto best {r['best']['auto']:.2f} s, "
              f"speed-up {r['speedup_best']:.2f}x (median {r['speedup_median']:.2f}x)")
    print(f"auto = {record['auto_resolves_to']}; labels agree on {record['label_agreement_untrained']:.4f}")


if __name__ == "__main__":
    main()
