"""Throughput: the classic path against the project's path, same model, same data, one script.

Usage
-----
    python benchmarks/throughput.py            # real data, Unet-resnet34, 128x128 patches
    python benchmarks/throughput.py --quick    # smoke run (resnet18, a few patches)

Measured, back to back in this process:

* the machine's fp32 matmul GFLOP/s (TensorFlow, square matrices) as the peak reference;
* training images/s: classic (``model.fit`` on numpy, fp32) against the project's path
  (``tf.data`` pipeline, batch norm as one fused op (``napari_sandseg.fused_bn``), bfloat16
  mixed precision where the CPU has AVX512_BF16, optional XLA);
* prediction images/s: classic (``model.predict`` on numpy) against the project's path
  (compiled ``tf.function`` over ``tf.data`` batches, argmax in the graph so only uint8
  labels come back: what a streaming predict needs);
* for every path and repetition also the process CPU milliseconds per image: the shared
  machine sometimes withholds CPU (wall time stretches while CPU time does not), so the CPU
  figures show the work each path needs independently of that;
* for every reduced precision adopted: the held-out mean IoU (slices 0 and 9, full size) of
  the same trained weights in fp32 and in the reduced precision.

All paths start from the same initial weights and see the same 128x128 patches (the
training patches of the slices protocol). Results go to ``benchmarks/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import _common as C

#: Unet-resnet34 forward pass on one 128x128x1 image (GFLOP, multiply-adds counted as 2).
FORWARD_GFLOP_128 = 3.9
#: Training costs about three forward passes (forward + backward w.r.t. activations and weights).
TRAIN_FACTOR = 3.0
BATCH_TRAIN = 16
BATCH_PREDICT_CLASSIC = 32  # model.predict's default, as the classic notebook calls it
BATCH_PREDICT_PROJECT = 64
TRAIN_CHUNK = 128  # images per timed training repetition (8 steps of 16)
PRED_CHUNK = 128  # images per timed prediction repetition


def matmul_gflops(n: int = 2048, reps: int = 10, rounds: int = 3) -> float:
    """Measured fp32 matmul GFLOP/s of this machine through TensorFlow (best of ``rounds``)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    _ = (a @ b).numpy()
    best = 0.0
    for _round in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            c = a @ b
        _ = c.numpy()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def bf16_supported() -> bool:
    """True when the CPU has native bfloat16 dot products (AVX512_BF16 or AMX) or a GPU is used."""
    return bool({"avx512_bf16", "amx_bf16"} & C._cpu_flags())


def build(backbone: str, weights: list[np.ndarray], precision: str, fused: bool = False) -> Any:
    """The Unet in ``precision`` ("float32" or "mixed_bfloat16") with the given weights.

    Under mixed precision the softmax output is cast back to float32 so the loss and the
    argmax see float32 (variables stay float32 either way). With ``fused`` every batch norm
    is the engine's :class:`~napari_sandseg.fused_bn.FusedBatchNormalization` (same weights,
    same results, one fused kernel).
    """
    import keras

    keras.mixed_precision.set_global_policy(precision)
    try:
        from accuracy import build_unet

        model = build_unet(backbone)
        if precision != "float32":
            out = keras.layers.Activation("linear", dtype="float32")(model.output)
            model = keras.Model(model.input, out)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(weights)
    if fused:
        from napari_sandseg.fused_bn import fused_copy

        model = fused_copy(model)
    return model


