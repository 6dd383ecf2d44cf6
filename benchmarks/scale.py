"""Scale: a volume 4x the memory budget, predicted streamed and on a 2-worker dask cluster, and opened in napari.

Usage
-----
    python benchmarks/scale.py                      # 1536 x 2048 x 2048 uint8 (6 GiB), 1.5 GiB budget
    python benchmarks/scale.py --quick              # 64 x 1024 x 1024 smoke run (64 MiB, 16 MiB "budget")
    python benchmarks/scale.py --shape Z Y X --budget-gib B --workdir DIR

What is measured, each step in its own process so its memory is its own:

1. ``sandseg predict`` (single process, streamed slab by slab) and ``sandseg predict --workers 2``
   (a dask LocalCluster: the client plus two worker processes). For every process of the tree
   the peak resident memory is sampled (psutil, every 50 ms) and compared with the budget;
   throughput is voxels per second of wall time, start-up included. The two label stacks
   are compared slab by slab: they must be identical.
2. Opening the volume in napari under Xvfb: the reader returning its layer data, ``add_image``,
   the first drawn frame, then browsing (20 jumps to random slices, each drawn).

The model is a *probe*: a saved Keras model of one 1x1 convolution + softmax with a sidecar,
loaded and run through exactly the production path (``load_model``, normalisation, padding,
``tf.function``, argmax, class decoding, writers). With a real Unet the run is bound by the
network's arithmetic (see ``benchmarks/throughput.py`` for that), and a whole Unet on two CPU
cores would need hours for 6 GiB; the probe keeps the figures about what this benchmark is for:
memory that does not grow with the volume, I/O, and the dask orchestration. Results go to
``benchmarks/results/scale.json`` (``--quick``: ``benchmarks/results/quick/scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

GIB = 2**30
FULL_SHAPE = (1536, 2048, 2048)
QUICK_SHAPE = (64, 1024, 1024)
BATCH = 2
BROWSE_JUMPS = 20


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def write_synthetic_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """A uint8 BigTIFF of ``shape`` built from a synthetic sandstone block, written slice by slice.

    Generating a 6 GiB sandstone directly would take long; tiling a 32 x 512 x 512 block (rolled
    by a different offset on every slice, so no two slices are equal) gives realistic grey
    values at disk speed, and never holds more than one slice.
    """
    import tifffile

    from napari_sandseg.sample import make_sandstone

    block = make_sandstone((32, 512, 512), seed=seed)[0]
    z, y, x = shape
    reps = (-(-y // 512), -(-x // 512))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k in range(z):
            plane = np.roll(np.tile(block[k % 32], reps), shift=(7 * k, 13 * k), axis=(0, 1))[:y, :x]
            tif.write(np.ascontiguousarray(plane), contiguous=True, photometric="minisblack")


def write_probe_model(path: Path) -> None:
    """Save the probe model (1x1 convolution, 4-class softmax) with a sidecar, like a trained one."""
    import keras

    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, save_model

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(4, 1, activation="softmax")(inp)
    model = keras.Model(inp, out, name="scale_probe")
    model.layers[-1].set_weights([np.array([[[[-8.0, -2.0, 2.0, 8.0]]]], np.float32), np.array([4.0, 1.0, -1.0, -4.0], np.float32)])
    info = ModelInfo(config={}, class_map=ClassMap((0, 85, 170, 255)), normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4, notes=["scale benchmark probe: 1x1 conv + softmax"])
    save_model(model, path, info)


# --------------------------------------------------------------------------------------------
# measuring a process tree
# --------------------------------------------------------------------------------------------
class TreeMonitor(threading.Thread):
    """Samples the resident memory of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_total = 0
        self.peaks: dict[int, dict[str, Any]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._halt.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    role = _role(proc.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += rss
                entry = self.peaks.setdefault(proc.pid, {"role": role, "peak_rss_bytes": 0})
                entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], rss)
            self.peak_total = max(self.peak_total, total)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "napari_sandseg.cli" in text or "sandseg" in text.split(" ")[0]:
        return "sandseg client"
    if "multiprocessing" in text or "spawn" in text or "forkserver" in text:
        return "dask worker/nanny"
    return text[:60]


def run_measured(cmd: list[str], budget: int, log) -> dict[str, Any]:
    """Run ``cmd``, sampling its process tree; wall time, peaks per process and for the tree."""
    log("$ " + " ".join(cmd))
    load_before = list(os.getloadavg())  # the machine is shared: say how busy it was
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = TreeMonitor(proc.pid)
    monitor.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    monitor.stop()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}):\n{output[-3000:]}")
    processes = sorted(monitor.peaks.values(), key=lambda e: -e["peak_rss_bytes"])
    # Processes that lived less than a sample (shell wrappers, resource trackers) barely register.
    processes = [p for p in processes if p["peak_rss_bytes"] > 50 * 2**20]
    peak_process = max(p["peak_rss_bytes"] for p in processes)
    return {
        "command": " ".join(cmd),
        "wall_s": round(wall, 2),
        "peak_rss_largest_process_bytes": peak_process,
        "peak_rss_tree_bytes": monitor.peak_total,
        "every_process_within_budget": all(p["peak_rss_bytes"] <= budget for p in processes),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "processes": processes,
    }


