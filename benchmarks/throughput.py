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

Like for like: all paths start from the same initial weights, see the same 128x128 patches
(the training patches of the slices protocol) in the same batch sizes (16 to train, 32 to
predict), and run the same number of times, in rounds whose order alternates (classic first in
odd rounds, last in even ones). The project's path is fixed before measuring (the engine's
default: bfloat16 where the CPU has it, fused batch norm); on a bfloat16 CPU the fp32 path
(fused batch norm alone) is measured and reported too. The headline is the CPU time per image
(median over rounds), which a shared machine does not distort; wall images/s come as medians
and per-round ratios. Every per-round sample (paths and matmul) is saved. Results go to
``benchmarks/results/throughput.json`` (``--out`` elsewhere, e.g. for smoke runs).
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
#: model.predict's default, as the classic notebook calls it; the project's path uses the same.
BATCH_PREDICT = 32
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
    model.predict(x[:BATCH_PREDICT], batch_size=BATCH_PREDICT, verbose=0)

    def run() -> int:
        probs = model.predict(x, batch_size=BATCH_PREDICT, verbose=0)
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
    fn(tf.constant(x[:BATCH_PREDICT]))  # trace/compile once
    ds = tf.data.Dataset.from_tensor_slices(x).batch(BATCH_PREDICT).prefetch(2)

    def run() -> int:
        np.concatenate([fn(b).numpy() for b in ds])
        return len(x)

    return run


def interleaved(paths: dict[str, Callable[[], int]], reps: int, peaks: list[float] | None = None,
                n: int = 2048, cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run every path ``reps`` times in rounds of alternating order, so load changes hit all paths alike.

    Each path returns how many images it processed; this times it (wall clock) and returns
    images/s per repetition. With ``cpu`` the process CPU milliseconds per image (user +
    system, all threads) are appended too: unlike wall time they do not grow when the shared
    machine withholds CPU, so they show the work each path needs. With ``peaks`` a matmul
    GFLOP/s sample is appended each round, measured under the same conditions as the paths.
    """
    out: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for rep in range(reps):
        # Alternate the order: whichever path runs first in a round (cold caches, a burst of
        # load from elsewhere) does so in half of the rounds only.
        for name in (names if rep % 2 == 0 else names[::-1]):
            run = paths[name]
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
    """The input normalisation the model was trained with: its sidecar's, else the accuracy run's."""
    sidecar = model_path.with_suffix(".json")
    if sidecar.exists():  # a model saved by napari_sandseg (sandseg train, engine_recipe.py --keep-model)
        from napari_sandseg.data import Normalization

        return Normalization.from_dict(C.read_json(sidecar)["normalization"]).apply
    data = C.read_json(C.RESULTS / "accuracy.json")
    protocol, recipe = model_path.stem.split("_")[:2]
    norm = C.accuracy_run(data, protocol, recipe).get("details", {}).get("normalization")
    if norm:
        low, high = float(norm["low"]), float(norm["high"])
        return lambda im: (im.astype(np.float32) - low) / (high - low)
    return lambda im: im.astype(np.float32) / 255.0


def _backbone_of(model_path: Path) -> str:
    """Backbone of a saved accuracy.py model (resnet18 for quick runs, else resnet34)."""
    return "resnet18" if model_path.stem.endswith("_quick") else "resnet34"


def main(argv: list[str] | None = None) -> None:
    """Measure and compare the paths; print and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet18, 32 patches per repetition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=None, help="rounds; every path runs once per round (default 8; quick 2)")
    ap.add_argument("--jit", choices=["on", "off"], default="off",
                    help="XLA for the project's path (XLA compiles for minutes on 2 cores and was slower there)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=None,
                    help="trained model for the precision check (default: accuracy.py's slices model, if kept)")
    args = ap.parse_args(argv)
    out_path = args.out or (C.RESULTS / ("quick" if args.quick else "") / "throughput.json")
    C.set_seed(args.seed)
    backbone = "resnet18" if args.quick else "resnet34"
    reps = args.reps or (2 if args.quick else 8)
    x, y, source = load_data(args.quick)
    n_train, n_pred = (32, 32) if args.quick else (TRAIN_CHUNK, PRED_CHUNK)
    jit = args.jit == "on" and not args.quick
    precision = "mixed_bfloat16" if bf16_supported() else "float32"
    init = _init_weights(backbone)
    n_mm = 1024 if args.quick else 2048
    peaks = [matmul_gflops(n_mm)]
    print(f"fp32 matmul: {peaks[0]:.1f} GFLOP/s", flush=True)
    xt, yt, xp = x[:n_train], y[:n_train], x[:n_pred]
    # Fixed before measuring, never picked by its figures: the engine's default path, and on a
    # bfloat16 CPU the fp32 path as well (what the fused batch norm alone gives).
    paths = {"classic": ("float32", False, False), PROJECT: (precision, True, jit)}
    if precision != "float32":
        paths[FP32] = ("float32", True, jit)
    train_paths, pred_paths = {}, {}
    for name, (prec, fused, path_jit) in paths.items():
        if name == "classic":
            train_paths[name] = train_classic_step(build(backbone, init, "float32"), xt, yt)
            pred_paths[name] = predict_classic_step(build(backbone, init, "float32"), xp)
        else:
            train_paths[name] = train_project_step(build(backbone, init, prec, fused), xt, yt, path_jit)
            pred_paths[name] = predict_project_step(build(backbone, init, prec, fused), xp, path_jit)
    print("training (images/s per repetition):", flush=True)
    cpu: dict[str, dict[str, list[float]]] = {"train": {}, "predict": {}}
    train = interleaved(train_paths, reps, peaks, n_mm, cpu["train"])
    print("prediction (images/s per repetition):", flush=True)
    pred = interleaved(pred_paths, reps, peaks, n_mm, cpu["predict"])
    print(f"fp32 matmul samples: {[round(p, 1) for p in peaks]} GFLOP/s", flush=True)
    described = {name: _describe(*spec) for name, spec in paths.items()}
    _write(out_path, args, train, pred, peaks, precision, source, backbone, x.shape, reps, cpu, described,
           (n_train, n_pred))


