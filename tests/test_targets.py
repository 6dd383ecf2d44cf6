"""One output-target check: every writer, the CLI and the widgets refuse the same bad targets in the same words.

Each writer is handed the same bad destinations (a missing folder, an existing file without
consent, the run's own input, a model name without ``.keras``, a plain folder, a folder named
``.zarr`` that is no zarr store) and must refuse each one before writing anything, with the
message written below once, word for word; only the overwrite switch it names differs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from napari_sandseg import cli, io, targets
from napari_sandseg.classmap import ClassMap
from napari_sandseg.errors import OutputError
from napari_sandseg.targets import OVERWRITE_API, OVERWRITE_CLI, OVERWRITE_WIDGET

PACKAGE = Path(__file__).resolve().parents[1] / "napari_sandseg"

#: The one wording of each refusal (``{out}``: the destination, ``{allow}``: the switch named).
MESSAGES = {
    "missing folder": "{out}: the folder {folder} does not exist; create it first",
    "exists": "{out}: already exists; choose another name or allow overwriting ({allow})",
    "input": "{out}: is also an input of this run; choose another name (an output never overwrites its input)",
    "not .keras": "{out}: the file name must end in .keras",
    "not .zip": "{out}: the file name must end in .zip",
    "folder": "{out}: is a folder; give a file name",
    "folder named .zarr": "{out}: is a folder but not a zarr store, and replacing it would delete it; choose another name",
}

VOLUME = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8) % 4


def _cli(argv: list, capsys) -> str:
    assert cli.main([str(a) for a in argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("sandseg: error: ") and err.count("\n") == 1, err
    return err[len("sandseg: error: "):].rstrip("\n")


def _raised(call) -> str:
    with pytest.raises(OutputError) as exc:
        call()
    return str(exc.value)


def _slabs(out: Path, overwrite: bool) -> None:
    from napari_sandseg.outputs import slab_writer

    with slab_writer(out, VOLUME.shape, np.uint8, overwrite=overwrite) as writer:
        writer.write(0, VOLUME)


def _train(out: Path, overwrite: bool) -> None:
    from napari_sandseg.config import TrainConfig
    from napari_sandseg.train import train

    # Checkpoints replace each other: train never asks for consent (overwrite is the CLI's question).
    next(train(VOLUME, VOLUME, ClassMap((0, 1, 2, 3)), TrainConfig.classic(epochs=1), out))


def _cluster(out: Path, overwrite: bool, images: Path) -> None:
    pytest.importorskip("distributed")
    from napari_sandseg.cluster import predict_cluster

    predict_cluster(images.parent / "m.keras", images, out, workers=1, overwrite=overwrite)


#: name -> (write(out, overwrite, images, capsys) -> message, suffix of its outputs, switch named, cases)
WRITERS = {
    "io.write_volume": (lambda o, w, i, c: _raised(lambda: io.write_volume(o, VOLUME, overwrite=w)), ".tif",
                        OVERWRITE_API, ("missing folder", "exists", "folder")),
    "io.write_labels": (lambda o, w, i, c: _raised(lambda: io.write_labels(o, VOLUME, ClassMap((0, 1, 2, 3)),
                                                                           overwrite=w)), ".tif",
                        OVERWRITE_API, ("missing folder", "exists", "folder")),
    "model.save_model": (lambda o, w, i, c: _raised(lambda: __import__("napari_sandseg.model").model.save_model(
        None, o, None, overwrite=w)), ".keras", OVERWRITE_API, ("missing folder", "exists", "not .keras", "folder")),
    "outputs.slab_writer (tiff)": (lambda o, w, i, c: _raised(lambda: _slabs(o, w)), ".tif", OVERWRITE_API,
                                   ("missing folder", "exists", "folder")),
    "outputs.slab_writer (zarr)": (lambda o, w, i, c: _raised(lambda: _slabs(o, w)), ".zarr", OVERWRITE_API,
                                   ("missing folder", "exists", "folder named .zarr")),
    "file_prediction.predict_file": (lambda o, w, i, c: _raised(lambda: __import__("napari_sandseg.file_prediction").file_prediction.predict_file(
        i.parent / "m.keras", i, o, overwrite=w)), ".tif", OVERWRITE_API, ("missing folder", "exists", "input", "folder")),
    "cluster.predict_cluster": (lambda o, w, i, c: _raised(lambda: _cluster(o, w, i)), ".tif", OVERWRITE_API,
                                ("missing folder", "exists", "input")),
    "train.train": (lambda o, w, i, c: _raised(lambda: _train(o, w)), ".keras", OVERWRITE_API,
                    ("missing folder", "not .keras", "folder")),
    "sandseg predict": (lambda o, w, i, c: _cli(["predict", "--model", i.parent / "m.keras", "--images", i, "--out", o]
                                                + (["--overwrite"] if w else []), c), ".tif", OVERWRITE_CLI,
                        ("missing folder", "exists", "input", "folder", "folder named .zarr")),
    "sandseg train": (lambda o, w, i, c: _cli(["train", "--images", i, "--masks", i, "--out", o]
                                              + (["--overwrite"] if w else []), c), ".keras", OVERWRITE_CLI,
                      ("missing folder", "exists", "not .keras", "folder")),
    "model_package.extract_package": (lambda o, w, i, c: _raised(lambda: __import__(
        "napari_sandseg.model_package").model_package.extract_package(i.parent / "m.zip", o, overwrite=w)), ".keras",
        OVERWRITE_API, ("missing folder", "exists", "not .keras", "folder")),
    "model_package.export_package": (lambda o, w, i, c: _raised(lambda: __import__(
        "napari_sandseg.model_package").model_package.export_package(i.parent / "m.keras", o, overwrite=w)), ".zip",
        OVERWRITE_API, ("missing folder", "exists", "not .zip", "folder")),
    "sandseg export-model": (lambda o, w, i, c: _cli(["export-model", "--model", i.parent / "m.keras", "--out", o]
                                                     + (["--overwrite"] if w else []), c), ".zip", OVERWRITE_CLI,
                             ("missing folder", "exists", "not .zip", "folder")),
    "Segment widget (output_problem)": (lambda o, w, i, c: __import__("napari_sandseg._widgets._files").
                                        _widgets._files.output_problem(o, w, i), ".tif", OVERWRITE_WIDGET,
                                        ("missing folder", "exists", "input", "folder named .zarr")),
}


def _destination(case: str, tmp: Path, suffix: str, images: Path) -> tuple[Path, bool]:
    """A bad destination of kind ``case`` (created as needed), and whether consent to overwrite is given."""
    if case == "missing folder":
        return tmp / "missing" / f"out{suffix}", False
    if case == "exists":
        out = tmp / f"old{suffix}"
        if suffix == ".zarr":
            import zarr

            zarr.open_array(str(out), mode="w", shape=(1,), dtype="u1")[:] = 7
        else:
            out.write_bytes(b"precious")
        return out, False
    if case == "input":
        return images, True  # consent to overwrite never extends to the input
    if case == "not .keras":
        return tmp / "model.h5", True
    if case == "not .zip":
        return tmp / "package.tar", True
    if case == "folder":
        out = tmp / f"dir{suffix}"
        out.mkdir()
        return out, True
    assert case == "folder named .zarr"
    out = tmp / "photos.zarr"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not zarr")
    return out, True


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


CASES = [(writer, case) for writer, (*_, cases) in WRITERS.items() for case in cases]


@pytest.mark.parametrize("writer, case", CASES, ids=[f"{w}: {c}" for w, c in CASES])
def test_every_writer_refuses_a_bad_target_with_the_one_message(writer, case, tmp_path, capsys):
    write, suffix, allow, _ = WRITERS[writer]
    images = io.write_volume(tmp_path / "images.tif", VOLUME)
    out, overwrite = _destination(case, tmp_path, suffix, images)
    before = _snapshot(tmp_path)
    message = write(out, overwrite, images, capsys)
    assert message == MESSAGES[case].format(out=out, folder=out.parent, allow=allow)
    assert _snapshot(tmp_path) == before  # refused before anything was written, no temp file left


def test_the_check_accepts_what_the_writers_may_write(tmp_path):
    store = tmp_path / "labels.zarr"
    import zarr

    zarr.open_array(str(store), mode="w", shape=(1,), dtype="u1")
    assert targets.target_problem(store, overwrite=True) is None  # a zarr store is replaced with consent
    assert targets.target_problem(tmp_path / "M.TIF", suffixes=targets.SEGMENTATION_SUFFIXES) is None
    assert targets.target_problem(tmp_path / "m.KERAS", suffixes=(targets.MODEL_SUFFIX,)) is not None  # Keras's rule
    assert targets.target_problem("relative.tif") is None  # the current folder
    with pytest.raises(OutputError, match="the outputs must be different files"):
        targets.check_targets([tmp_path / "a.tif", None, tmp_path / "." / "a.tif"])


def test_the_bigtiff_rule_is_one_threshold_above_4_gib_less_a_margin():
    assert io.BIGTIFF_THRESHOLD == 2**32 - 2**25
    assert not io.needs_bigtiff(2**31)  # a 2 GiB stack stays classic TIFF, readable everywhere
    assert not io.needs_bigtiff(io.BIGTIFF_THRESHOLD)
    assert io.needs_bigtiff(io.BIGTIFF_THRESHOLD + 1) and io.needs_bigtiff(2**32)
    # No other module carries a threshold of its own.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert path.name == "io.py" or ("2**32" not in text and "2**31" not in text), path


def test_one_json_sanitiser_makes_strict_json():
    import json

    data = {1: np.float32(0.5), "nan": float("nan"), "inf": np.float64("inf"), "flag": np.bool_(True),
            "ids": np.arange(3, dtype=np.int64), "nested": ({"x": np.int16(4)},), "scalar": np.array(2.0)}
    clean = io.jsonable(data)
    assert clean == {"1": 0.5, "nan": None, "inf": None, "flag": True, "ids": [0, 1, 2], "nested": [{"x": 4}],
                     "scalar": 2.0}
    json.dumps(clean, allow_nan=False)  # strict JSON: no NaN, no numpy types
    assert type(clean["flag"]) is bool and type(clean["ids"][0]) is int


def _imports(module: Path) -> set[str]:
    """The package modules ``module`` imports (at the top or inside functions), read with ast."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = node.module or ""
            found |= {base} if base else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_sandseg"):
            found.add(node.module.removeprefix("napari_sandseg").lstrip("."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("napari_sandseg.") for a in node.names if a.name.startswith("napari_sandseg")}
    return found


@pytest.mark.parametrize("module, allowed", [
    ("choices.py", {"errors"}),
    ("config.py", {"choices", "errors"}),
    ("targets.py", {"errors"}),
])
def test_the_configuration_layer_imports_nothing_above_it(module, allowed):
    assert _imports(PACKAGE / module) <= allowed
    assert _imports(PACKAGE / "errors.py") == set()


def test_the_import_reader_sees_imports():  # the check above could not pass by reading nothing
    assert {"choices", "errors"} <= _imports(PACKAGE / "config.py")
    assert {"choices", "targets", "io"} <= _imports(PACKAGE / "model.py")


def test_each_list_of_choices_is_written_once():
    from napari_sandseg import choices, config, distribute, losses, model, predict

    assert model.SUPPORTED_BACKBONES is choices.SUPPORTED_BACKBONES
    assert model.MODEL_PRECISIONS is choices.MODEL_PRECISIONS
    assert config.PRECISIONS is choices.PRECISIONS and not hasattr(predict, "PREDICT_PRECISIONS")
    assert config.MONITORS is choices.MONITORS and distribute.STRATEGIES is choices.STRATEGIES
    assert losses.LOSSES is choices.LOSSES
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices
    options = {a.dest: a for a in sub["train"]._actions} | {f"predict_{a.dest}": a for a in sub["predict"]._actions}
    assert list(options["precision"].choices) == list(options["predict_precision"].choices) == list(choices.PRECISIONS)
    assert list(options["strategy"].choices) == list(choices.STRATEGIES)
    assert list(options["monitor"].choices) == list(choices.MONITORS)
    assert options["predict_batch_size"].default == choices.PREDICT_BATCH_SIZE
