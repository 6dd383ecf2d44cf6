"""Shared pieces of the benchmarks: data, the two protocols, evaluation, timing, JSON output.

The benchmarks compare the *classic* recipe (the published notebook: numpy ``model.fit`` on
128x128 patches, cross-entropy) with the project's recipe on the same data, in the same script.
Every result carries the protocol and the seeds it was made with, and :func:`stamp`'s record
of where it came from (command, git commit, CPU flags, load average at start and end).

Protocols
---------
slices
    Train and validate on slices 1, 2, 3, 5, 6, 7, 8; test on the whole of slices 0 and 9,
    segmented at full size (1024 x 996). Slice 4 was labelled separately: it is reported on
    its own as ``"slice 4, other annotator"`` and never used for training.
patches
    All non-overlapping 128 x 128 patches of the 10 slices, a seeded random 90/10 split into
    train and test; validation is taken from the train part.

Metrics always come from :mod:`napari_sandseg.metrics` (confusion matrix -> per-class IoU
TP / (TP + FP + FN)).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Repository root (benchmarks/ is one level below it).
REPO = Path(__file__).resolve().parents[1]
#: Where the real sandstone slices live (outside the repository, read-only). A clone placed
#: elsewhere (a bisect or comparison worktree in /tmp) names them with SANDSEG_DATA_DIR.
DATA_DIR = Path(os.environ.get("SANDSEG_DATA_DIR") or REPO.parent / "shared" / "data" / "sandstone")
RESULTS = Path(__file__).resolve().parent / "results"
#: Trained models of accuracy.py (never committed; throughput.py reuses them).
MODEL_DIR = Path(os.environ.get("SANDSEG_BENCH_MODELS", "/tmp/sandseg-bench-models"))

N_CLASSES = 4
PATCH = 128
TRAIN_SLICES = (1, 2, 3, 5, 6, 7, 8)
TEST_SLICES = (0, 9)
OTHER_ANNOTATOR_SLICE = 4
CLASS_NAMES = ("pore", "clay", "quartz", "bright mineral")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_data(quick: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Load the 10 sandstone slices and their class ids.

    Parameters
    ----------
    quick : bool
        Smoke-run size: a 256 x 256 corner of each slice, or synthetic data from
        :func:`napari_sandseg.sample.make_sandstone` when the real data is absent.

    Returns
    -------
    images : np.ndarray
        ``(10, Y, X)`` uint8.
    masks : np.ndarray
        ``(10, Y, X)`` uint8 class ids 0..3.
    source : str
        Where the data came from (recorded in the JSON).
    """
    images_path, masks_path = DATA_DIR / "images.tif", DATA_DIR / "masks.tif"
    if images_path.exists() and masks_path.exists():
        images, masks = _read_tiff(images_path), _read_tiff(masks_path)
        source = str(DATA_DIR)
        if quick:
            images, masks = images[:, 256:512, 256:512], masks[:, 256:512, 256:512]
            source += " (quick: [:, 256:512, 256:512])"
        return np.ascontiguousarray(images), np.ascontiguousarray(masks).astype(np.uint8), source
    if not quick:
        raise SystemExit(
            f"real data not found at {DATA_DIR}; run with --quick for synthetic smoke data"
        )
    from napari_sandseg.sample import make_sandstone

    # Said aloud: a --quick run in a clone outside the work folder once compared synthetic
    # figures with real ones, and only the results' "data" field told them apart.
    print(f"real data not found at {DATA_DIR} (set SANDSEG_DATA_DIR); --quick uses synthetic slices",
          file=sys.stderr, flush=True)
    images, masks = make_sandstone(shape=(10, 256, 256), seed=0)
    return images, masks.astype(np.uint8), "napari_sandseg.sample.make_sandstone((10,256,256), seed=0)"


def _read_tiff(path: Path) -> np.ndarray:
    """Read a TIFF stack with the engine's reader when it exists, else tifffile."""
    try:
        from napari_sandseg.io import read_volume
    except ImportError:
        import tifffile

        return tifffile.imread(str(path))
    return read_volume(path)