def train_classic_step(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], int]:
    """Compile for the classic path; return a callable running one ``model.fit`` on numpy."""
    import keras

    model.compile(keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(x[: 2 * BATCH_TRAIN], y[: 2 * BATCH_TRAIN], batch_size=BATCH_TRAIN, epochs=1, verbose=0)

    def run() -> int:
        model.fit(x, y, batch_size=BATCH_TRAIN, epochs=1, verbose=0, shuffle=True)
        return len(x)

    return run


def train_project_step(model: Any, x: np.ndarray, y: np.ndarray, jit: bool) -> Callable[[], int]:
    """Compile for the project path; return a callable running one fit on a tf.data pipeline."""
    import keras
    import tensorflow as tf

    model.compile(keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", jit_compile=jit)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0)
          .batch(BATCH_TRAIN, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    model.fit(ds.take(2), epochs=1, verbose=0)
    n = (len(x) // BATCH_TRAIN) * BATCH_TRAIN

    def run() -> int:
        model.fit(ds, epochs=1, verbose=0)
        return n

    return run


def predict_classic_step(model: Any, x: np.ndarray) -> Callable[[], int]:
    """Callable timing ``model.predict`` on numpy (float32 probabilities back) + argmax."""
    model.predict(x[:BATCH_PREDICT_CLASSIC], batch_size=BATCH_PREDICT_CLASSIC, verbose=0)

    def run() -> int:
        probs = model.predict(x, batch_size=BATCH_PREDICT_CLASSIC, verbose=0)
        probs.argmax(-1).astype(np.uint8)
        return len(x)

    return run


def streaming_predictor(model: Any, jit: bool) -> Callable[[Any], Any]:
    """Compiled batch -> uint8 labels function (argmax inside the graph)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def labels(batch: Any) -> Any:
        return tf.cast(tf.argmax(model(batch, training=False), axis=-1), tf.uint8)

    return labels


def predict_project_step(model: Any, x: np.ndarray, jit: bool) -> Callable[[], int]:
    """Callable timing the streaming path: tf.data batches -> compiled fn -> uint8 labels."""
    import tensorflow as tf

    fn = streaming_predictor(model, jit)
    fn(tf.constant(x[:BATCH_PREDICT_PROJECT]))  # trace/compile once
    ds = tf.data.Dataset.from_tensor_slices(x).batch(BATCH_PREDICT_PROJECT).prefetch(2)

    def run() -> int:
        np.concatenate([fn(b).numpy() for b in ds])
        return len(x)

    return run


def interleaved(paths: dict[str, Callable[[], int]], reps: int, peaks: list[float] | None = None,
                n: int = 2048, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run every path ``reps`` times, round-robin, so load changes hit all paths alike.

    Each path returns how many images it processed; this times it (wall clock) and returns
    images/s per repetition. With ``cpu`` the process CPU milliseconds per image (user +
    system, all threads) are appended too: unlike wall time they do not grow when the shared
    machine withholds CPU, so they show the work each path needs. With ``peaks`` a matmul
    GFLOP/s sample is appended each round, measured under the same conditions as the paths.
    """
    out: dict[str, list[float]] = {name: [] for name in paths}
    for rep in range(reps):
        for name, run in paths.items():
            c0, start = os.times(), time.perf_counter()
            images = run()
            wall, c1 = time.perf_counter() - start, os.times()
            out[name].append(images / wall)
            cpu_ms = 1000 * ((c1.user - c0.user) + (c1.system - c0.system)) / images
            if cpu is not None:
                cpu.setdefault(name, []).append(cpu_ms)
            print(f"  rep {rep + 1}/{reps} {name}: {out[name][-1]:.2f} img/s, {cpu_ms:.1f} CPU ms/img", flush=True)
        if peaks is not None:
            peaks.append(matmul_gflops(n, reps=5, rounds=1))
    return out


def load_data(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The slices protocol's training patches as float32 (N,128,128,1) and one-hot targets."""
    images, masks, source = C.load_data(quick)
    split = C.slices_protocol(images, masks)
    x = C.patchify(split.train_images).astype(np.float32)[..., None] / 255.0
    y = np.eye(C.N_CLASSES, dtype=np.float32)[C.patchify(split.train_ids)]
    return x, y, source


def precision_check(model_path: Path, quick: bool, precision: str, jit: bool, fused: bool) -> dict[str, Any]:
    """Held-out mean IoU of one trained model in fp32 and in ``precision`` (same weights, same
    batch-norm implementation as the adopted path)."""
    import keras

    trained = keras.models.load_model(model_path, compile=False)
    images, masks, _ = C.load_data(quick)
    split = C.slices_protocol(images, masks)
    test = split.test["slices 0 and 9"]
    norm = _normalizer_for(model_path)
    backbone = _backbone_of(model_path)
    out: dict[str, Any] = {"model": str(model_path), "test_set": "slices 0 and 9, full size", "fused_batchnorm": fused}
    for name, prec in (("float32", "float32"), (precision, precision)):
        model = build(backbone, trained.get_weights(), prec, fused)  # fresh: the file may hold bf16 layers
        fn = streaming_predictor(model, jit and prec != "float32")
        padded, (h, w) = C.pad_to_multiple(norm(test[0]))
        pred = np.concatenate([fn(padded[i : i + 1, ..., None]).numpy() for i in range(len(padded))])
        out[f"mean_iou_{name}"] = C.mean_iou(C.confusion(test[1], pred[:, :h, :w]))
    out["delta"] = out[f"mean_iou_{precision}"] - out["mean_iou_float32"]
    return out


def _normalizer_for(model_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The input normalisation the accuracy run used for this model (from accuracy.json)."""
    data = C.read_json(C.RESULTS / "accuracy.json")
    protocol, recipe = model_path.stem.split("_")[:2]
    norm = data.get(protocol, {}).get(recipe, {}).get("details", {}).get("normalization")
    if norm:
        low, high = float(norm["low"]), float(norm["high"])
        return lambda im: (im.astype(np.float32) - low) / (high - low)
    return lambda im: im.astype(np.float32) / 255.0


def _backbone_of(model_path: Path) -> str:
    """Backbone of a saved accuracy.py model (resnet18 for quick runs, else resnet34)."""
    return "resnet18" if model_path.stem.endswith("_quick") else "resnet34"


def main(argv: list[str] | None = None) -> None:
    """Measure and compare both paths; print and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet18, few patches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 7; quick 2)")
    ap.add_argument("--jit", choices=["auto", "on", "off"], default="off",
                    help="XLA for the project's path; auto measures with and without (XLA compiles "
                         "for minutes on 2 cores and was slower there)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out_path = args.out or (C.RESULTS / ("quick" if args.quick else "") / "throughput.json")
    C.set_seed(args.seed)
    backbone = "resnet18" if args.quick else "resnet34"
    reps = args.reps or (2 if args.quick else 7)
    x, y, source = load_data(args.quick)
    n_train, n_pred = (32, 32) if args.quick else (TRAIN_CHUNK, PRED_CHUNK)
    if args.quick:
        args.jit = "off"
    precision = "mixed_bfloat16" if bf16_supported() else "float32"
    init = _init_weights(backbone)
    n_mm = 1024 if args.quick else 2048
    peaks = [matmul_gflops(n_mm)]
    print(f"fp32 matmul: {peaks[0]:.1f} GFLOP/s", flush=True)
    xt, yt, xp = x[:n_train], y[:n_train], x[:n_pred]
    jits = {"auto": [False, True], "on": [True], "off": [False]}[args.jit]
    # Project variants: each precision with the fused batch norm, and the best precision
    # without it, so the contribution of each change shows in the samples.
    variants = [(p, True) for p in dict.fromkeys(["float32", precision])] + [(precision, False)]
    keys = [f"{p}{'+fusedbn' if f else ''}{'+xla' if j else ''}" for j in jits for p, f in variants]
    train_paths = {"classic": train_classic_step(build(backbone, init, "float32"), xt, yt)}
    pred_paths = {"classic": predict_classic_step(build(backbone, init, "float32"), xp)}
    for key in keys:
        prec, fused, jit = key.split("+")[0], "+fusedbn" in key, key.endswith("+xla")
        train_paths[key] = train_project_step(build(backbone, init, prec, fused), xt, yt, jit)
        pred_paths[key] = predict_project_step(build(backbone, init, prec, fused), xp, jit)
    print("training (images/s per repetition):", flush=True)
    cpu: dict[str, dict[str, list[float]]] = {"train": {}, "predict": {}}
    train = interleaved(train_paths, reps, peaks, n_mm, cpu["train"])
    print("prediction (images/s per repetition):", flush=True)
    pred = interleaved(pred_paths, reps, peaks, n_mm, cpu["predict"])
    peak = max(peaks)
    print(f"fp32 matmul, best of {len(peaks)} samples: {peak:.1f} GFLOP/s", flush=True)
    _write(out_path, args, train, pred, peak, precision, source, backbone, x.shape, reps, cpu)


def _init_weights(backbone: str) -> list[np.ndarray]:
    """Seeded initial weights shared by every path."""
    from accuracy import build_unet

    return build_unet(backbone).get_weights()


def _best(samples: dict[str, list[float]]) -> tuple[str, float]:
    """The project variant with the highest best-of-N images/s."""
    items = {k: max(v) for k, v in samples.items() if k != "classic"}
    name = max(items, key=items.get)
    return name, items[name]


def _write(out_path: Path, args: Any, train: dict, pred: dict, peak: float, precision: str,
           source: str, backbone: str, shape: tuple, reps: int, cpu: dict) -> None:
    """Assemble ratios, fractions of peak and the precision check; print and write JSON."""
    train_name, train_ips = _best(train)
    pred_name, pred_ips = _best(pred)
    train_c, pred_c = max(train["classic"]), max(pred["classic"])
    fwd = FORWARD_GFLOP_128 * (shape[1] * shape[2]) / (128 * 128)

    def frac(ips: float, factor: float) -> float:
        return round(ips * fwd * factor / peak, 4)

    def med(v: list[float]) -> float:
        return round(float(np.median(v)), 3)

    out = {
        "train_images_per_s_classic": round(train_c, 3),
        "train_images_per_s_project": round(train_ips, 3),
        "predict_images_per_s_classic": round(pred_c, 3),
        "predict_images_per_s_project": round(pred_ips, 3),
        "train_ratio": round(train_ips / train_c, 3),
        "predict_ratio": round(pred_ips / pred_c, 3),
        "median_train_ratio": round(med(train[train_name]) / med(train["classic"]), 3),
        "median_predict_ratio": round(med(pred[pred_name]) / med(pred["classic"]), 3),
        "cpu_ms_per_image": {
            "train_classic": med(cpu["train"]["classic"]),
            "train_project": med(cpu["train"][train_name]),
            "predict_classic": med(cpu["predict"]["classic"]),
            "predict_project": med(cpu["predict"][pred_name]),
            "train_ratio": round(med(cpu["train"]["classic"]) / med(cpu["train"][train_name]), 3),
            "predict_ratio": round(med(cpu["predict"]["classic"]) / med(cpu["predict"][pred_name]), 3),
            "note": "median process CPU time (user + system, all threads) per image; the ratios are "
                    "classic / project, i.e. how much less CPU work the project's path needs. Unlike "
                    "wall time this does not change when the shared machine withholds CPU",
        },
        "statistic": f"best of {reps} interleaved repetitions per path (the machine is shared; "
                     "the best repetition is the one least disturbed); medians also given",
        "matmul_gflops": round(peak, 1),
        "fraction_of_peak": {
            "train_classic": frac(train_c, TRAIN_FACTOR),
            "train_project": frac(train_ips, TRAIN_FACTOR),
            "predict_classic": frac(pred_c, 1.0),
            "predict_project": frac(pred_ips, 1.0),
            "note": f"images/s x {FORWARD_GFLOP_128} GFLOP per 128x128 forward pass of "
                    f"Unet-resnet34 (x{TRAIN_FACTOR} for training) / fp32 matmul GFLOP/s (best "
                    "sample, interleaved with the paths); bf16 paths can exceed 1 (the peak is fp32)"
                    + ("; quick runs use resnet18, so the fractions are not meaningful" if args.quick else ""),
        },
        "project_train_path": f"{train_name} (tf.data, prefetch, model.fit, batch {BATCH_TRAIN})",
        "project_predict_path": f"{pred_name} (tf.data, compiled tf.function, argmax in graph, uint8 out)",
        "classic_paths": "model.fit(numpy, batch 16) / model.predict(numpy, batch 32) + numpy argmax, float32",
        "samples_images_per_s": {
            "train": {k: [round(v, 3) for v in vs] for k, vs in train.items()},
            "predict": {k: [round(v, 3) for v in vs] for k, vs in pred.items()},
        },
        "samples_cpu_ms_per_image": {part: {k: [round(v, 2) for v in vs] for k, vs in d.items()}
                                     for part, d in cpu.items()},
        "model": f"Unet-{backbone}, input 128x128x1, 4 classes, encoder_weights=None",
        "images_per_repetition": {"train": TRAIN_CHUNK if not args.quick else 32,
                                  "predict": PRED_CHUNK if not args.quick else 32},
        "batch_train": BATCH_TRAIN,
        "batch_predict": {"classic": BATCH_PREDICT_CLASSIC, "project": BATCH_PREDICT_PROJECT},
        "data": source + " (training patches of the slices protocol)",
        "seeds": {"seed": args.seed},
        **C.stamp(),
    }
    if "bfloat16" in train_name or "bfloat16" in pred_name:
        out["precision_check"] = _precision(args.quick, precision, "xla" in pred_name, "fusedbn" in train_name)
    for key in ("train_images_per_s_classic", "train_images_per_s_project", "train_ratio",
                "median_train_ratio", "predict_images_per_s_classic", "predict_images_per_s_project",
                "predict_ratio", "median_predict_ratio", "cpu_ms_per_image", "matmul_gflops", "fraction_of_peak",
                "project_train_path", "project_predict_path", "precision_check"):
        if key in out:
            print(f"{key}: {out[key]}", flush=True)
    C.write_json(out_path, out)
    print(f"wrote {out_path}", flush=True)


def _precision(quick: bool, precision: str, jit: bool, fused: bool) -> Any:
    """Precision check on the project's trained slices model (else the classic one)."""
    for recipe in ("project", "classic"):
        path = C.MODEL_DIR / f"slices_{recipe}{'_quick' if quick else ''}.keras"
        if path.exists():
            return precision_check(path, quick, precision, jit, fused)
    return f"no trained model in {C.MODEL_DIR}: run accuracy.py first"


if __name__ == "__main__":
    main()
