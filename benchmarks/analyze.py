"""Rock properties: physical accuracy next to voxel accuracy, and the cost on a big volume.

Usage
-----
    python benchmarks/analyze.py            # real slices, synthetic 3D, 512 x 1024 x 1024 volume
    python benchmarks/analyze.py --quick    # small smoke run, written to results/quick/
    python benchmarks/analyze.py --model M.keras --only real   # the network's test slices, kept
                                            # beside the other stored parts

1. Real slices (the slices protocol's data; 2D per-slice measures, as the slices are 50 apart):
   every one of the 10 slices, its ground truth against a *multi-Otsu threshold baseline* on the
   image (4 classes by grey level; not a network: no trained prediction of the real slices is
   kept in this repository, and this benchmark trains none). Measured on the whole slice (the
   pore class includes the air around the core) and on a central 512 x 512 crop inside the rock.
   Voxel accuracy (pixel accuracy, pore IoU) is reported beside the physical figures.
   With ``--model`` (a model trained with the slices protocol: train 1,2,3,5,6,7,8), the table
   holds the held-out test slices 0 and 9 instead: truth against that network's prediction
   (``predict_volume``, float32, no TTA) and, as a labelled baseline, against multi-Otsu.
2. Synthetic 3D: ``make_sandstone((64, 128, 128), seed=0)``, truth against multi-Otsu of its image.
3. Big volume: a 512 x 1024 x 1024 uint8 label TIFF (a 64 x 256 x 256 synthetic volume tiled
   8 x 4 x 4), memory-mapped, in a child process: the streamed measures (fractions and per-slice
   profile, specific surface area of every phase, Euler number), connectivity and REV, timed, and
   the child's peak RSS; local thickness is checked with ``rock_measures.check_memory`` (it
   refuses here). A full ``analyze`` runs on a 128 x 256 x 256 crop for the whole set.

Results to ``benchmarks/results/analyze.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, TEST_SLICES, load_data, read_json, stamp, write_json  # noqa: E402

#: Central crop of a real slice that lies inside the core (no outside air).
ROCK_CROP = (slice(256, 768), slice(242, 754))
BIG_SHAPE = (512, 1024, 1024)
FULL_SHAPE = (128, 256, 256)


def multi_otsu(image: np.ndarray, classes: int = 4) -> np.ndarray:
    """Class ids by grey level, thresholds from multi-Otsu (classes ordered dark -> bright, as the masks)."""
    from skimage.filters import threshold_multiotsu

    return np.digitize(image, threshold_multiotsu(image, classes=classes)).astype(np.uint8)


def voxel_accuracy(truth: np.ndarray, pred: np.ndarray) -> dict:
    from napari_sandseg.metrics import evaluate

    report = evaluate(truth, pred, 4, (0, 1, 2, 3), ("pore", "clay", "quartz", "bright mineral"))
    return {"pixel_accuracy": float(report["pixel_accuracy"]), "pore_iou": float(report["per_class_iou"][0]),
            "mean_iou": float(report["mean_iou"])}


def physical_row(report: dict) -> dict:
    """The figures of one analyze_pair report that the table shows."""
    t, p, d = report["truth"], report["prediction"], report["difference"]
    return {
        "porosity": [t["porosity"], p["porosity"]], "porosity_error_pp": d["porosity_pp"],
        "connected_porosity": [t["connected_porosity"], p["connected_porosity"]],
        "connected_porosity_error_pp": d["connected_porosity_pp"],
        "percolates": [t["percolates"], p["percolates"]],
        "euler_number": [t["euler_number"], p["euler_number"]],
        "pore_ssa": [t["specific_surface_area"]["0"], p["specific_surface_area"]["0"]],
        "mean_pore_size": [t["pore_size"]["mean"], p["pore_size"]["mean"]],
        "pore_size_distance": d["pore_size_distance"],
        "rev_size": [t["rev_size"], p["rev_size"]],
    }


def network_slices(images: np.ndarray, model_path: Path) -> tuple[np.ndarray, dict]:
    """Class ids of ``images`` predicted by the model at ``model_path`` (float32, no TTA), and what it is."""
    from napari_sandseg.model import load_model
    from napari_sandseg.predict import predict_volume

    model, info = load_model(model_path)
    t0 = time.perf_counter()
    labels = info.class_map.decode(predict_volume(model, images, info, precision="float32").labels)
    held_out = (info.metrics or {}).get("mean_iou")
    return labels.astype(np.uint8), {
        "path": str(model_path), "backbone": info.backbone, "created": info.created,
        # The sidecar does not record which slices trained the model: said by whoever passes --model.
        "trained_on": "slices protocol: train 1,2,3,5,6,7,8; test 0,9 (held out), as stated by the caller",
        "sidecar_test_mean_iou": held_out, "sidecar_notes": list(info.notes),
        "epochs_trained": len(info.history.get("loss", [])), "prediction": "predict_volume, float32, no TTA",
        "predict_seconds": round(time.perf_counter() - t0, 1),
    }


def real_test_slices(quick: bool, model_path: Path) -> dict:
    """Held-out slices 0 and 9: truth against the network, and against multi-Otsu as a baseline."""
    from napari_sandseg.analyze import analyze_pair

    images, masks, source = load_data(quick)
    images, masks = images[list(TEST_SLICES)], masks[list(TEST_SLICES)]
    network, model = network_slices(images, model_path)
    regions = {"whole slice": (slice(None), slice(None))}
    if not quick:
        regions["rock crop 512 x 512"] = ROCK_CROP
    out = {"data": source, "model": model,
           "predictions": {"network": "the model above, on the whole slice, then cut to the region",
                           "multi_otsu_baseline": "multi-Otsu threshold (4 classes by grey level) of the region's "
                           "own image, not a network (as the 10-slice baseline table before)"},
           "measures": "2D per slice: perimeter per area, disc local thickness, in-slice connectivity, 8-connected Euler",
           "voxel_size": "unknown (the TIFFs carry none): lengths in px", "regions": {}}
    for region, (ys, xs) in regions.items():
        rows = {"network": [], "multi_otsu_baseline": []}
        for i, z in enumerate(TEST_SLICES):
            guesses = {"network": network[i, ys, xs], "multi_otsu_baseline": multi_otsu(images[i, ys, xs])}
            for name, guess in guesses.items():
                truth = masks[i, ys, xs]
                t0 = time.perf_counter()
                report = analyze_pair(truth, guess)
                rows[name].append({"slice": z, **voxel_accuracy(truth, guess), **physical_row(report),
                                   "seconds": round(time.perf_counter() - t0, 2)})
                print(region, z, name, {k: rows[name][-1][k] for k in
                                        ("pixel_accuracy", "porosity_error_pp", "pore_size_distance")}, flush=True)
        out["regions"][region] = {name: {"per_slice": r, "mean_abs": _mean_abs(r)} for name, r in rows.items()}
    return out


def real_slices(quick: bool) -> dict:
    from napari_sandseg.analyze import analyze_pair

    images, masks, source = load_data(quick)
    regions = {"whole slice": (slice(None), slice(None))}
    if not quick:
        regions["rock crop 512 x 512"] = ROCK_CROP
    out = {"data": source, "prediction": "multi-Otsu threshold baseline (4 classes by grey level), not a network",
           "measures": "2D per slice: perimeter per area, disc local thickness, in-slice connectivity, 8-connected Euler",
           "voxel_size": "unknown (the TIFFs carry none): lengths in px", "regions": {}}
    for region, (ys, xs) in regions.items():
        rows = []
        for z in range(len(masks)):
            truth, pred = masks[z, ys, xs], multi_otsu(images[z, ys, xs])
            t0 = time.perf_counter()
            report = analyze_pair(truth, pred)
            rows.append({"slice": z, **voxel_accuracy(truth, pred), **physical_row(report),
                         "seconds": round(time.perf_counter() - t0, 2)})
            print(region, z, {k: rows[-1][k] for k in ("pixel_accuracy", "porosity_error_pp", "pore_size_distance")},
                  flush=True)
        out["regions"][region] = {"per_slice": rows, "mean_abs": _mean_abs(rows)}
    return out


def _mean_abs(rows: list[dict]) -> dict:
    keys = ("pixel_accuracy", "pore_iou", "porosity_error_pp", "connected_porosity_error_pp", "pore_size_distance")
    return {k: float(np.mean([abs(r[k]) for r in rows if r[k] is not None])) for k in keys}


def synthetic_3d(quick: bool) -> dict:
    from napari_sandseg.analyze import analyze_pair
    from napari_sandseg.sample import make_sandstone

    shape = (16, 64, 64) if quick else (64, 128, 128)
    image, truth = make_sandstone(shape, seed=0)
    pred = multi_otsu(image)
    t0 = time.perf_counter()
    report = analyze_pair(truth.astype(np.uint8), pred)
    return {"data": f"napari_sandseg.sample.make_sandstone({shape}, seed=0)", "prediction": "multi-Otsu of its image",
            **voxel_accuracy(truth, pred), **physical_row(report), "seconds": round(time.perf_counter() - t0, 2)}


#: Child process of the big-volume run: one JSON line of timings and peak RSS on stdout.
_BIG_CHILD = r"""
import json, resource, sys, time
import numpy as np
from napari_sandseg import rock_measures as rm
from napari_sandseg.analyze import analyze
from napari_sandseg.errors import InputError
from napari_sandseg.lazy import open_volume
path, full = sys.argv[1], tuple(int(n) for n in sys.argv[2].split(","))
labels = open_volume(path)
out, t = {"shape": list(labels.shape)}, time.perf_counter
def timed(name, f):
    t0 = t(); value = f(); out[name + "_s"] = round(t() - t0, 1); print(name, out[name + "_s"], file=sys.stderr, flush=True); return value