#: Names of the measured project paths in the results.
PROJECT, FP32 = "project", "project_fp32"


def _describe(precision: str, fused: bool, jit: bool) -> str:
    """A path's settings in words."""
    if not fused:
        return "model.fit(numpy) / model.predict(numpy) + numpy argmax, float32"
    return (f"{precision}, fused batch norm{', XLA' if jit else ''}; tf.data + model.fit / compiled "
            "tf.function, argmax in graph, uint8 out")


def _init_weights(backbone: str) -> list[np.ndarray]:
    """Seeded initial weights shared by every path."""
    from accuracy import build_unet

    return build_unet(backbone).get_weights()


def _med(values: list[float]) -> float:
    return float(np.median(values))


def _compare(samples: dict[str, list[float]], cpu: dict[str, list[float]], name: str) -> dict[str, Any]:
    """``name`` against classic: CPU ms per image (the headline) and wall images/s, per round and medians."""
    rounds = [p / c for p, c in zip(samples[name], samples["classic"])]
    cpu_rounds = [c / p for p, c in zip(cpu[name], cpu["classic"])]
    return {
        "cpu_ms_per_image": {"classic": round(_med(cpu["classic"]), 2), name: round(_med(cpu[name]), 2)},
        "cpu_ratio": round(_med(cpu["classic"]) / _med(cpu[name]), 3),
        "cpu_ratio_per_round": [round(r, 3) for r in cpu_rounds],
        "images_per_s_median": {"classic": round(_med(samples["classic"]), 3), name: round(_med(samples[name]), 3)},
        "wall_ratio_median_of_rounds": round(_med(rounds), 3),
        "wall_ratio_per_round": [round(r, 3) for r in rounds],
    }


