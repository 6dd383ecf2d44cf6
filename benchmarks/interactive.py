"""Interactive use on the real slices: a few brush strokes, click Train, how good and how soon?

Arms, on the same simulated scribbles, in one run on one machine (issue 11):

- ``project``: napari-sandseg exactly as the Train widget runs it on painted labels: the engine
  process (:class:`napari_sandseg.engine_process.EngineProcess`), the widget's defaults
  (``TrainConfig.default(test_fraction=0, sparse=True)``), the whole 10-slice image with strokes
  on 3 training slices. Every best checkpoint is copied the moment it appears, so the curve is
  what a user would get by stopping at that time.
- ``random_forest``: the peers' method (ilastik, napari-apoc, convpaint's classic mode):
  scikit-image ``multiscale_basic_features`` + scikit-learn ``RandomForestClassifier`` fitted on
  the same painted pixels.
- ``dense``: the project's network on the dense labels of all 7 training slices.

Everything is tested on the whole of slices 0 and 9; seconds are wall-clock from the click.
- ``finetune``: after the scribbles arm, the largest wrong regions of a training slice are
  painted with their true class and the model is fine-tuned exactly as the Correct widget does.

The user looks at held-out slice 0 while training: its live previews are scored too.
Usage: ``python benchmarks/interactive.py [--budget 600] [--precision auto|float32] [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASS_NAMES, N_CLASSES, REPO, RESULTS, TEST_SLICES, TRAIN_SLICES, load_data  # noqa: E402

#: Training slices that get scribbles (3 of 1, 2, 3, 5, 6, 7, 8, spread through the stack).
SCRIBBLE_SLICES = (1, 5, 8)
#: napari's default brush size is 10 pixels: strokes are 10 px wide.
BRUSH_RADIUS = 5
#: Share of a scribbled slice's pixels painted (the issue's "about 1 %").
PAINTED_SHARE = 0.01
#: Times (s from the click) at which the curves are read.
REPORT_AT = (15, 30, 60, 120, 300)
#: The slice the user looks at while training: a held-out one, so its preview can be scored.
PREVIEW_SLICE = 0
#: The slice corrected in the fine-tune arm (a training slice without scribbles) ...
CORRECT_SLICE = 2
#: ... in its largest wrong regions.
CORRECTED_REGIONS = 10


# --------------------------------------------------------------------------------------------
# scribbles
# --------------------------------------------------------------------------------------------
def simulate_scribbles(masks: np.ndarray, slices: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Brush strokes a user might paint: Labels-layer values (0 unpainted, k = class k-1).

    Per slice and class, aiming at an equal share of :data:`PAINTED_SHARE` of the slice for each
    class (users paint every phase, not in proportion to its area): about 60 % as polylines of a
    10-px brush (up to 3 segments of 20-60 px between points at least a brush radius inside
    one region), the rest as 24-px stretches of the band 2-6 px inside the class's boundary,
    where users correct. Strokes are clipped to the truth, so none crosses into another phase.
    Small phases overshoot (thin clay gets more boundary strokes): 1.3-1.5 % of each slice in
    all on the real slices.
    """
    from scipy import ndimage
    from skimage.draw import line
    from skimage.morphology import disk

    rng = np.random.default_rng(seed)
    out = np.zeros(masks.shape, dtype=np.uint8)
    brush = disk(BRUSH_RADIUS)
    for z in slices:
        target = PAINTED_SHARE * masks[z].size / N_CLASSES
        for k in range(N_CLASSES):
            region = masks[z] == k
            if not region.any():
                continue
            depth = ndimage.distance_transform_edt(region)
            labels, _ = ndimage.label(depth > BRUSH_RADIUS)
            painted = np.zeros_like(region)
            inside = np.argwhere(labels > 0)
            tries = 0
            # About 60 %: polylines of up to 3 segments of 20-60 px inside one region.
            while painted.sum() * (2 * BRUSH_RADIUS + 1) < 0.6 * target and len(inside) and tries < 200:
                tries += 1
                start = inside[rng.integers(len(inside))]
                stroke = [start]
                for _ in range(3):
                    step = rng.normal(size=2)
                    nxt = np.clip(stroke[-1] + (step / np.linalg.norm(step) * rng.uniform(20, 60)).astype(int),
                                  0, np.array(region.shape) - 1)
                    if labels[tuple(nxt)] != labels[tuple(start)]:
                        break
                    stroke.append(nxt)
                for a, b in zip(stroke, stroke[1:] or stroke):
                    rr, cc = line(*a, *b)
                    painted[rr, cc] = True
            painted = ndimage.binary_dilation(painted, brush) & region
            # The rest: 24-px stretches of the band 2-6 px inside the boundary.
            band = (depth >= 2) & (depth <= 6)
            edge = np.argwhere(band)
            tries = 0
            while (painted.sum() < target) and len(edge) and tries < 200:
                tries += 1
                y, x = edge[rng.integers(len(edge))]
                window = (slice(max(0, y - 12), y + 12), slice(max(0, x - 12), x + 12))
                painted[window] |= band[window]
            out[z][painted & (out[z] == 0)] = k + 1
    return out


