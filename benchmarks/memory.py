"""Memory: peak resident memory of segmenting a big volume from TIFF to TIFF through the CLI.

Usage
-----
    python benchmarks/memory.py            # 512 x 1024 x 1024 uint8 volume (512 MiB)
    python benchmarks/memory.py --quick    # 16 x 256 x 256 smoke run

Writes a synthetic uint8 volume as a multi-page TIFF, saves a small *untrained* Unet-resnet18
model artefact (memory does not depend on the weights' values), then runs

    python -m napari_sandseg.cli predict --model M.keras --images I.tif --out P.tif

as a child process, polling its resident set size (psutil, every 20 ms, child and any
grandchildren summed) and reading ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` when it exits.
Target: peak RSS <= volume size + 1.5 GB. Results to ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
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
    levels = np.array([14, 85, 125, 243], dtype=np.int16)
    with tifffile.TiffWriter(path, bigtiff=z * y * x > 2**32 - 2**25) as tif:
        for _ in range(z):
            coarse = rng.integers(0, 4, size=(y // 32 + 1, x // 32 + 1))
            phase = np.kron(coarse, np.ones((32, 32), dtype=np.int64))[:y, :x]
            page = levels[phase] + rng.integers(-12, 13, size=(y, x), dtype=np.int16)
            tif.write(np.clip(page, 0, 255).astype(np.uint8), contiguous=True, photometric="minisblack")
    return z * y * x


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
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="passed to the CLI as --batch-size (default: the CLI's default, 8)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop the CLI after this many seconds and record the peak so far")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp folder, removed after")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
