"""``sandseg``: the command line. Argument parsing and printing only; the work is in the engine.

Every user-fixable problem (a :class:`~napari_sandseg.errors.SandsegError`) prints one line
``sandseg: error: ...`` on stderr and exits 2, with no traceback, before any output file is
touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .choices import (
    AUTO,
    DEFAULT_TILE_SIZE,
    MONITORS,
    PRECISIONS,
    PREDICT_BATCH_SIZE,
    STRATEGIES,
    min_tile_size,
)
from .errors import ConfigError, OutputError, SandsegError, SandsegWarning
from .targets import MODEL_SUFFIX, OVERWRITE_CLI, check_target, check_targets

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as one ``sandseg: error:`` line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"sandseg: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The ``sandseg`` argument parser with all sub-commands."""
    parser = _Parser(prog="sandseg", description="Segment micro-CT rock volumes with a UNet.")
    parser.add_argument("--version", action="version", version=f"napari-sandseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("sample", help="write a synthetic sandstone stack (images.tif, masks.tif)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--slices", type=int, default=1600, help="number of slices (default 1600)")
    p.add_argument("--size", type=int, default=128, help="slice height and width (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")

    p = sub.add_parser("train", help="train (or fine-tune) a UNet on images + masks")
    p.add_argument("--images", required=True, type=Path, help="image stack: TIFF or folder of TIFF slices")
    p.add_argument("--masks", required=True, type=Path, help="label stack with the same shape")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.keras; a .json sidecar goes beside it)")
    p.add_argument("--preset", choices=_preset_names(), default=None,
                   help="start from a named recipe (default: 'project'; 'classic' is the reference notebook's)")
    p.add_argument("--backbone", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--val-fraction", type=float, default=None)
    p.add_argument("--test-fraction", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--sparse", action="store_true", help="mask value 0 means 'not annotated' (ignored by the loss)")
    p.add_argument("--init-model", type=Path, default=None, help="fine-tune from this model (.keras, or a .zip package from export-model)")
    p.add_argument("--encoder-weights", choices=["none", "imagenet"], default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="how to distribute training: auto (default: all GPUs when there are several, the "
                   "TF_CONFIG cluster when set), default (one device), mirrored, multiworker")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="linear learning-rate warm-up from lr/10 over this many epochs (project preset: 1)")
    p.add_argument("--monitor", choices=MONITORS, default=None,
                   help="validation figure that picks the best epoch and drives early stopping "
                   "(project preset: val_mean_iou)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training precision; auto = mixed_bfloat16 on CPUs with native bfloat16 and no GPU "
                   "(project preset: auto)")
    p.add_argument("--crops-per-epoch", type=_count_or_none, default=None, metavar="N|none",
                   help="random crops drawn from the training slices per epoch, when training on crops "
                   "(project preset: 384); none = one per slice")
    p.add_argument("--voxel-size", default=None, metavar="SIZE",
                   help="voxel edge with unit of the images, recorded in the model as the voxel size trained on, "
                   "e.g. 2.5um or 5,2.5,2.5um (default: the images' own, else none)")

    p = sub.add_parser("predict", help="segment an image stack with a trained model")
    p.add_argument("--model", required=True, type=Path,
                   help="model: a .keras file with its .json sidecar, or a bioimage.io package (.zip) from export-model")
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="label stack to write (original class values)")
    p.add_argument("--probabilities", type=Path, default=None, help="also write float32 class probabilities (Z,Y,X,K)")
    p.add_argument("--uncertainty", type=Path, default=None, help="also write a float32 per-pixel entropy map (Z,Y,X)")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE,
                   help=f"slices per model call (default {PREDICT_BATCH_SIZE})")
    p.add_argument("--tta", action="store_true", help="average predictions over flips (slower, a little better)")
    p.add_argument("--tile-size", type=int, default=None, metavar="N",
                   help=f"predict slices larger than N x N pixels in overlapping tiles (multiple of 32; default "
                   f"{DEFAULT_TILE_SIZE}, at least {min_tile_size()}; 0 = whole slices)")
    p.add_argument("--precision", choices=PRECISIONS, default=AUTO,
                   help="arithmetic of the model: auto (default) = mixed_bfloat16 on CPUs with native bfloat16 "
                   "and no GPU (faster, nearly identical labels), else float32; float32 is exact everywhere")
    p.add_argument("--voxel-size", default=None, metavar="SIZE",
                   help="voxel edge with unit written into TIFF outputs, e.g. 2.5um or 5,2.5,2.5um "
                   "(default: the input TIFF's own, else none)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="segment on this dask cluster (e.g. tcp://host:8786); workers must see the same files")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="segment on a local dask cluster of N worker processes")

    p = sub.add_parser("evaluate", help="per-class IoU of a prediction against ground truth")
    p.add_argument("--truth", required=True, type=Path)
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--voxel-size", default=None, metavar="SIZE",
                   help="voxel edge with unit for the physical figures, e.g. 2.5um (default: read from the "
                   "TIFFs, else 1 px)")
    p.add_argument("--pore-class", default=None, metavar="VALUE|NAME",
                   help="class value (or name) that is pore space (default: the class named pore, else the lowest)")
    p.add_argument("--no-physical", action="store_true",
                   help="IoU only: leave out porosity, connectivity and pore sizes of truth and prediction")
    p.add_argument("--per-slice", action="store_true",
                   help="measure the physical figures of each slice on its own, in 2D (for a stack of slices "
                   "that are not neighbours, e.g. held-out test slices)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")

    p = sub.add_parser("analyze", help="rock properties of a label volume: porosity, connectivity, pore sizes, REV")
    p.add_argument("--labels", required=True, type=Path, help="label volume (a prediction, or any segmentation)")
    p.add_argument("--truth", type=Path, default=None,
                   help="ground truth: measure both, side by side, with the differences")
    p.add_argument("--voxel-size", default=None, metavar="SIZE",
                   help="voxel edge with unit, e.g. 2.5um, '2.5 µm', 0.0025mm, or z,y,x: 5,2.5,2.5um "
                   "(default: read from the TIFF, else 1 px)")
    p.add_argument("--pore-class", default=None, metavar="VALUE|NAME",
                   help="class value (or name) that is pore space (default: the lowest value)")
    p.add_argument("--json", type=Path, default=None, help="also write the full report as JSON")
    p.add_argument("--csv", type=Path, default=None, help="also write the summary as CSV")
    p.add_argument("--no-pore-sizes", action="store_true",
                   help="leave out the pore-size distribution (local thickness: the slowest measure, and the "
                   "one that needs the whole pore space in memory, ~60 bytes per voxel)")
    p.add_argument("--overwrite", action="store_true", help="replace existing JSON/CSV files")

    p = sub.add_parser("export-model", help="write a model as a bioimage.io model package (.zip) for ilastik, "
                       "deepImageJ, QuPath and bioimage.io; needs the 'bioimageio' extra")
    p.add_argument("--model", required=True, type=Path, help="model to export (.keras with its .json sidecar)")
    p.add_argument("--out", required=True, type=Path, help="package to write (.zip)")
    p.add_argument("--images", type=Path, default=None,
                   help="stack whose slice becomes the test tensors and the cover (default: the bundled sample)")
    p.add_argument("--slice", type=int, default=None, metavar="N", help="which slice of --images (default: the middle)")
    p.add_argument("--name", default=None, help="package name (letters, digits, spaces, _+-(); default from the backbone)")
    p.add_argument("--author", action="append", default=[], metavar="NAME", help="an author (repeat for several)")
    p.add_argument("--license", default=None, metavar="SPDX",
                   help="licence of the weights as an SPDX id, e.g. CC-BY-4.0 (default), MIT, CC0-1.0")
    p.add_argument("--voxel-size", default=None, metavar="SIZE",
                   help="pixel size of the training data, e.g. 2.5um (default: read from --images, else none)")
    p.add_argument("--no-test", action="store_true",
                   help="skip bioimageio.core's model test (the package is still validated against the spec)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")

    p = sub.add_parser("demo", help="sample -> short train -> predict -> evaluate on the bundled sample")
    p.add_argument("--out", type=Path, default=Path("sandseg-demo"), help="working folder (default ./sandseg-demo)")
    p.add_argument("--epochs", type=int, default=16, help="training epochs (default 16: about 45 s on 2 CPU cores)")
    p.add_argument("--backbone", default="resnet18")

    sub.add_parser("gui", help="open napari with the plugin docked and the bundled sample loaded")
    for name in _READS_VOLUMES:
        _add_reading_options(sub.choices[name])
    return parser


#: Commands that read user volumes (images, masks, predictions): they take the reading options.
_READS_VOLUMES = ("train", "predict", "evaluate", "analyze")


def _add_reading_options(parser: argparse.ArgumentParser) -> None:
    """Options of how to read volume files; :func:`_reading` hands them to the readers."""
    parser.add_argument("--rgb-as-slices", action="store_true",
                        help="read a TIFF tagged as planar RGB(A), shape (3 or 4, Y, X), as 3 or 4 slices "
                        "(tifffile writes such small stacks that way unless told photometric='minisblack')")


def _reading(args: argparse.Namespace) -> dict:
    """The reading options as keywords of ``io.read_volume`` / ``read_mask`` / ``lazy.open_volume``."""
    return {"rgb_as_slices": args.rgb_as_slices}


def _preset_names() -> list[str]:
    from .config import PRESETS

    return sorted(PRESETS)


#: Value of ``--crops-per-epoch`` meaning None (one crop per training slice).
_NONE = "none"


def _count_or_none(text: str) -> int | str:
    """``--crops-per-epoch`` value: an integer, or ``none`` (kept as the string; mapped to None later)."""
    if text.lower() == _NONE:
        return _NONE
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None


# ----------------------------------------------------------------------------- helpers


def check_output(path: Path, overwrite: bool, **rules) -> Path:
    """Fail before any work if ``path`` cannot take an output: the package's one target check
    (:func:`napari_sandseg.targets.check_target`), naming ``--overwrite``."""
    return check_target(path, overwrite, allow=OVERWRITE_CLI, **rules)


def _train_config(args: argparse.Namespace):
    from .config import TrainConfig

    config = TrainConfig.preset(args.preset) if args.preset else TrainConfig.default()
    overrides = {
        "backbone": args.backbone,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "patience": args.patience,
        "learning_rate": args.learning_rate,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "augment": args.augment,
        "strategy": args.strategy,
        "warmup_epochs": args.warmup_epochs,
        "monitor": args.monitor,
        "precision": args.precision,
        "crops_per_epoch": args.crops_per_epoch,
    }
    if args.sparse:
        overrides["sparse"] = True
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    if args.crops_per_epoch == _NONE:  # None itself means "not given" above
        config.crops_per_epoch = None
    if args.encoder_weights is not None:  # "none" must be able to override a preset's "imagenet"
        config.encoder_weights = None if args.encoder_weights == "none" else args.encoder_weights
    config.validate()
    return config


def _run_training(images, targets, class_map, config, out: Path, init_model: Path | None, voxel_size=None):
    from ._progress import ProgressBar
    from ._tf import tf
    from .train import train

    tf()  # import quietly now (settings and inputs are checked), before keras imports it noisily
    bar = ProgressBar("train")
    gen = train(images, targets, class_map, config, out, init_model=init_model, voxel_size=voxel_size)
    try:
        while True:
            event = next(gen)
            detail = f"epoch {event.epoch + 1}/{event.epochs}"
            if event.loss is not None:
                detail += f" loss {event.loss:.4f}"
            if event.val_loss is not None:
                detail += f" val_loss {event.val_loss:.4f}"
            if event.logs.get("val_mean_iou") is not None:
                detail += f" val_mIoU {event.logs['val_mean_iou']:.3f}"
            bar.update(event.fraction, detail)
    except StopIteration as stop:
        result = stop.value
    finally:
        bar.close()
    return result


# ----------------------------------------------------------------------------- commands


def cmd_sample(args: argparse.Namespace) -> int:
    """Write a synthetic sandstone stack."""
    from .sample import write_sample

    if args.slices < 1 or args.size < 8:
        raise ConfigError(f"--slices must be >= 1 and --size >= 8, got {args.slices} and {args.size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; --out takes a folder for images.tif and masks.tif")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("images.tif", "masks.tif"):
        check_output(out / name, args.overwrite)
    images, masks = write_sample(out, shape=(args.slices, args.size, args.size), seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {images} and {masks} ({args.slices} x {args.size} x {args.size}, seed {args.seed})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train or fine-tune a model and print its held-out figures."""
    import numpy as np

    from .training_inputs import is_big, read_training_pair
    from .units import read_voxel_size

    config = _train_config(args)
    voxel_size = _voxel_size(args)  # a bad --voxel-size fails before the volumes are read
    check_output(args.out, args.overwrite, suffixes=(MODEL_SUFFIX,))
    model_map = None
    if args.init_model is not None:
        from .model import read_info

        model_map = read_info(args.init_model).class_map  # fails fast, before reading big volumes
    # Big volumes open lazily: training then reads patches on the fly (napari_sandseg.patches).
    images, targets, class_map = read_training_pair(args.images, args.masks, sparse=config.sparse,
                                                    model_map=model_map, init_model=args.init_model, **_reading(args))
    if not is_big(args.images):
        n_annotated = int(np.count_nonzero(targets.reshape(len(targets), -1).any(axis=1))) if config.sparse else len(targets)
        try:
            config.validate(n_slices=n_annotated, slice_shape=images.shape[1:])
        except ConfigError as exc:
            raise ConfigError(f"{args.masks}: {exc}") from exc
    result = _run_training(images, targets, class_map, config, args.out, args.init_model,
                           voxel_size or read_voxel_size(args.images))
    return _report_training(result)


def _report_training(result) -> int:
    """Print how a training run ended and its held-out figures."""
    from .metrics import format_table

    state = "cancelled" if result.cancelled else "done"
    print(f"training {state}: {len(result.history.get('loss', []))} epochs; model written to {result.path}")
    if result.test_metrics:
        print("held-out test slices:")
        print(format_table(result.test_metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Segment a stack, streamed from file to file."""
    from ._progress import ProgressBar
    from .file_prediction import predict_file

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dask_scheduler is not None or args.workers is not None:
        return _predict_on_dask(args)
    check_targets([args.out, args.probabilities, args.uncertainty], args.overwrite, inputs=[args.images],
                  allow=OVERWRITE_CLI)
    bar = ProgressBar("predict")
    try:
        predict_file(
            args.model, args.images, args.out, probabilities_path=args.probabilities,
            uncertainty_path=args.uncertainty,
            batch_size=args.batch_size, overwrite=args.overwrite, tta=args.tta, **_tiling(args),
            precision=args.precision, **_reading(args), voxel_size=_voxel_size(args),
            progress=lambda done, total: bar.update(done / max(total, 1), f"{done}/{total} slices"),
        )
    finally:
        bar.close()
    written = [p for p in (args.out, args.probabilities, args.uncertainty) if p is not None]
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _tiling(args: argparse.Namespace) -> dict:
    """``--tile-size`` as predict keywords: not given -> the engine's default, 0 -> whole slices."""
    return {} if args.tile_size is None else {"tile_size": args.tile_size or None}


def _voxel_size(args: argparse.Namespace):
    """``--voxel-size`` parsed (:func:`napari_sandseg.units.parse_voxel_size`), or None when not given."""
    from .units import parse_voxel_size

    return None if args.voxel_size is None else parse_voxel_size(args.voxel_size)


def _predict_on_dask(args: argparse.Namespace) -> int:
    """``predict --dask-scheduler ADDRESS`` / ``--workers N``: slabs across dask workers."""
    from ._progress import ProgressBar
    from .cluster import predict_cluster

    if args.dask_scheduler is not None and args.workers is not None:
        raise ConfigError("give --dask-scheduler or --workers, not both")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.probabilities is not None or args.uncertainty is not None:
        raise ConfigError("--probabilities and --uncertainty are not written by dask prediction yet; drop them "
                          "or predict without --dask-scheduler/--workers")
    if args.rgb_as_slices:
        raise ConfigError("--rgb-as-slices is not supported by dask prediction yet; re-save the stack with "
                          "photometric='minisblack' or predict without --dask-scheduler/--workers")
    check_output(args.out, args.overwrite, inputs=[args.images])
    bar = ProgressBar("predict")
    try:
        predict_cluster(
            args.model, args.images, args.out, scheduler=args.dask_scheduler, workers=args.workers,
            batch_size=args.batch_size, tta=args.tta, overwrite=args.overwrite, **_tiling(args),
            precision=args.precision, voxel_size=_voxel_size(args),
            progress=lambda done, total: bar.update(done / max(total, 1), f"{done}/{total} slices"),
        )
    finally:
        bar.close()
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Compare a prediction with ground truth; print the table, optionally write JSON."""
    import numpy as np

    from .analyze import format_physical, physical_accuracy, physical_accuracy_per_slice
    from .classmap import ClassMap, check_integer_valued
    from .io import atomic_write, check_pair, read_volume
    from .metrics import class_value_mismatch, evaluate, format_table, to_json_dict
    from .units import resolve_voxel_size

    if args.json is not None:
        check_output(args.json, args.overwrite)
    (sizes, unit), voxel_note = resolve_voxel_size(args.voxel_size, [args.pred, args.truth])
    truth = read_volume(args.truth, **_reading(args))
    pred = read_volume(args.pred, **_reading(args))
    check_pair(truth, pred, str(args.truth), str(args.pred))
    check_integer_valued(truth, str(args.truth))
    check_integer_valued(pred, str(args.pred))
    truth_values, pred_values = np.unique(truth), np.unique(pred)
    mismatch = class_value_mismatch(truth_values, pred_values, str(args.truth), str(args.pred))
    if mismatch is not None:
        warnings.warn(mismatch, SandsegWarning, stacklevel=1)
    # Classes are the union of both files' values, ascending, so a class only one side has counts.
    class_map = ClassMap(tuple(int(v) for v in np.union1d(truth_values, pred_values)))
    report = evaluate(
        class_map.encode(truth, str(args.truth)), class_map.encode(pred, str(args.pred)),
        class_map.n_classes, class_map.values, class_map.names,
    )
    figures = to_json_dict(report)
    if not args.no_physical:  # measured before anything is printed, so a bad --pore-class is the only line
        measure = physical_accuracy_per_slice if args.per_slice else physical_accuracy
        figures["physical"] = measure(truth, pred, sizes, unit, pore=args.pore_class, names=class_map.names)
        figures["physical"].setdefault("notes", []).extend([voxel_note] if voxel_note else [])
    print(format_table(report))
    if not args.no_physical:
        print(format_physical(figures["physical"]))
    if args.json is not None:
        with atomic_write(args.json, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Measure a label volume (and a ground truth); print the table, optionally write JSON/CSV."""
    from .analyze import analyze_files, format_report, to_csv
    from .io import atomic_write

    for out in (args.json, args.csv):
        if out is not None:
            check_output(out, args.overwrite)
    report = analyze_files(args.labels, args.truth, args.voxel_size, args.pore_class,
                           pore_sizes=not args.no_pore_sizes, **_reading(args))
    print(format_report(report))
    for out, text in ((args.json, lambda: json.dumps(report, indent=2)), (args.csv, lambda: to_csv(report))):
        if out is not None:
            with atomic_write(out, overwrite=args.overwrite) as tmp:
                Path(tmp).write_text(text())
            print(f"wrote {out}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """Write a bioimage.io model package and print the reference tools' verdict on it."""
    from .errors import ModelError
    from .model_package import DEFAULT_LICENSE, PACKAGE_SUFFIX, PackageMetadata, export_package, validate_package
    from .units import parse_voxel_size

    check_output(args.out, args.overwrite, suffixes=(PACKAGE_SUFFIX,))
    meta = PackageMetadata(
        name=args.name, authors=tuple(args.author), license=args.license or DEFAULT_LICENSE,
        voxel_size=None if args.voxel_size is None else parse_voxel_size(args.voxel_size),
    )
    export_package(args.model, args.out, images=args.images, slice_index=args.slice, metadata=meta,
                   overwrite=args.overwrite)
    print(f"wrote {args.out}")
    check = validate_package(args.out, test=not args.no_test)
    print(check.summary)
    if check.status == "failed" or (not args.no_test and not check.passed):
        raise ModelError(f"{args.out}: bioimage.io validation status '{check.status}' (see the summary above)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop on the bundled sample, small enough for a laptop CPU."""
    import shutil

    from .io import read_mask, read_volume, write_labels
    from .metrics import evaluate, format_table
    from .predict import predict_volume
    from .bundled import bundled_sample_paths
    from .train import TrainConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_src, mask_src = bundled_sample_paths()
    images_path, masks_path = out / "images.tif", out / "masks.tif"
    shutil.copyfile(image_src, images_path)
    shutil.copyfile(mask_src, masks_path)
    print(f"1/4 sample: {images_path}, {masks_path}")
    images = read_volume(images_path)
    targets, class_map = read_mask(masks_path)
    config = TrainConfig.default(backbone=args.backbone, epochs=args.epochs, batch_size=8, patience=args.epochs)
    config.validate()
    model_path = out / "model.keras"
    print(f"2/4 train: {config.backbone}, {config.epochs} epochs on {images.shape[0]} slices")
    result = _run_training(images, targets, class_map, config, model_path, None)
    print(f"3/4 predict: whole stack with {model_path}")
    pred = predict_volume(result.model, images, result.info, precision=AUTO)  # as `sandseg predict` does
    pred_path = out / "prediction.tif"
    write_labels(pred_path, pred.labels, class_map, overwrite=True)
    print("4/4 evaluate (whole stack; the held-out test slices are in the model's sidecar):")
    print(format_table(evaluate(targets, pred.labels, class_map.n_classes, class_map.values, class_map.names)))
    if result.test_metrics:
        print("held-out test slices only:")
        print(format_table(result.test_metrics))
    print(f"files in {out}/ ; rerun headless with:\n  sandseg predict --model {model_path} --images {images_path} "
          f"--out {pred_path} --overwrite")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    """Open napari with the plugin and the bundled sample."""
    from ._napari.launch import main as launch

    launch()
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sample": cmd_sample,
    "train": cmd_train,
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "analyze": cmd_analyze,
    "export-model": cmd_export_model,
    "demo": cmd_demo,
    "gui": cmd_gui,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings as one ``sandseg: warning:`` line; others as Python prints them."""
    if issubclass(category, SandsegWarning):
        sys.stderr.write(f"sandseg: warning: {message}\n")
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sandseg``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return COMMANDS[args.command](args)
    except SandsegError as exc:
        sys.stderr.write(f"sandseg: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("sandseg: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