# --------------------------------------------------------------------------------------------
# arms
# --------------------------------------------------------------------------------------------
def score(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Per-class and mean IoU of whole test slices (confusion matrix, napari_sandseg.metrics)."""
    from napari_sandseg.metrics import evaluate

    report = evaluate(truth.astype(np.int64), pred.astype(np.int64), N_CLASSES)
    return {"mean_iou": float(report["mean_iou"]),
            "per_class_iou": dict(zip(CLASS_NAMES, map(float, report["per_class_iou"])))}


def random_forest_arm(images: np.ndarray, masks: np.ndarray, painted: np.ndarray, seed: int) -> dict[str, Any]:
    """Fit a random forest on multiscale filter features of the painted pixels; test on 0 and 9."""
    from functools import partial

    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    features = partial(multiscale_basic_features, intensity=True, edges=True, texture=True,
                       sigma_min=1, sigma_max=16, workers=2)
    cpu0, t0 = _cpu_self(), time.perf_counter()
    xs, ys = [], []
    for z in SCRIBBLE_SLICES:
        f = features(images[z].astype(np.float32))
        where = painted[z] > 0
        xs.append(f[where])
        ys.append(painted[z][where] - 1)
    forest = RandomForestClassifier(n_estimators=100, max_depth=None, n_jobs=2, random_state=seed)
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    fitted = time.perf_counter() - t0
    first = None
    preds = []
    for z in TEST_SLICES:
        f = features(images[z].astype(np.float32))
        preds.append(forest.predict(f.reshape(-1, f.shape[-1])).reshape(images[z].shape))
        first = first or time.perf_counter() - t0  # the first slice on screen
    seconds = time.perf_counter() - t0
    result = score(masks[list(TEST_SLICES)], np.stack(preds))
    return {**result, "curve": [[round(seconds, 1), result["mean_iou"]]], "fit_s": round(fitted, 1),
            "first_slice_s": round(first, 1), "seconds": round(seconds, 1), "cpu_s": round(_cpu_self() - cpu0, 1)}


def start_engine() -> Any:
    """The engine process with TensorFlow imported: it is running before the user clicks Train
    (the widget starts it to show the device), so its start-up is not on the clock."""
    from napari_sandseg.engine_process import EngineProcess
    from napari_sandseg.engine_requests import DeviceRequest

    engine = EngineProcess()
    list(engine.run(DeviceRequest(), cancel=threading.Event()))
    return engine


def network_arm(engine: Any, images: np.ndarray, targets: np.ndarray, config: Any, budget_s: float, workdir: Path,
                test_images: np.ndarray, test_masks: np.ndarray, preview_z: int, preview_truth: np.ndarray) -> dict[str, Any]:
    """Train in the engine process as the widget does, previewing slice ``preview_z`` (held out).

    Every best checkpoint is copied with its time (the curve); every live preview is scored
    against ``preview_truth`` with its time, with the share of the slice that changed since the
    previous preview (the widget's label-free figure) and, on epoch ends, the validation IoU the
    widget shows.
    """
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.engine_requests import TrainRequest
    from napari_sandseg.metrics import changed_share

    out = workdir / "model.keras"
    cancel = threading.Event()
    snapshots: list[tuple[float, Path, float]] = []  # (wall s, copy, engine CPU s)
    epochs: list[dict[str, Any]] = []
    previews: list[dict[str, Any]] = []
    seen_mtime = None
    last = None
    cpu0 = _cpu_of(engine.pid)
    t0 = time.perf_counter()
    wall0 = time.time()
    request = TrainRequest(images, targets, ClassMap(tuple(range(N_CLASSES))), config, out, preview_z=preview_z)
    gen = engine.run(request, cancel=cancel)
    for event in gen:
        now = time.perf_counter() - t0
        if out.exists() and out.stat().st_mtime != seen_mtime:
            seen_mtime = out.stat().st_mtime
            copy = workdir / f"snap-{len(snapshots)}.keras"
            shutil.copy2(out, copy)
            shutil.copy2(out.with_suffix(".json"), copy.with_suffix(".json"))
            snapshots.append((round(seen_mtime - wall0, 1), copy, round(_cpu_of(engine.pid) - cpu0, 1)))
        kind = getattr(event, "kind", "")
        if kind == "epoch":
            epochs.append({"epoch": event.epoch + 1, "s": round(now, 1), "engine_cpu_s": round(_cpu_of(engine.pid) - cpu0, 1),
                           "shown_val_mean_iou": event.logs.get("val_mean_iou"), "loss": event.loss})
        if getattr(event, "preview", None) is not None:
            at = event.epoch + 1 if kind == "epoch" else event.epoch + (event.batch + 1) / max(event.batches, 1)
            previews.append({"s": round(now, 1), "engine_cpu_s": round(_cpu_of(engine.pid) - cpu0, 1), "epoch": round(at, 2),
                             "slice_mean_iou": score(preview_truth[None], np.asarray(event.preview)[None])["mean_iou"],
                             "changed_share": None if last is None else changed_share(last, event.preview),
                             "shown_val_mean_iou": event.logs.get("val_mean_iou") if kind == "epoch" else None})
            last = np.asarray(event.preview)
        if now > budget_s and not cancel.is_set():
            cancel.set()
    cpu = _cpu_of(engine.pid) - cpu0
    seconds = time.perf_counter() - t0
    curve, cpu_curve, per_class = [], [], []
    for at, path, cpu_at in snapshots:
        result = predict_and_score(path, test_images, test_masks)
        curve.append([at, result["mean_iou"]])
        cpu_curve.append([cpu_at, result["mean_iou"]])
        per_class.append({"s": at, "engine_cpu_s": cpu_at, **result})
    # The same curve against the engine's CPU seconds: what other jobs on a shared machine
    # cannot stretch (the engine runs at low priority, so a loaded machine slows it most).
    return {"curve": curve, "cpu_curve": cpu_curve, "snapshots": per_class, "epochs": epochs, "previews": previews,
            "preview_first_s": previews[0]["s"] if previews else None, "seconds": round(seconds, 1),
            "engine_cpu_s": round(cpu, 1), "config": config.to_dict(), "model": str(out)}


def tracking(previews: list[dict[str, Any]]) -> dict[str, Any]:
    """How the widget's two figures follow the true quality of the previewed (held-out) slice.

    Spearman rank correlations over the run: the validation IoU on painted pixels (epoch
    ends) and the label-free "share changed since the previous preview" (negated: less change,
    better), each against the previewed slice's true mean IoU.
    """
    from scipy.stats import spearmanr

    def rho(pairs: list[tuple[float, float]]) -> float | None:
        if len(pairs) < 3:
            return None
        value = spearmanr(*zip(*pairs)).statistic
        return None if not np.isfinite(value) else round(float(value), 3)

    shown = [(p["shown_val_mean_iou"], p["slice_mean_iou"]) for p in previews if p["shown_val_mean_iou"] is not None]
    change = [(-p["changed_share"], p["slice_mean_iou"]) for p in previews if p["changed_share"] is not None]
    return {"shown_val_mean_iou_vs_true": rho(shown), "minus_changed_share_vs_true": rho(change),
            "n_epoch_ends": len(shown), "n_preview_pairs": len(change),
            "shown_minus_true_at_epoch_ends": [round(a - b, 3) for a, b in shown]}


def simulate_corrections(truth: np.ndarray, pred: np.ndarray, seed: int, n_regions: int = CORRECTED_REGIONS
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Strokes a user paints to correct a slice: in the largest wrong regions, the true class.

    Up to 3 brush dabs in each of the ``n_regions`` regions of :func:`worst_regions`, clipped to
    the region's most common true class. Returns the Labels values of the slice after painting
    (the prediction + 1, overpainted with truth + 1 where painted) and the painted mask.
    """
    from scipy import ndimage
    from skimage.morphology import disk

    rng = np.random.default_rng(seed)
    regions = worst_regions(truth, pred, n_regions)
    painted = np.zeros(truth.shape, dtype=bool)
    labels, n = ndimage.label(regions)
    for r in range(1, n + 1):
        region = labels == r
        depth = ndimage.distance_transform_edt(region)
        inside = np.argwhere(depth >= min(3, depth.max()))
        dots = np.zeros_like(region)
        for y, x in inside[rng.choice(len(inside), size=min(3, len(inside)), replace=False)]:
            dots[y, x] = True
        stroke = ndimage.binary_dilation(dots, disk(BRUSH_RADIUS)) & region
        # One class per stroke, as a user paints: the region's most common true class.
        k = np.bincount(truth[region]).argmax()
        painted |= stroke & (truth == k)
    values = pred.astype(np.int64) + 1
    values[painted] = truth[painted] + 1
    return values, painted


def worst_regions(truth: np.ndarray, pred: np.ndarray, n_regions: int) -> np.ndarray:
    """The ``n_regions`` largest connected regions where ``pred`` is wrong (what a user corrects)."""
    from scipy import ndimage

    labels, n = ndimage.label(truth != pred, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(truth.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:n_regions] + 1
    return np.isin(labels, keep)


def finetune_arm(engine: Any, images: np.ndarray, masks: np.ndarray, painted_labels: np.ndarray, config: Any,
                 model_path: Path, workdir: Path, seed: int) -> dict[str, Any]:
    """Correct the worst regions of slice :data:`CORRECT_SLICE` and fine-tune exactly as the Correct widget does.

    The clock starts at the click and stops when the slice in view is re-segmented on screen
    (``finetune_s``) and when the whole stack is (``stack_s``). Reported: the corrected
    regions' pixel accuracy and the held-out mean IoU, before and after.
    """
    from napari_sandseg._widgets._correct_widget import (
        FINETUNE_EPOCHS, SliceReady, finetune_config, finetune_job, keep_corrections_in_training, merge_corrections)
    from napari_sandseg._widgets._state import TrainingData
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.model import load_model
    from napari_sandseg.predict import predict_volume

    z = CORRECT_SLICE
    model, info = load_model(model_path)
    before = predict_volume(model, images, info, batch_size=2).labels
    values, painted = simulate_corrections(masks[z], before[z], seed)
    regions = worst_regions(masks[z], before[z], CORRECTED_REGIONS)
    layer = before.astype(np.int64) + 1
    layer[z] = values
    class_map = ClassMap(tuple(range(N_CLASSES)))
    training = TrainingData(images, painted_labels, class_map, config, "images", "masks")
    cpu0 = _cpu_of(engine.pid)
    clicked = time.perf_counter()
    data = merge_corrections(images, layer, {z: painted}, "images", training)
    ft_config = finetune_config(config, FINETUNE_EPOCHS, bool(np.any(data.targets == 0)))
    data = keep_corrections_in_training(data, ft_config)
    gen = finetune_job(engine, data, class_map, ft_config, model_path, workdir / "finetuned.keras", images, "images",
                       z, 8, workdir, threading.Event())
    slice_s = None
    try:
        while True:
            item = next(gen)
            if isinstance(item, SliceReady):
                slice_s = time.perf_counter() - clicked
                on_screen = item.labels
    except StopIteration as stop:
        outcome = stop.value
    stack_s = time.perf_counter() - clicked
    after = outcome.segmentation.labels

    def region_accuracy(pred: np.ndarray) -> float:
        return float((pred[regions] == masks[z][regions]).mean())

    test = list(TEST_SLICES)
    return {
        "finetune_s": round(slice_s, 1), "stack_s": round(stack_s, 1), "engine_cpu_s": round(_cpu_of(engine.pid) - cpu0, 1),
        "slice": z, "painted_pixels": int(painted.sum()), "corrected_region_pixels": int(regions.sum()),
        "corrected_region_accuracy": {"before": round(region_accuracy(before[z]), 4),
                                      "after": round(region_accuracy(after[z]), 4)},
        "slice_shown_first_equals_stack": bool(np.array_equal(on_screen, after[z])),
        "held_out_mean_iou": {"before": score(masks[test], before[test])["mean_iou"],
                              "after": score(masks[test], after[test])["mean_iou"]},
        "held_out_after": score(masks[test], after[test]),
        "config": ft_config.to_dict(),
    }


def predict_and_score(path: Path, images: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    """Segment whole test slices with a saved model (float32, no TTA) and score them."""
    from napari_sandseg.model import load_model
    from napari_sandseg.predict import predict_volume

    model, info = load_model(path)
    labels = predict_volume(model, images, info, batch_size=2).labels
    return score(masks, labels)


def at_times(curve: list[list[float]]) -> dict[str, float | None]:
    """The curve's value at each of :data:`REPORT_AT` (the last point at or before it) and at the end."""
    out: dict[str, float | None] = {}
    for t in REPORT_AT:
        before = [v for s, v in curve if s <= t]
        out[f"{t}s"] = before[-1] if before else None
    out["end"] = curve[-1][1] if curve else None
    return out


def first_time_at(curve: list[list[float]], level: float) -> float | None:
    """Seconds until the curve first reaches ``level`` (None if never)."""
    return next((s for s, v in curve if v >= level), None)


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------
def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int | None) -> float:
    if pid is None or not Path(f"/proc/{pid}/stat").exists():
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_flags() -> list[str]:
    """The CPU flags that decide the training speed (AVX2, AVX-512, bfloat16, AMX)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx", "fma")))


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "napari_sandseg", "benchmarks/interactive.py"],
                           cwd=REPO).returncode != 0
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per network arm")
    parser.add_argument("--precision", default=None, help="force a training precision (float32: the AVX2-class figure)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run on a 256 x 256 corner")
    parser.add_argument("--arms", default="random_forest,project,finetune,dense")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--finetune-from", type=Path, default=None,
                        help="run the fine-tune arm from this scribbles model (kept by --keep-models) instead of "
                             "the one the project arm trains")
    parser.add_argument("--keep-models", type=Path, default=None,
                        help="copy each arm's final model here (e.g. for benchmarks/analyze.py --model)")
    args = parser.parse_args(argv)
    from napari_sandseg.config import TrainConfig

    load_start = list(os.getloadavg())
    images, masks, source = load_data(quick=args.quick)
    painted = simulate_scribbles(masks, SCRIBBLE_SLICES, args.seed)
    test_images, test_masks = images[list(TEST_SLICES)], masks[list(TEST_SLICES)]
    overrides = {} if args.precision is None else {"precision": args.precision}
    arms = args.arms.split(",")
    results: dict[str, Any] = {"scribbles": {}, "dense": {}}
    share = [float((painted[z] > 0).mean()) for z in SCRIBBLE_SLICES]
    results["scribbles"]["painted_share_per_slice"] = share
    results["scribbles"]["painted_pixels_per_class"] = [int((painted == k + 1).sum()) for k in range(N_CLASSES)]
    print(f"scribbles on slices {SCRIBBLE_SLICES}: {[round(100 * s, 2) for s in share]} % painted", flush=True)
    with tempfile.TemporaryDirectory(prefix="sandseg-interactive-") as tmp:
        tmp = Path(tmp)
        if "random_forest" in arms:
            rf = random_forest_arm(images, masks, painted, args.seed)
            results["scribbles"]["random_forest"] = rf
            print(f"random forest: mean IoU {rf['mean_iou']:.3f} after {rf['seconds']} s ({rf['per_class_iou']})", flush=True)
        engine = start_engine() if {"project", "dense", "finetune"} & set(arms) else None
        preview_truth = masks[PREVIEW_SLICE]
        try:
            if "project" in arms:
                cfg = TrainConfig.default(test_fraction=0.0, sparse=True, seed=args.seed, **overrides)
                (tmp / "scribbles").mkdir()
                net = network_arm(engine, images, painted, cfg, args.budget, tmp / "scribbles", test_images,
                                  test_masks, PREVIEW_SLICE, preview_truth)
                net["at"] = at_times(net["curve"])
                net["tracking"] = tracking(net["previews"])
                results["scribbles"]["project"] = net
                print(f"network from scribbles: {net['at']}; first preview {net['preview_first_s']} s; "
                      f"tracking {net['tracking']}", flush=True)
            scribble_model = Path(results["scribbles"]["project"]["model"]) if "project" in arms else args.finetune_from
            if "finetune" in arms and scribble_model is not None:
                cfg = TrainConfig.default(test_fraction=0.0, sparse=True, seed=args.seed, **overrides)
                (tmp / "finetune").mkdir()
                ft = finetune_arm(engine, images, masks, painted, cfg, scribble_model, tmp / "finetune", args.seed)
                results["finetune"] = {**ft, "from_model": str(scribble_model)}
                print(f"fine-tune: slice on screen {ft['finetune_s']} s, stack {ft['stack_s']} s, corrected regions "
                      f"{ft['corrected_region_accuracy']}, held-out {ft['held_out_mean_iou']}", flush=True)
            if "dense" in arms:
                cfg = TrainConfig.default(test_fraction=0.0, seed=args.seed, **overrides)
                (tmp / "dense").mkdir()
                # The whole stack, the test slices unannotated (never trained on), so the slice in view
                # can be a held-out one as in the scribbles arm.
                dense_targets = masks.astype(np.int64)
                dense_targets[list(TEST_SLICES)] = -1
                dense = network_arm(engine, images, dense_targets, cfg, args.budget, tmp / "dense", test_images,
                                    test_masks, PREVIEW_SLICE, preview_truth)
                dense["at"] = at_times(dense["curve"])
                dense["time_to"] = {str(level): first_time_at(dense["curve"], level) for level in (0.85, 0.88, 0.90)}
                results["dense"] = dense
                print(f"network from dense labels: {dense['at']}, time to {dense['time_to']}", flush=True)
            for arm, result in (("scribbles", results["scribbles"].get("project")), ("dense", results["dense"])):
                if args.keep_models is not None and result and "model" in result:
                    args.keep_models.mkdir(parents=True, exist_ok=True)
                    for suffix in (".keras", ".json"):
                        shutil.copy2(Path(result["model"]).with_suffix(suffix), args.keep_models / f"{arm}{suffix}")
        finally:
            if engine is not None:
                engine.shutdown()
    rf_final = results["scribbles"].get("random_forest", {}).get("mean_iou")
    net_curve = results["scribbles"].get("project", {}).get("curve", [])
    results["targets"] = {
        "network_minus_forest_at_120s": (at_times(net_curve)["120s"] - rf_final)
        if net_curve and rf_final is not None and at_times(net_curve)["120s"] is not None else None,
        "network_at_300s": at_times(net_curve)["300s"] if net_curve else None,
        "dense_at_300s": results["dense"].get("at", {}).get("300s"),
    }
    results.update({
        "preview_first_s": results["scribbles"].get("project", {}).get("preview_first_s"),
        "finetune_s": results.get("finetune", {}).get("finetune_s"),
        "first_checkpoint_s": net_curve[0][0] if net_curve else None,
        "protocol": {"scribble_slices": SCRIBBLE_SLICES, "test_slices": TEST_SLICES, "train_slices": TRAIN_SLICES,
                     "brush_radius": BRUSH_RADIUS, "painted_share": PAINTED_SHARE, "seed": args.seed,
                     "budget_s": args.budget, "data": source},
        "cpu_flags": cpu_flags(), "load_average_at_start": load_start, "load_average_at_end": list(os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": git_commit(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    out = args.out or RESULTS / ("interactive_quick.json" if args.quick else "interactive.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