def same_labels(a: Path, b: Path, slab: int = 64) -> bool:
    """Whether two label stacks are identical, compared a slab at a time."""
    from napari_sandseg.lazy import open_volume

    va, vb = open_volume(a), open_volume(b)
    if va.shape != vb.shape:
        return False
    return all(np.array_equal(va[z : z + slab], vb[z : z + slab]) for z in range(0, va.shape[0], slab))


# --------------------------------------------------------------------------------------------
# napari (runs in its own process under xvfb-run: --napari-probe PATH)
# --------------------------------------------------------------------------------------------
def napari_probe(path: Path) -> dict[str, Any]:
    """Time opening ``path`` in a napari viewer and browsing it; peak RSS of this process."""
    import resource

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sandseg._napari.reader import napari_get_reader

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    app.processEvents()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    [(data, kwargs, kind)] = napari_get_reader(str(path))(str(path))
    t_reader = time.perf_counter() - t0
    getattr(viewer, f"add_{kind}")(data, **kwargs)
    t_added = time.perf_counter() - t0
    app.processEvents()
    t_drawn = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    jumps = []
    for z in rng.integers(0, data.shape[0], BROWSE_JUMPS):
        s = time.perf_counter()
        viewer.dims.set_current_step(0, int(z))
        app.processEvents()
        jumps.append(time.perf_counter() - s)
    viewer.close()
    return {
        "layer_data_type": type(data).__name__,
        "reader_s": round(t_reader, 3),
        "reader_plus_add_image_s": round(t_added, 3),
        "first_frame_drawn_s": round(t_drawn, 3),
        "browse_jump_mean_ms": round(1000 * float(np.mean(jumps)), 1),
        "browse_jump_max_ms": round(1000 * float(np.max(jumps)), 1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_before_open_bytes": rss_before,
    }


# --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-run size")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    parser.add_argument("--budget-gib", type=float, default=None, help="memory budget per process")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sandseg-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the volume and outputs")
    parser.add_argument("--napari-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.napari_probe is not None:
        print(json.dumps(napari_probe(args.napari_probe)))
        return

    shape = tuple(args.shape) if args.shape else (QUICK_SHAPE if args.quick else FULL_SHAPE)
    volume_bytes = int(np.prod(shape))
    budget = int((args.budget_gib * GIB) if args.budget_gib else volume_bytes // 4)
    log = C.logger()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    images, model = work / "images.tif", work / "probe.keras"
    log(f"volume {shape} uint8 = {volume_bytes / GIB:.2f} GiB; budget {budget / GIB:.2f} GiB per process "
        f"({volume_bytes / budget:.1f}x smaller than the volume)")
    t = time.perf_counter()
    write_synthetic_volume(images, shape)
    write_probe_model(model)
    log(f"wrote the volume in {time.perf_counter() - t:.0f} s")

    cli = [sys.executable, "-m", "napari_sandseg.cli", "predict", "--model", str(model), "--images", str(images),
           "--batch-size", str(BATCH), "--overwrite"]
    runs = {
        "single_process": run_measured(cli + ["--out", str(work / "single.tif")], budget, log),
        "dask_2_workers": run_measured(cli + ["--out", str(work / "dask.tif"), "--workers", "2"], budget, log),
    }
    for name, run in runs.items():
        run["throughput_mvoxel_per_s"] = round(volume_bytes / run["wall_s"] / 1e6, 2)
        run["throughput_slices_per_s"] = round(shape[0] / run["wall_s"], 2)
        log(f"{name}: {run['wall_s']} s, {run['throughput_mvoxel_per_s']} Mvoxel/s, largest process "
            f"{run['peak_rss_largest_process_bytes'] / GIB:.2f} GiB, tree {run['peak_rss_tree_bytes'] / GIB:.2f} GiB")
    identical = same_labels(work / "single.tif", work / "dask.tif")
    log(f"dask output identical to single-process output: {identical}")

    napari_cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(Path(__file__).resolve()),
                  "--napari-probe", str(images)]
    log("$ " + " ".join(napari_cmd))
    out = subprocess.run(napari_cmd, capture_output=True, text=True, check=True)
    view = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"napari: layer in {view['reader_plus_add_image_s']} s, first frame {view['first_frame_drawn_s']} s, "
        f"browsing {view['browse_jump_mean_ms']} ms/slice (max {view['browse_jump_max_ms']}), "
        f"peak RSS {view['peak_rss_bytes'] / GIB:.2f} GiB")

    result = {
        **C.stamp(),
        "volume": {"shape": list(shape), "dtype": "uint8", "bytes": volume_bytes, "file": "uncompressed BigTIFF"},
        "memory_budget_bytes": budget,
        "volume_over_budget": round(volume_bytes / budget, 2),
        "model": "probe: 1x1 conv + softmax through the production predict path (see module docstring)",
        "batch_size": BATCH,
        "prediction": runs,
        "dask_output_identical": identical,
        "napari_open": view,
        "napari_command": " ".join(napari_cmd),
    }
    target = C.RESULTS / "quick" / "scale.json" if args.quick else C.RESULTS / "scale.json"
    C.write_json(target, result)
    log(f"wrote {target}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
