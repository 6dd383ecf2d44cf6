"""TIFF codecs: how fast the project's reader decodes LZW and deflate stacks, with and without imagecodecs.

Usage
-----
    python benchmarks/tiff_codecs.py                     # 512 x 1024 x 1024 uint8, best of 3
    python benchmarks/tiff_codecs.py --quick             # 32 x 256 x 256 smoke run
    python benchmarks/tiff_codecs.py --imagecodecs-path DIR   # imagecodecs from DIR (pip install --target DIR)

Writes a synthetic sandstone stack (:func:`napari_sandseg.sample.make_sandstone` slabs of 16
slices, cycled through the stack: compression works strip by strip, so distinct slices beyond a
few dozen change nothing) into a temp folder as uncompressed, LZW and deflate (zlib) TIFFs, one
strip per page as tifffile writes them by default, then times :func:`napari_sandseg.io.read_volume`
on each file in two child processes:

* ``with``: imagecodecs importable (tifffile decodes LZW and deflate with it);
* ``without``: ``sys.modules["imagecodecs"] = None`` before anything imports it, which is what a
  machine without the package sees (tifffile falls back to Python's zlib; LZW has no fallback).

Each read is timed ``--repeats`` times (best wall-clock seconds, with that read's process CPU
time: all threads), from the page cache (files were just written): this measures decoding, not
the disk. MB/s are decoded megabytes (10^6 bytes) per second. The installed size of imagecodecs
(its files as listed by its metadata) is recorded too. Results to
``benchmarks/results/tiff_codecs.json`` (``--quick``: ``results/quick/``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common as C  # noqa: E402  (numpy only at import: the child's imagecodecs block still holds)

REPO = C.REPO
RESULTS = Path(__file__).resolve().parent / "results"
CODECS = ("none", "lzw", "zlib")
SETTINGS = ("with", "without")
#: Distinct slices generated (in slabs of 16); the stack cycles through them.
DISTINCT_SLICES = 64


# ------------------------------------------------------------------------------------ child


def child(path: Path, repeats: int, block: bool, extra_path: str | None) -> dict[str, Any]:
    """Time ``io.read_volume(path)`` in this process; runs in a fresh interpreter per setting."""
    if block:
        sys.modules["imagecodecs"] = None  # type: ignore[assignment]  # import -> ImportError
    elif extra_path:
        sys.path.insert(0, extra_path)
    import tifffile

    from napari_sandseg.errors import InputError
    from napari_sandseg.io import read_volume

    try:
        import imagecodecs

        version = imagecodecs.__version__
    except ImportError:
        version = None
    out: dict[str, Any] = {"imagecodecs_version": version, "tifffile_version": tifffile.__version__,
                           "tifffile_maxworkers": tifffile.TIFF.MAXWORKERS}
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            volume = read_volume(path)
        except InputError as exc:  # LZW without imagecodecs: say so instead of a figure
            return {**out, "readable": False, "error": str(exc)}
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        nbytes = volume.nbytes
        del volume
    best = int(np.argmin(walls))
    return {**out, "readable": True, "seconds_best": round(walls[best], 3), "cpu_seconds": round(cpus[best], 3),
            "mb_per_s": round(nbytes / walls[best] / 1e6, 1), "seconds_all": [round(w, 3) for w in walls],
            "cpu_seconds_all": [round(c, 3) for c in cpus]}


def run_child(path: Path, repeats: int, setting: str, extra_path: str | None) -> dict[str, Any]:
    """:func:`child` in a fresh interpreter, so imagecodecs is (or is not) imported from the start."""
    cmd = [sys.executable, __file__, "--child", str(path), "--repeats", str(repeats)]
    if setting == "without":
        cmd.append("--block-imagecodecs")
    elif extra_path:
        cmd += ["--imagecodecs-path", extra_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(cmd)}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- parent


def write_stacks(folder: Path, shape: tuple[int, int, int], extra_path: str | None) -> dict[str, Path]:
    """Write the stack once per codec (LZW needs imagecodecs to encode: the writer imports it)."""
    if extra_path:
        sys.path.insert(0, extra_path)
    import tifffile

    from napari_sandseg.sample import make_sandstone

    z, y, x = shape
    distinct = min(z, DISTINCT_SLICES)
    slabs = [make_sandstone((min(16, distinct), y, x), seed=s)[0] for s in range(max(1, distinct // 16))]
    stack = np.resize(np.concatenate(slabs), shape)  # cycles through the distinct slices
    paths = {}
    for codec in CODECS:
        paths[codec] = folder / f"stack_{codec}.tif"
        # One series of z pages, one strip each, as ImageJ/Fiji and most CT software write a stack.
        tifffile.imwrite(paths[codec], stack, photometric="minisblack", compression=None if codec == "none" else codec,
                         bigtiff=stack.nbytes >= 2**31)
    return paths


def install_bytes() -> int | None:
    """Bytes of imagecodecs' installed files (its metadata's file list), or None when absent."""
    try:
        dist = importlib.metadata.distribution("imagecodecs")
    except importlib.metadata.PackageNotFoundError:
        return None
    return sum(f.size or 0 for f in dist.files or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 x 256 x 256 smoke run (results/quick/)")
    parser.add_argument("--repeats", type=int, default=3, help="reads per codec and setting (best is kept)")
    parser.add_argument("--imagecodecs-path", default=None, metavar="DIR",
                        help="a folder holding imagecodecs (pip install --target DIR imagecodecs), when this "
                        "interpreter does not have it")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--block-imagecodecs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats, args.block_imagecodecs, args.imagecodecs_path)))
        return 0

    shape = (32, 256, 256) if args.quick else (512, 1024, 1024)
    C.start_clock()
    with tempfile.TemporaryDirectory(prefix="tiff_codecs_") as tmp:
        t0 = time.perf_counter()
        paths = write_stacks(Path(tmp), shape, args.imagecodecs_path)
        print(f"wrote {shape} uint8 as {', '.join(CODECS)} in {time.perf_counter() - t0:.0f} s")
        sizes = {codec: p.stat().st_size for codec, p in paths.items()}
        results: dict[str, dict[str, Any]] = {codec: {} for codec in CODECS}
        versions: dict[str, Any] = {}
        for codec in CODECS:
            for setting in SETTINGS:
                r = run_child(paths[codec], args.repeats, setting, args.imagecodecs_path)
                versions.setdefault("tifffile_version", r.pop("tifffile_version"))
                versions.setdefault("tifffile_maxworkers", r.pop("tifffile_maxworkers"))
                version = r.pop("imagecodecs_version")
                if setting == "with":
                    versions["imagecodecs_version"] = version
                results[codec][f"{setting}_imagecodecs"] = r
                figure = (f"{r['seconds_best']:6.2f} s  cpu {r['cpu_seconds']:6.2f} s  {r['mb_per_s']:7.1f} MB/s"
                          if r["readable"] else f"not readable: {r['error']}")
                print(f"{codec:5s} {setting:7s} imagecodecs: {figure}", flush=True)
    if versions.get("imagecodecs_version") is None:
        raise SystemExit("imagecodecs was not importable in the 'with' setting; pass --imagecodecs-path")
    nbytes = int(np.prod(shape))
    data = {
        "shape": list(shape),
        "dtype": "uint8",
        "content": f"napari_sandseg.sample.make_sandstone slabs of 16 slices (seeds 0..), {min(shape[0], DISTINCT_SLICES)} "
                   "distinct slices cycled through the stack; one strip per page (tifffile's default)",
        "reader": "napari_sandseg.io.read_volume (tifffile series.asarray), warm page cache",
        "repeats": args.repeats,
        "decoded_bytes": nbytes,
        "file_bytes": sizes,
        "compression_ratio": {codec: round(nbytes / size, 3) for codec, size in sizes.items()},
        "codecs": results,
        **versions,
        "imagecodecs_install_bytes": install_bytes() if not args.imagecodecs_path else _folder_bytes(args.imagecodecs_path),
        **C.stamp(),
    }
    out = RESULTS / ("quick" if args.quick else "") / "tiff_codecs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    load = data["machine"]
    print(f"load average {load['load_average_at_start']} -> {load['load_average_at_end']}; imagecodecs {versions['imagecodecs_version']} installs "
          f"{(data['imagecodecs_install_bytes'] or 0) / 1e6:.0f} MB; wrote {out}")
    return 0


def _folder_bytes(folder: str) -> int:
    """Bytes of imagecodecs' files in a ``pip install --target`` folder (package, libraries, metadata)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and "imagecodecs" in str(f.relative_to(folder)))


if __name__ == "__main__":
    raise SystemExit(main())