def patchify(stack: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Cut ``(Z, Y, X)`` into non-overlapping ``size`` x ``size`` patches, row-major per slice.

    Edges that do not fill a whole patch are dropped (1024 x 996 -> rows 0..1023, cols 0..895:
    8 x 7 = 56 patches per slice, as the classic tutorial cut them).
    """
    z, y, x = stack.shape
    ny, nx = y // size, x // size
    cut = stack[:, : ny * size, : nx * size]
    return (
        cut.reshape(z, ny, size, nx, size).transpose(0, 1, 3, 2, 4).reshape(-1, size, size)
    )


@dataclass
class Split:
    """One protocol's data: training images/ids (patches or slices) and held-out test sets.

    ``test`` maps a name to ``(images, ids)``; the first entry is the scored one. ``extra``
    holds sets reported outside the targets (slice 4, other annotator).
    """

    protocol: str
    train_images: np.ndarray
    train_ids: np.ndarray
    test: dict[str, tuple[np.ndarray, np.ndarray]]
    extra: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    description: str = ""


def slices_protocol(images: np.ndarray, masks: np.ndarray) -> Split:
    """Train on slices 1,2,3,5,6,7,8 (full slices), test on slices 0 and 9 at full size."""
    return Split(
        protocol="slices",
        train_images=images[list(TRAIN_SLICES)],
        train_ids=masks[list(TRAIN_SLICES)],
        test={"slices 0 and 9": (images[list(TEST_SLICES)], masks[list(TEST_SLICES)])},
        extra={
            "slice 4, other annotator": (
                images[[OTHER_ANNOTATOR_SLICE]],
                masks[[OTHER_ANNOTATOR_SLICE]],
            )
        },
        description=(
            "train+val on slices 1,2,3,5,6,7,8; test on the whole of slices 0 and 9 "
            "segmented at full size; slice 4 (other annotator) reported separately, never trained on"
        ),
    )


def patches_protocol(images: np.ndarray, masks: np.ndarray, seed: int) -> Split:
    """All non-overlapping 128x128 patches of the 10 slices, seeded random 90/10 train/test."""
    x, y = patchify(images), patchify(masks)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(0.1 * len(x))))
    test, train = order[:n_test], order[n_test:]
    return Split(
        protocol="patches",
        train_images=x[train],
        train_ids=y[train],
        test={"test patches": (x[test], y[test])},
        description=(
            f"all {len(x)} non-overlapping 128x128 patches of the 10 slices; seeded random "
            f"90/10 split (seed {seed}): {len(train)} train(+val), {n_test} test"
        ),
    )


def make_split(protocol: str, images: np.ndarray, masks: np.ndarray, seed: int) -> Split:
    """Return the :class:`Split` for ``protocol`` ("slices" or "patches")."""
    if protocol == "slices":
        return slices_protocol(images, masks)
    if protocol == "patches":
        return patches_protocol(images, masks, seed)
    raise ValueError(f"unknown protocol {protocol!r}; use 'slices' or 'patches'")


def val_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, val) index split of ``n`` items."""
    order = np.random.default_rng(seed + 1).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --------------------------------------------------------------------------------------------
# prediction and metrics
# --------------------------------------------------------------------------------------------
def pad_to_multiple(stack: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(N, Y, X)`` so Y and X are multiples of ``multiple``; return original size."""
    _, y, x = stack.shape
    py, px = (-y) % multiple, (-x) % multiple
    if py or px:
        stack = np.pad(stack, ((0, 0), (0, py), (0, px)), mode="reflect")
    return stack, (y, x)


def predict_probs(
    model: Any,
    images01: np.ndarray,
    batch_size: int = 1,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities ``(N, Y, X, K)`` for float images in [0, 1] of any size.

    Slices are padded to a multiple of 32 and cropped back. With ``tta`` the softmax outputs
    of the 8 flips/rotations of each image are averaged (each mapped back first).
    """
    padded, (y, x) = pad_to_multiple(images01)
    xin = padded[..., None].astype(np.float32)
    transforms = _d4() if tta else [(0, False)]
    total = None
    for k, flip in transforms:
        t = np.rot90(xin, k, axes=(1, 2))
        t = t[:, :, ::-1] if flip else t
        p = _predict_batches(model, np.ascontiguousarray(t), batch_size)
        p = p[:, :, ::-1] if flip else p
        p = np.rot90(p, -k, axes=(1, 2))
        total = p if total is None else total + p
    return (total / len(transforms))[:, :y, :x]


def _d4() -> list[tuple[int, bool]]:
    """The 8 symmetries of the square as (quarter turns, horizontal flip)."""
    return [(k, f) for k in range(4) for f in (False, True)]


def _predict_batches(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Call the model batch by batch (no Keras predict loop: cheap for a few big slices)."""
    out = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def confusion(truth: np.ndarray, pred: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """Confusion matrix via the engine's metrics (rows truth, columns prediction)."""
    from napari_sandseg.metrics import confusion_matrix

    return np.asarray(confusion_matrix(truth, pred, k), dtype=np.int64)


def metrics_impl() -> str:
    """Which metrics implementation produced the figures (recorded in every JSON)."""
    return "napari_sandseg.metrics"


def report(cm: np.ndarray) -> dict[str, Any]:
    """JSON-safe IoU report from a confusion matrix, by the engine's metrics."""
    from napari_sandseg.metrics import report_from_confusion, to_json_dict

    rep = to_json_dict(report_from_confusion(np.asarray(cm), names=list(CLASS_NAMES)))
    return {
        "per_class_iou": dict(zip(CLASS_NAMES, _as_list(rep["per_class_iou"]))),
        "mean_iou": rep["mean_iou"],
        "pixel_accuracy": rep["pixel_accuracy"],
        "confusion_matrix": np.asarray(cm).tolist(),
    }


def _as_list(values: Any) -> list:
    """Per-class values as a plain list whether the report holds a list or a name->value dict."""
    if isinstance(values, dict):
        return list(values.values())
    return list(values)


def evaluate_sets(
    model: Any,
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    normalize: Callable[[np.ndarray], np.ndarray],
    tta: bool = False,
    batch_size: int = 1,
) -> dict[str, np.ndarray]:
    """Confusion matrix per named test set (``images`` normalised by ``normalize``)."""
    out = {}
    for name, (imgs, ids) in sets.items():
        probs = predict_probs(model, normalize(imgs), batch_size=batch_size, tta=tta)
        out[name] = confusion(ids, probs.argmax(-1).astype(np.uint8))
    return out


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU of a confusion matrix (engine metrics)."""
    return float(report(cm)["mean_iou"])


# --------------------------------------------------------------------------------------------
# per-epoch held-out evaluation with wall time
# --------------------------------------------------------------------------------------------
def make_epoch_eval_callback(
    test_set: tuple[np.ndarray, np.ndarray],
    normalize: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 1,
    log: Callable[[str], None] = print,
) -> Any:
    """Keras callback: held-out mean IoU after every epoch, with training-only wall time.

    ``train_seconds`` excludes the time spent in this evaluation (and in Keras' own validation
    pass, which is counted as training as the classic recipe pays it too).
    """
    import keras

    images, ids = test_set

    class EpochEval(keras.callbacks.Callback):
        """Record (epoch, cumulative training seconds, held-out mean IoU)."""

        def __init__(self) -> None:
            super().__init__()
            self.records: list[dict[str, Any]] = []
            self.eval_seconds = 0.0
            self.t0 = time.perf_counter()

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()
            self.eval_seconds = 0.0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            t_train = time.perf_counter() - self.t0 - self.eval_seconds
            start = time.perf_counter()
            probs = predict_probs(self.model, normalize(images), batch_size=batch_size)
            cm = confusion(ids, probs.argmax(-1).astype(np.uint8))
            miou = mean_iou(cm)
            self.eval_seconds += time.perf_counter() - start
            rec = {
                "epoch": epoch + 1,
                "train_seconds": round(t_train, 2),
                "test_mean_iou": round(miou, 5),
                "loss": _f(logs, "loss"),
                "val_loss": _f(logs, "val_loss"),
            }
            self.records.append(rec)
            log(f"  epoch {rec['epoch']:3d}  t={t_train:7.1f}s  loss={rec['loss']}  "
                f"val_loss={rec['val_loss']}  held-out mIoU={miou:.4f}")

    return EpochEval()


def _f(logs: dict | None, key: str) -> float | None:
    """A log value as a rounded float, or None."""
    if not logs or key not in logs:
        return None
    return round(float(logs[key]), 5)


def seconds_to(records: list[dict[str, Any]], threshold: float) -> float | None:
    """Training seconds at which the held-out mean IoU first reached ``threshold`` (or None)."""
    for rec in records:
        if rec["test_mean_iou"] >= threshold:
            return rec["train_seconds"]
    return None


# --------------------------------------------------------------------------------------------
# reproducibility and output
# --------------------------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (Keras' global seed)."""
    import keras

    keras.utils.set_random_seed(seed)


#: machine() imports TensorFlow for its version and GPUs; a benchmark running napari in-process
#: (event_loop.py) turns this off: TensorFlow loaded beside Qt there crashed the process on exit.
LOAD_TENSORFLOW = True


def machine() -> dict[str, Any]:
    """CPU model and flags, logical cores, memory, load average at start and now, library versions."""
    import psutil

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(_STARTED["load_average"]),
        "load_average_at_end": list(os.getloadavg()),
    }
    if not LOAD_TENSORFLOW:
        from importlib.metadata import version

        info["tensorflow"], info["keras"] = version("tensorflow"), version("keras")
        info["gpu"] = "not checked: TensorFlow is not loaded in this process"
        return {**info, **_flags_record()}
    try:
        import keras
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["keras"] = keras.__version__
        info["gpu"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:  # pragma: no cover - benchmarks need TF, but keep machine() usable
        pass
    return {**info, **_flags_record()}


def _flags_record() -> dict[str, Any]:
    flags = _cpu_flags()
    return {"cpu_flags_of_interest": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
            "cpu_flags": sorted(flags)}


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    """CPU feature flags (Linux); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def command_line() -> str:
    """The exact command that is running, for the JSON."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


#: Taken when a benchmark imports this module, i.e. before it does any work: the load average
#: a result was measured under is the one at its start, not at its end (when the benchmark's
#: own work has raised it). :func:`start_clock` takes it again where a script waits first.
_STARTED: dict[str, Any] = {"load_average": os.getloadavg(), "date_utc": _utc_now()}


def start_clock() -> None:
    """Record the start load average and date now (call just before the measured work)."""
    _STARTED.update(load_average=os.getloadavg(), date_utc=_utc_now())


def git_commit(paths: tuple[str, ...] = ("napari_sandseg", "benchmarks", "pyproject.toml")) -> str:
    """HEAD of the repository, with ``+dirty`` when the measured code (``paths``: changed or
    untracked files, result files aside) differs from it."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)

    head = git("rev-parse", "HEAD")
    if head.returncode:
        return "unknown (not a git checkout)"
    status = git("status", "--porcelain", "--", *paths, ":(exclude)benchmarks/results")
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def stamp() -> dict[str, Any]:
    """Where a result came from: command, git commit, start and end dates, machine (CPU flags,
    load average at start and end). The one provenance record every benchmark writes."""
    return {
        "command": command_line(),
        "git_commit": git_commit(),
        "date_utc": _STARTED["date_utc"],
        "finished_utc": _utc_now(),
        "machine": machine(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON atomically (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON result file, or ``{}`` when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else {}


#: Key under which ``crossval.py --update-accuracy`` keeps accuracy.py's own single-split run.
SINGLE_SPLIT = "single_split"


def accuracy_run(data: dict[str, Any], protocol: str, recipe: str) -> dict[str, Any]:
    """accuracy.py's own run of ``recipe`` on ``protocol`` in accuracy.json's ``data`` ({} if absent).

    Once cross-validated means replace a slices entry, the run itself sits under :data:`SINGLE_SPLIT`.
    """
    entry = data.get(protocol, {}).get(recipe, {})
    return entry.get(SINGLE_SPLIT, entry)


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays to plain Python for json."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def logger(path: Path | None = None) -> Callable[[str], None]:
    """A print function that also appends to ``path`` (flushes so nohup logs are live)."""

    def log(msg: str) -> None:
        print(msg, flush=True)
        if path is not None:
            with open(path, "a") as fh:
                fh.write(msg + "\n")

    return log