def _write(out_path: Path, args: Any, train: dict, pred: dict, peaks: list[float], precision: str,
           source: str, backbone: str, shape: tuple, reps: int, cpu: dict, described: dict[str, str],
           chunks: tuple[int, int]) -> None:
    """Assemble ratios, fractions of peak and the precision check; print and write JSON."""
    peak = _med(peaks)
    fwd = FORWARD_GFLOP_128 * (shape[1] * shape[2]) / (128 * 128)

    def frac(ips: list[float], factor: float) -> float:
        return round(_med(ips) * fwd * factor / peak, 4)

    measured = [n for n in (PROJECT, FP32) if n in train]
    out = {
        "headline": {
            part: {name: {"cpu_ratio": _compare(s, cpu[part], name)["cpu_ratio"],
                          "wall_ratio_median_of_rounds": _compare(s, cpu[part], name)["wall_ratio_median_of_rounds"]}
                   for name in measured}
            for part, s in (("train", train), ("predict", pred))
        },
        "headline_note": "classic / project CPU milliseconds per image (user + system, all threads; median over "
                         "rounds): how much less work the project's path needs, unaffected by CPU the shared "
                         "machine withholds. Wall ratio: median of the per-round project / classic images/s",
        "train": {name: _compare(train, cpu["train"], name) for name in measured},
        "predict": {name: _compare(pred, cpu["predict"], name) for name in measured},
        "paths": described,
        "protocol": f"{reps} rounds; every path once per round, order alternating (classic first in odd rounds, "
                    f"last in even ones); same initial weights, same patches, batch {BATCH_TRAIN} to train and "
                    f"{BATCH_PREDICT} to predict for every path; the project's paths fixed before measuring",
        "matmul_gflops_samples": [round(p, 1) for p in peaks],
        "matmul_note": "fp32 matmul GFLOP/s (TensorFlow, square matrices): one sample before the paths, one "
                       "after every round",
        "fraction_of_peak": {
            **{f"train_{n}": frac(train[n], TRAIN_FACTOR) for n in train},
            **{f"predict_{n}": frac(pred[n], 1.0) for n in pred},
            "note": f"median images/s x {FORWARD_GFLOP_128} GFLOP per 128x128 forward pass of "
                    f"Unet-resnet34 (x{TRAIN_FACTOR} for training) / median fp32 matmul GFLOP/s; bf16 paths "
                    "can exceed 1 (the peak is fp32)"
                    + ("; quick runs use resnet18, so the fractions are not meaningful" if args.quick else ""),
        },
        "samples_images_per_s": {
            "train": {k: [round(v, 3) for v in vs] for k, vs in train.items()},
            "predict": {k: [round(v, 3) for v in vs] for k, vs in pred.items()},
        },
        "samples_cpu_ms_per_image": {part: {k: [round(v, 2) for v in vs] for k, vs in d.items()}
                                     for part, d in cpu.items()},
        "model": f"Unet-{backbone}, input 128x128x1, 4 classes, encoder_weights=None",
        "images_per_repetition": {"train": chunks[0], "predict": chunks[1]},
        "batch_train": BATCH_TRAIN,
        "batch_predict": BATCH_PREDICT,
        "data": source + " (training patches of the slices protocol)",
        "seeds": {"seed": args.seed},
        **C.stamp(),
    }
    if precision != "float32":
        out["precision_check"] = _precision(args.quick, precision, args.jit == "on", True, args.model)
    for part in ("train", "predict"):
        for name in measured:
            r = out[part][name]
            print(f"{part} {name}: CPU ms/img {r['cpu_ms_per_image']} -> ratio {r['cpu_ratio']}; wall img/s "
                  f"{r['images_per_s_median']} -> median of rounds {r['wall_ratio_median_of_rounds']} "
                  f"(per round {r['wall_ratio_per_round']})", flush=True)
    if "precision_check" in out:
        print(f"precision_check: {out['precision_check']}", flush=True)
    C.write_json(out_path, out)
    print(f"wrote {out_path}", flush=True)


def _precision(quick: bool, precision: str, jit: bool, fused: bool, model: Path | None = None) -> Any:
    """Precision check on ``model``, else the project's trained slices model (else the classic one)."""
    if model is not None:
        return precision_check(model, quick, precision, jit, fused)
    for recipe in ("project", "classic"):
        path = C.MODEL_DIR / f"slices_{recipe}{'_quick' if quick else ''}.keras"
        if path.exists():
            return precision_check(path, quick, precision, jit, fused)
    return f"no trained model in {C.MODEL_DIR}: run accuracy.py first"


if __name__ == "__main__":
    main()
