"""Every command line a widget shows, parsed by the CLI's own parser, gives back the widget's settings.

The widgets build their command lines with :mod:`napari_sandseg.command_lines` only (the import
graph test keeps them from building one elsewhere: see test_no_widget_spells_a_command_by_hand).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from napari_sandseg.cli import _train_config, build_parser
from napari_sandseg.command_lines import (
    PROGRAM,
    analyze_command,
    command_line,
    evaluate_command,
    export_command,
    predict_command,
    train_command,
)
from napari_sandseg.config import TrainConfig
from napari_sandseg.model_package import PackageMetadata
from napari_sandseg.units import parse_voxel_size

ROOT = Path(__file__).resolve().parents[1]
SPACES = Path("/data/a folder/with spaces/scan 1.tif")


def _parse(words: list[str]):
    assert words[0] == PROGRAM and all(isinstance(w, str) for w in words)
    return build_parser().parse_args(words[1:])


@pytest.mark.parametrize("config", [
    TrainConfig.default(test_fraction=0.0),
    TrainConfig.default(backbone="resnet18", epochs=7, batch_size=4, patience=0, learning_rate=1.2345678e-4,
                        val_fraction=0.25, test_fraction=0.0, augment=False, sparse=True, seed=3,
                        monitor="val_loss", precision="mixed_bfloat16", warmup_epochs=2, crops_per_epoch=None),
])
@pytest.mark.parametrize("voxel_size", [None, ((2.5, 2.5, 2.5), "um"), ((5.0, 2.5, 2.5), "um")])
def test_train_command_gives_back_the_config_and_files(config, voxel_size):
    words = train_command(config, SPACES, Path("m.tif"), Path("o.keras"), Path("init.keras"), voxel_size)
    args = _parse(words)
    assert _train_config(args) == config  # every field of the recipe, exactly (learning rate included)
    assert (args.command, args.images, args.masks, args.out, args.init_model) == (
        "train", SPACES, Path("m.tif"), Path("o.keras"), Path("init.keras"))
    assert (parse_voxel_size(args.voxel_size) if args.voxel_size else None) == voxel_size


def test_train_command_in_pixels_records_no_voxel_size():
    args = _parse(train_command(TrainConfig.default(), "i.tif", "m.tif", "o.keras", voxel_size=((1.0,) * 3, "px")))
    assert args.voxel_size is None and args.init_model is None


@pytest.mark.parametrize("batch_size, precision, overwrite", [(8, "auto", False), (3, "float32", True)])
def test_predict_command_gives_back_the_run(batch_size, precision, overwrite):
    words = predict_command(Path("m.keras"), SPACES, Path("out.zarr"), Path("p.tif"), Path("u.tif"),
                            batch_size=batch_size, precision=precision, voxel_size=((5.0, 2.5, 2.5), "um"),
                            overwrite=overwrite)
    args = _parse(words)
    assert (args.command, args.model, args.images, args.out, args.probabilities, args.uncertainty) == (
        "predict", Path("m.keras"), SPACES, Path("out.zarr"), Path("p.tif"), Path("u.tif"))
    assert (args.batch_size, args.precision, args.overwrite) == (batch_size, precision, overwrite)
    assert parse_voxel_size(args.voxel_size) == ((5.0, 2.5, 2.5), "um")
    # The CLI's defaults are left out of the line, not repeated.
    assert ("--batch-size" in words, "--precision" in words) == (batch_size != 8, precision != "auto")


def test_evaluate_and_analyze_commands_give_back_their_settings():
    args = _parse(evaluate_command(Path("t.tif"), SPACES, ((0.001, 0.001, 0.001), "mm"), json=Path("r.json")))
    assert (args.command, args.truth, args.pred, args.json) == ("evaluate", Path("t.tif"), SPACES, Path("r.json"))
    assert parse_voxel_size(args.voxel_size) == ((0.001, 0.001, 0.001), "mm")
    assert _parse(evaluate_command("t.tif", "p.tif", None)).voxel_size is None

    args = _parse(analyze_command(Path("l.tif"), Path("t.tif"), ((2.5, 2.5, 2.5), "um"), 0, pore_sizes=False))
    assert (args.command, args.labels, args.truth, args.pore_class, args.no_pore_sizes) == (
        "analyze", Path("l.tif"), Path("t.tif"), "0", True)
    assert parse_voxel_size(args.voxel_size) == ((2.5, 2.5, 2.5), "um")
    args = _parse(analyze_command("l.tif", None, ((1.0, 1.0, 1.0), "px"), "pore"))
    assert (args.truth, args.voxel_size, args.pore_class, args.no_pore_sizes) == (None, None, "pore", False)


@pytest.mark.parametrize("test", [True, False])
def test_export_command_gives_back_the_metadata(test):
    meta = PackageMetadata("Sandstone phases", ("Ada Lovelace", "Alan Turing"), "MIT", ((2.5, 2.5, 2.5), "um"))
    args = _parse(export_command(Path("m.keras"), Path("m.zip"), meta, SPACES, test=test))
    assert (args.command, args.model, args.out, args.images, args.name, args.author, args.license) == (
        "export-model", Path("m.keras"), Path("m.zip"), SPACES, meta.name, list(meta.authors), "MIT")
    assert parse_voxel_size(args.voxel_size) == meta.voxel_size
    assert (args.no_test, args.overwrite) == (not test, True)
    args = _parse(export_command("m.keras", "m.zip", PackageMetadata()))
    assert (args.name, args.author, args.voxel_size, args.images) == (None, [], None, None)


def test_command_line_spells_each_kind_of_value():
    assert command_line("x", a_b=Path("p q"), n=3, f=0.1 + 0.2, on=True, off=False, gone=None, many=("1", "2")) == [
        PROGRAM, "x", "--a-b", "p q", "--n", "3", "--f", "0.30000000000000004", "--on", "--many", "1", "--many", "2"]


def test_no_widget_spells_a_command_by_hand():
    """Only command_lines.py writes the program's name into a command line."""
    spelled = re.compile(r"""["']sandseg["']\s*,\s*["'][a-z-]+["']""")
    for path in sorted((ROOT / "napari_sandseg").rglob("*.py")):
        if path.name != "command_lines.py":
            assert not spelled.search(path.read_text()), f"{path.relative_to(ROOT)} builds a command line by hand"
