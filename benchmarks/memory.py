"""Memory: peak resident memory of segmenting a big volume from TIFF to TIFF through the CLI.

Usage
-----
    python benchmarks/memory.py            # 512 x 1024 x 1024 uint8 volume (512 MiB)
    python benchmarks/memory.py --quick    # 16 x 256 x 256 smoke run

Writes a synthetic uint8 volume as a multi-page TIFF, saves an *untrained* Unet with the
engine's default backbone (``TrainConfig().backbone``, resnet34; memory does not depend on the
weights' values), then runs

    python -m napari_sandseg.cli predict --model M.keras --images I.tif --out P.tif

as a child process, polling its resident set size (psutil, every 20 ms, child and any
grandchildren summed) and reading ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` when it exits.
Target: peak RSS <= volume size + 1.5 GB. Results to ``benchmarks/results/memory.json``.

Tiles mode (issue 6, slices larger than memory)
-----------------------------------------------
    python benchmarks/memory.py --tiles            # one 4096 x 4096 slice, untrained Unet-resnet34
    python benchmarks/memory.py --tiles --quick    # 1536 x 1536 smoke run

1. Halo profile (one child process): a tiny two-level Unet and an untrained Unet-resnet34 on a
   synthetic 1024 x 1024 slice, and the trained resnet34 of ``accuracy.py``
   (``$SANDSEG_BENCH_MODELS/slices_project.keras``, when present) on real slice 0; each slice is
   predicted whole and in 512-pixel tiles, with abutting tiles (halo 0: the differences to the
   whole-slice prediction by distance from the tile edge) and with each candidate halo.
2. Memory: the 4096 x 4096 slice predicted whole (``tile_size=None``) and tiled (the defaults),
   each in its own child process that reports its own ``getrusage(RUSAGE_SELF).ru_maxrss`` and its
   resident memory just before predicting (model loaded). The two label images are compared.

Results to ``benchmarks/results/tiles.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

GB = 10**9
ALLOWANCE = 1.5 * GB


def write_volume(path: Path, shape: tuple[int, int, int], seed: int) -> int:
    """Write a synthetic uint8 (Z, Y, X) stack page by page (never whole in memory).

    Each slice is a blocky 4-level pattern plus noise (grey values of the four phases), so
    the model sees image-like input; the content does not change the memory profile.
    """
    import tifffile

    z, y, x = shape
    rng = np.random.default_rng(seed)
    with tifffile.TiffWriter(path, bigtiff=z * y * x > 2**32 - 2**25) as tif:
        for _ in range(z):
            tif.write(synthetic_slice(rng, y, x), contiguous=True, photometric="minisblack")
    return z * y * x


def synthetic_slice(rng: np.random.Generator, y: int, x: int) -> np.ndarray:
    """One uint8 (y, x) slice: 32-pixel blocks of the four phases' grey values plus noise."""
    levels = np.array([14, 85, 125, 243], dtype=np.int16)
    coarse = rng.integers(0, 4, size=(y // 32 + 1, x // 32 + 1))
    phase = np.kron(coarse, np.ones((32, 32), dtype=np.int64))[:y, :x]
    page = levels[phase] + rng.integers(-12, 13, size=(y, x), dtype=np.int16)
    return np.clip(page, 0, 255).astype(np.uint8)


def save_untrained_model(path: Path, backbone: str) -> None:
    """Save an untrained engine model artefact (``.keras`` + sidecar) for 4 classes 0..3."""
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, build_model, save_model

    model = build_model(backbone, 4)
    info = ModelInfo(
        config={"backbone": backbone, "note": "untrained, memory benchmark only"},
        class_map=ClassMap((0, 1, 2, 3)),
        normalization=Normalization(0.0, 255.0),
        backbone=backbone,
        n_classes=4,
        notes=["untrained model made by benchmarks/memory.py"],
    )
    save_model(model, path, info)


def run_and_watch(cmd: list[str], log: Path, out_dir: Path, time_limit: float | None,
                  poll_s: float = 0.02) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``); return exit code, wall time, peak RSS and a timeline.

    The timeline samples, about once a second, the RSS and the bytes of TIFF output written
    so far in ``out_dir`` (the CLI writes into a temp file there), which shows how far the
    run got and when the peak was reached. With ``time_limit`` the child is terminated after
    that many seconds and the result says it did not complete.
    """
    import psutil

    start = time.perf_counter()
    timeline: list[list[float]] = []
    timed_out = False
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        peak, last = 0, -1.0
        while proc.poll() is None:
            rss = _tree_rss(ps)
            peak = max(peak, rss)
            now = time.perf_counter() - start
            if now - last >= 1.0:
                timeline.append([round(now, 1), rss, _output_bytes(out_dir)])
                last = now
            if time_limit is not None and now > time_limit:
                timed_out = True
                proc.terminate()
                proc.wait()
                break
            time.sleep(poll_s)
    output = log.read_text(errors="replace")
    wall = time.perf_counter() - start
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"returncode": proc.returncode, "wall_seconds": round(wall, 1), "timed_out": timed_out,
            "peak_rss_polled_bytes": int(peak), "ru_maxrss_children_bytes": int(maxrss),
            "timeline_seconds_rss_outputbytes": timeline, "output_tail": output[-2000:]}


def _output_bytes(out_dir: Path) -> int:
    """Bytes in files of ``out_dir`` other than the inputs (the label stack being written)."""
    total = 0
    for p in out_dir.iterdir():
        if p.name not in ("images.tif", "model.keras", "model.json", "cli.log") and p.is_file():
            try:
                total += p.stat().st_size
            except OSError:
                pass
    return total


def _tree_rss(ps: Any) -> int:
    """RSS of a process plus its children (0 once it has gone)."""
    import psutil

    try:
        procs = [ps, *ps.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def check_output(path: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Shape and dtype of the written label stack (memory-mapped, not loaded)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return {"shape": list(series.shape), "dtype": str(series.dtype),
                "shape_ok": tuple(series.shape) == tuple(shape)}


def main(argv: list[str] | None = None) -> None:
    """Make the inputs, run the CLI, record the peak memory, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 x 256 x 256")
    ap.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    ap.add_argument("--backbone", default=None, help="default: the engine's (TrainConfig().backbone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="passed to the CLI as --batch-size (default: the CLI's default, 8)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop the CLI after this many seconds and record the peak so far")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp folder, removed after")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tiles", action="store_true",
                    help="whole-slice vs tiled prediction of one big slice (halo profile + peak RSS) -> tiles.json")
    ap.add_argument("--tile-halo", type=int, default=None, help="--tiles: halo of the tiled run (default: predict's)")
    ap.add_argument("--tiles-child", choices=("halo", "whole", "tiled"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiles_child is not None:
        return tiles_child(args)
    if args.tiles:
        return tiles_main(args)
    shape = tuple(args.shape or ((16, 256, 256) if args.quick else (512, 1024, 1024)))
    out_path = args.out or (C.RESULTS / ("quick" if args.quick else "") / "memory.json")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sandseg-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(work, shape, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result.update(seeds={"seed": args.seed}, **C.stamp())
    for key in ("volume_bytes", "peak_rss_bytes", "limit_bytes", "within_target", "wall_seconds",
                "slices_per_second", "output_check"):
        print(f"{key}: {result[key]}", flush=True)
    C.write_json(out_path, result)
    print(f"wrote {out_path}", flush=True)


def measure(work: Path, shape: tuple[int, int, int], args: Any) -> dict[str, Any]:
    """Write inputs into ``work``, run the CLI predict, and assemble the figures."""
    images, model, labels = work / "images.tif", work / "model.keras", work / "pred.tif"
    t0 = time.perf_counter()
    volume_bytes = write_volume(images, shape, args.seed)
    if args.backbone is None:  # the engine's default, from its one home
        from napari_sandseg.config import TrainConfig

        args.backbone = TrainConfig().backbone
    save_untrained_model(model, args.backbone)
    prep = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "napari_sandseg.cli", "predict", "--model", str(model),
           "--images", str(images), "--out", str(labels)]
    if args.batch_size is not None:
        cmd += ["--batch-size", str(args.batch_size)]
    print("running: " + " ".join(cmd), flush=True)
    run = run_and_watch(cmd, work / "cli.log", work, args.time_limit)
    done_slices = shape[0]
    if run["timed_out"]:
        done_slices = min(shape[0], run["timeline_seconds_rss_outputbytes"][-1][2] // (shape[1] * shape[2]))
    elif run["returncode"] != 0:
        print(run["output_tail"], file=sys.stderr)
        raise SystemExit(f"CLI predict failed with exit code {run['returncode']}")
    peak = max(run["peak_rss_polled_bytes"], run["ru_maxrss_children_bytes"])
    limit = volume_bytes + ALLOWANCE
    return {
        "peak_rss_bytes": peak,
        "volume_bytes": volume_bytes,
        "limit_bytes": int(limit),
        "within_target": peak <= limit,
        "headroom_bytes": int(limit - peak),
        "target": "peak RSS <= volume size + 1.5 GB (1.5e9 bytes)",
        "volume_shape": list(shape),
        "volume_content": "synthetic uint8 (blocky 4-level pattern + noise), written page by page",
        "model": f"untrained Unet-{args.backbone} (encoder_weights=None), 4 classes: memory only, "
                 "accuracy irrelevant",
        "cli_command": " ".join(cmd[1:]),
        "cli_batch_size": args.batch_size or "CLI default (8)",
        "rss_measurement": "max of psutil polling of the child (20 ms) and "
                           "getrusage(RUSAGE_CHILDREN).ru_maxrss",
        "completed": not run["timed_out"],
        "slices_done": int(done_slices),
        "wall_seconds": run["wall_seconds"],
        "slices_per_second": round(done_slices / run["wall_seconds"], 3),
        "prepare_seconds": round(prep, 1),
        "details": run,
        "output_check": check_output(labels, shape) if not run["timed_out"] else
        f"not written: stopped by --time-limit after {done_slices} of {shape[0]} slices",
    }


# --------------------------------------------------------------------------------------------
# --tiles: whole-slice vs tiled prediction of one big slice
# --------------------------------------------------------------------------------------------
#: Side of the slice the memory runs predict (``--quick``: the smaller one).
TILES_SLICE, TILES_SLICE_QUICK = 4096, 1536
#: Halo profile: slice side, tile size, candidate halos and distance bins (pixels from the tile edge).
PROFILE_SLICE, PROFILE_TILE = 1024, 512
HALO_CANDIDATES = (0, 32, 64, 96, 128, 192)
DISTANCE_BINS = (0, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512)
#: Children print their result as one JSON line after this prefix.
RESULT_PREFIX = "TILES-RESULT "


def tiles_main(args: Any) -> None:
    """Run the halo-profile child, then the whole and tiled memory children; write tiles.json."""
    size = TILES_SLICE_QUICK if args.quick else TILES_SLICE
    out_path = args.out or (C.RESULTS / ("quick" if args.quick else "") / "tiles.json")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sandseg-tiles-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        halo = _run_child(["--tiles-child", "halo"] + (["--quick"] if args.quick else []), work)
        runs = {}
        for mode in ("whole", "tiled"):
            extra = ["--tile-halo", str(args.tile_halo)] if args.tile_halo is not None and mode == "tiled" else []
            runs[mode] = _run_child(["--tiles-child", mode, "--size", str(size), *extra], work)
        agree = float(np.mean(np.load(work / "labels_whole.npy") == np.load(work / "labels_tiled.npy")))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    w, t = runs["whole"], runs["tiled"]
    result = {
        "what": "peak RSS of predicting one uint8 slice with an untrained Unet-resnet34 (4 classes, fp32), "
                "whole (tile_size=None) vs tiled (predict defaults), each in its own process",
        "slice": [size, size],
        "whole": w,
        "tiled": t,
        "peak_rss_ratio_whole_over_tiled": round(w["peak_rss_bytes"] / t["peak_rss_bytes"], 2),
        "prediction_rss_ratio_whole_over_tiled": round(w["prediction_rss_bytes"] / t["prediction_rss_bytes"], 2),
        "labels_equal_fraction": agree,
        "rss_measurement": "getrusage(RUSAGE_SELF).ru_maxrss in the child at exit (peak_rss_bytes); "
                           "prediction_rss_bytes = that peak minus the RSS just before predicting "
                           "(TensorFlow imported, model loaded, input slice made)",
        "halo_profile": halo,
    }
    result.update(seeds={"seed": args.seed}, **C.stamp())
    for mode in ("whole", "tiled"):
        r = runs[mode]
        print(f"{mode}: peak RSS {r['peak_rss_bytes'] / GB:.2f} GB (prediction {r['prediction_rss_bytes'] / GB:.2f} GB), "
              f"{r['predict_seconds']} s", flush=True)
    print(f"labels equal: {agree:.6f}", flush=True)
    C.write_json(out_path, result)
    print(f"wrote {out_path}", flush=True)


def _run_child(extra: list[str], work: Path) -> dict[str, Any]:
    """Run this script in a child process with ``extra`` arguments; return its result line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workdir", str(work), *extra]
    print("running: " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"child {' '.join(extra)} failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def tiles_child(args: Any) -> None:
    """Child-process side of ``--tiles``: print one result line."""
    if args.tiles_child == "halo":
        result = halo_profile(args.workdir, args.quick)
    else:
        halo = args.tile_halo
        result = predict_one_slice(args.workdir, args.size, tiled=args.tiles_child == "tiled", tile_halo=halo)
    print(RESULT_PREFIX + json.dumps(result, default=C._json_default), flush=True)


def _rss_now() -> int:
    """Current resident set size of this process (bytes)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def predict_one_slice(work: Path, size: int, tiled: bool, tile_halo: int | None) -> dict[str, Any]:
    """Predict one synthetic ``size`` x ``size`` slice whole or tiled; report this process's peak RSS."""
    from napari_sandseg import predict as P
    from napari_sandseg.model import load_model

    model, info = load_model(work / "resnet34.keras")
    image = synthetic_slice(np.random.default_rng(0), size, size)[None]
    tiling = {"tile_size": P.DEFAULT_TILE_SIZE if tiled else None,
              "tile_halo": P.DEFAULT_TILE_HALO if tile_halo is None else tile_halo}
    before = _rss_now()
    t0 = time.perf_counter()
    labels = P.predict_volume(model, image, info, **tiling).labels
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    np.save(work / f"labels_{'tiled' if tiled else 'whole'}.npy", labels)
    tiles = None
    if tiled:
        ty = P.tile_axis(P.padded_size(size), tiling["tile_size"], tiling["tile_halo"])
        tiles = {"per_axis": len(ty.starts), "tile_side": ty.size, "starts": ty.starts, "seams": ty.cuts[1:-1]}
    return {"tiling": tiling, "tiles": tiles, "peak_rss_bytes": peak, "rss_before_predict_bytes": before,
            "prediction_rss_bytes": peak - before, "predict_seconds": round(seconds, 1)}


def halo_profile(work: Path, quick: bool) -> dict[str, Any]:
    """How far from a tile edge tiled predictions differ from whole-slice ones, per model.

    Also saves the untrained resnet34 used here for the memory runs (``work/resnet34.keras``).
    """
    import keras

    keras.utils.set_random_seed(0)
    side, tile = (512, 256) if quick else (PROFILE_SLICE, PROFILE_TILE)
    synthetic = synthetic_slice(np.random.default_rng(1), side, side)[None]
    save_untrained_model(work / "resnet34.keras", "resnet34")
    from napari_sandseg.model import load_model

    untrained, info = load_model(work / "resnet34.keras")
    cases = {"tiny two-level Unet (receptive radius 4 px), untrained": (_tiny_unet(), info, synthetic),
             "Unet-resnet34, untrained": (untrained, info, synthetic)}
    trained = C.MODEL_DIR / "slices_project.keras"
    if trained.exists() and not quick:
        model, info_t, image = _trained_case(trained, info)
        cases[f"Unet-resnet34 trained ({trained.name}, accuracy.py), real slice 0"] = (model, info_t, image)
    out = {"slice_side": side, "tile_size": tile, "models": {}}
    for name, (model, model_info, image) in cases.items():
        print(f"halo profile: {name}", flush=True)
        out["models"][name] = _profile_one(model, model_info, image, tile)
    return out


def _tiny_unet() -> Any:
    """The tests' tiny model: conv, pool, conv, upsample, skip, 1x1 softmax (4 classes)."""
    import keras

    inp = keras.Input((None, None, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(keras.layers.MaxPooling2D(2)(a))
    up = keras.layers.UpSampling2D(2)(b)
    return keras.Model(inp, keras.layers.Conv2D(4, 1, activation="softmax")(keras.layers.Concatenate()([a, up])))


def _trained_case(path: Path, info: Any) -> tuple[Any, Any, np.ndarray]:
    """accuracy.py's trained resnet34 as an fp32 engine model, its normalisation, real slice 0."""
    import dataclasses

    import keras

    from napari_sandseg.data import Normalization
    from napari_sandseg.model import build_model

    model = build_model("resnet34", 4)
    model.set_weights(keras.models.load_model(path, compile=False).get_weights())
    norm = C.read_json(C.RESULTS / "accuracy.json")["slices"]["project"]["details"]["normalization"]
    images, _, _ = C.load_data()
    return model, dataclasses.replace(info, normalization=Normalization(norm["low"], norm["high"])), images[:1]


def _profile_one(model: Any, info: Any, image: np.ndarray, tile: int) -> dict[str, Any]:
    """Whole vs abutting tiles (by distance from the tile edge) and vs each candidate halo."""
    from napari_sandseg.predict import padded_size, predict_volume, tile_axis

    whole = predict_volume(model, image, info, probabilities=True, tile_size=None)
    h, w = image.shape[1:]
    abut = predict_volume(model, image, info, probabilities=True, tile_size=tile, tile_halo=0)
    dist = np.minimum(*np.meshgrid(_edge_distance(tile_axis(padded_size(h), tile, 0), h),
                                   _edge_distance(tile_axis(padded_size(w), tile, 0), w), indexing="ij"))
    dp = np.abs(abut.probabilities - whole.probabilities).max(axis=-1)[0]
    flips = abut.labels[0] != whole.labels[0]
    bins = []
    for lo, hi in zip(DISTANCE_BINS, DISTANCE_BINS[1:]):
        sel = (dist >= lo) & (dist < hi)
        if sel.any():
            bins.append({"distance_px": [lo, hi], "pixels": int(sel.sum()), "max_abs_dprob": float(dp[sel].max()),
                         "mean_abs_dprob": float(dp[sel].mean()), "label_diff_fraction": float(flips[sel].mean())})
    halos = []
    for halo in HALO_CANDIDATES:
        if tile < 2 * halo + 32:
            continue
        tiled = predict_volume(model, image, info, probabilities=True, tile_size=tile, tile_halo=halo)
        d = np.abs(tiled.probabilities - whole.probabilities).max(axis=-1)
        halos.append({"halo": halo, "label_diff_fraction": float(np.mean(tiled.labels != whole.labels)),
                      "max_abs_dprob": float(d.max()), "mean_abs_dprob": float(d.mean())})
        print(f"  halo {halo}: {halos[-1]}", flush=True)
    return {"abutting_tiles_by_distance_from_edge": bins, "tiled_vs_whole_by_halo": halos,
            "whole_label_fractions": np.bincount(whole.labels.ravel(), minlength=4) / whole.labels.size}


def _edge_distance(tiles: Any, length: int) -> np.ndarray:
    """Per pixel (first ``length``): pixels to the nearest inner edge of the tile that supplies it."""
    dist = np.full(length, 10**6)
    n = len(tiles.starts)
    for i, s in enumerate(tiles.starts):
        idx = np.arange(tiles.cuts[i], min(tiles.cuts[i + 1], length))
        if i > 0:
            dist[idx] = np.minimum(dist[idx], idx - s)
        if i < n - 1:
            dist[idx] = np.minimum(dist[idx], s + tiles.size - 1 - idx)
    return dist


if __name__ == "__main__":
    main()