timed("phase_fractions", lambda: rm.phase_fractions(labels, [0, 1, 2, 3]))
timed("specific_surface_area_4_phases", lambda: [rm.specific_surface_area(labels, v, (1, 1, 1)) for v in range(4)])
pore = timed("pore_mask", lambda: np.concatenate([labels[z:z + 32] == 0 for z in range(0, labels.shape[0], 32)]))
timed("euler_number", lambda: rm.euler_number(pore))
timed("connectivity", lambda: rm.connectivity(pore))
timed("rev_curve", lambda: rm.rev_curve(pore, (1, 1, 1)))
try:
    rm.check_memory(labels.shape, "local thickness")
    out["local_thickness"] = "would fit; not run (time)"
except InputError as exc:
    out["local_thickness"] = f"refused: {exc}"
out["peak_rss_streamed_and_connectivity_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
del pore
crop = np.asarray(labels[: full[0], : full[1], : full[2]])
timed("full_analyze_" + "x".join(map(str, full)), lambda: analyze(crop, (1, 1, 1)))
out["peak_rss_total_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""


def big_volume(quick: bool) -> dict:
    import tifffile

    from napari_sandseg.sample import make_sandstone

    shape = (64, 256, 256) if quick else BIG_SHAPE
    full = (32, 128, 128) if quick else FULL_SHAPE
    _, tile = make_sandstone((64, 256, 256), seed=0)
    reps = tuple(s // t for s, t in zip(shape, tile.shape))
    with tempfile.TemporaryDirectory(prefix="sandseg-analyze-") as folder:
        path = Path(folder) / "labels.tif"
        with tifffile.TiffWriter(path, bigtiff=True) as tif:  # slice by slice: never the whole volume in memory
            for z in range(shape[0]):
                plane = np.tile(tile[z % tile.shape[0]], reps[1:]).astype(np.uint8)
                tif.write(plane, contiguous=True, photometric="minisblack")
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _BIG_CHILD, str(path), ",".join(map(str, full))],
                               capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"big-volume child failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update({"data": f"make_sandstone((64, 256, 256), seed=0) tiled {reps}, uint8 TIFF, memory-mapped",
                   "wall_s": round(wall, 1)})
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (results/quick/analyze.json)")
    parser.add_argument("--skip-big", action="store_true", help="leave out the big-volume run")
    parser.add_argument("--model", type=Path, default=None,
                        help="a model trained with the slices protocol: the real table compares its prediction of "
                        "the held-out slices 0 and 9 (multi-Otsu kept as a baseline)")
    parser.add_argument("--only", choices=["real"], default=None,
                        help="run only this part; the other parts of the stored JSON are kept as they were")
    args = parser.parse_args(argv)
    out = RESULTS / ("quick" if args.quick else "") / "analyze.json"
    real = real_test_slices(args.quick, args.model) if args.model is not None else real_slices(args.quick)
    if args.only == "real":
        # The other parts stay as stored, each with the provenance of the run that measured it.
        stored = read_json(out)
        run = {k: stored.get(k) for k in ("command", "git_commit", "date_utc", "finished_utc", "machine")}
        kept = {k: {"run": run, **v} if "run" not in v else v
                for k, v in stored.items() if k in ("synthetic_3d", "big_volume")}
        write_json(out, {**stamp(), "real_slices": real, **kept})
        print("wrote", out)
        return
    result = {**stamp(), "real_slices": real, "synthetic_3d": synthetic_3d(args.quick)}
    print("synthetic 3D", {k: result["synthetic_3d"][k] for k in ("pixel_accuracy", "porosity_error_pp")}, flush=True)
    if not args.skip_big:
        result["big_volume"] = big_volume(args.quick)
        print("big volume", result["big_volume"], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print("wrote", out)


if __name__ == "__main__":
    main()
