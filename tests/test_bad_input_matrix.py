"""The bad-input matrix (issue #5): every input a user can get wrong, through the ``sandseg`` CLI.

Each refused case builds its files in ``tmp_path``, runs ``sandseg`` in-process and checks the
error contract: exit code 2, stderr exactly one ``sandseg: error:`` line naming the offending
file (or option) and the problem, no traceback, and every file that existed before the run
byte-identical afterwards (no file changed, none left behind). Each accepted case checks that an
input we can use safely (16-bit, float or signed images, masks 1..4 or 0/85/170/255, odd slice
sizes, a constant image) is used: exit code 0 and a sensible output.

The cases that need a model share one tiny trained model (resnet18, 1 epoch, 8 x 32 x 32); the
"model from another class count", "sidecar that does not match" and "unsafe model" files are
crafted from it. A few cases also go through the real console script in a subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tifffile

from napari_sandseg import cli, targets
from napari_sandseg.classmap import ClassMap
from napari_sandseg.io import read_volume, write_volume
from napari_sandseg.sample import make_sandstone

SHAPE = (8, 32, 32)
CLASSES = ClassMap((0, 1, 2, 3))


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, uint8 labels 0..3) of shape :data:`SHAPE`."""
    return make_sandstone(SHAPE, seed=2)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, stack) -> Path:
    """One tiny trained model (and sidecar) shared by every case of this module."""
    from napari_sandseg.config import TrainConfig
    from napari_sandseg.train import run_training

    out = tmp_path_factory.mktemp("model") / "model.keras"
    config = TrainConfig(backbone="resnet18", epochs=1, batch_size=4, val_fraction=0.25, test_fraction=0.0,
                         run_eagerly=True)
    run_training(stack[0], stack[1], CLASSES, config, out)
    return out


@pytest.fixture
def eager_training(monkeypatch):
    """CLI training runs eagerly: no ~15 s graph tracing for a one-epoch run on 8 slices."""
    real = cli._train_config
    monkeypatch.setattr(cli, "_train_config", lambda args: real(args).replace(run_eagerly=True))


@dataclass
class Ctx:
    """What a case builder gets: the test's folder, the sample stack, the shared model on demand."""

    tmp: Path
    stack: tuple[np.ndarray, np.ndarray]
    request: Any
    watched: list[Path] = field(default_factory=list)

    def model(self) -> Path:
        path = self.request.getfixturevalue("model_file")
        self.watched += [path, path.with_suffix(".json")]
        return path

    def images(self, name: str = "images.tif", array: np.ndarray | None = None) -> Path:
        return self._write(name, self.stack[0] if array is None else array)

    def masks(self, name: str = "masks.tif", array: np.ndarray | None = None) -> Path:
        return self._write(name, self.stack[1] if array is None else array)

    def _write(self, name: str, array: np.ndarray) -> Path:
        path = self.tmp / name
        return path if path.exists() else write_volume(path, array)

    def raw(self, name: str, content: bytes) -> Path:
        (self.tmp / name).write_bytes(content)
        return self.tmp / name

    def tiff(self, name: str, array: np.ndarray, **kwargs: Any) -> Path:
        tifffile.imwrite(self.tmp / name, array, **kwargs)
        return self.tmp / name

    def model_copy(self, name: str, sidecar: Callable[[dict], dict] | None = None) -> Path:
        """A copy of the shared model (hard link: no 50 MB copy) with an edited sidecar."""
        src = self.model()
        dst = self.tmp / name
        os.link(src, dst)
        side = json.loads(src.with_suffix(".json").read_text())
        dst.with_suffix(".json").write_text(json.dumps(sidecar(side) if sidecar else side))
        return dst

    def predict(self, images: Path, out: str = "pred.tif", *extra: Any) -> list[Any]:
        return ["predict", "--model", self.model(), "--images", images, "--out", self.tmp / out, *extra]

    def evaluate(self, truth: Path, pred: Path, *extra: Any) -> list[Any]:
        return ["evaluate", "--truth", truth, "--pred", pred, *extra]

    def train(self, images: Path, masks: Path, *extra: Any, out: str = "new.keras") -> list[Any]:
        return ["train", "--images", images, "--masks", masks, "--out", self.tmp / out, "--backbone", "resnet18",
                "--epochs", 1, "--batch-size", 4, "--val-fraction", 0.25, "--test-fraction", 0, *extra]


@dataclass
class Case:
    """One row of the matrix: ``build(ctx) -> argv``, then what the one-line message must say."""

    name: str
    build: Callable[[Ctx], list[Any]]
    names: str  # the offending file (or option) the message must name
    problem: str  # regex: a word about the problem
    interface: str = ""  # filled in from argv[0]


def _truncated(ctx: Ctx) -> Path:
    full = ctx.images("full.tif").read_bytes()
    (ctx.tmp / "full.tif").unlink()
    return ctx.raw("cut.tif", full[: len(full) * 6 // 10])


def _corrupt(ctx: Ctx) -> Path:
    data = bytearray(ctx.images("bad.tif", ctx.stack[0]).read_bytes())
    data[4:8] = (len(data) + 10_000).to_bytes(4, "little")  # first page header points past the end
    (ctx.tmp / "bad.tif").write_bytes(bytes(data))
    return ctx.tmp / "bad.tif"


def _other_count(side: dict) -> dict:
    side["n_classes"] = 3
    side["class_map"] = ClassMap((0, 1, 2)).to_dict()
    return side


def _wrong_values(side: dict) -> dict:
    side["class_map"] = ClassMap((0, 1, 2)).to_dict()  # 3 classes for a 4-class model
    return side


def _unsafe_model(ctx: Ctx) -> Path:
    """A .keras file whose architecture holds a Lambda layer (arbitrary Python code)."""
    import keras

    src = ctx.model()
    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(4, 1, activation="softmax")(keras.layers.Lambda(lambda t: t * 2.0)(inp))
    path = ctx.tmp / "unsafe.keras"
    keras.Model(inp, out).save(path)
    shutil.copyfile(src.with_suffix(".json"), path.with_suffix(".json"))
    return path


def _locked_out(ctx: Ctx) -> list[Any]:
    locked = ctx.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: make the CLI's check see what a user would
        ctx.request.getfixturevalue("monkeypatch").setattr(targets.os, "access", lambda p, m: Path(p) != locked)
    return ctx.evaluate(ctx.masks(), ctx.masks(), "--json", locked / "report.json")


def _sparse_one_slice(ctx: Ctx) -> list[Any]:
    painted = np.zeros(SHAPE, np.uint8)
    painted[0, :8] = 1
    painted[0, 8:16] = 2
    return ctx.train(ctx.images(), ctx.masks("strokes.tif", painted), "--sparse")


def _big_values(ctx: Ctx) -> Path:
    return ctx.images("bright.tif", (ctx.stack[0].astype(np.uint16) * 100 + 30_000))


def _slice_folder(ctx: Ctx) -> Path:
    folder = ctx.tmp / "slices"
    folder.mkdir()
    write_volume(folder / "s1.tif", ctx.stack[0][0])
    write_volume(folder / "s2.tif", ctx.stack[0][1, :16])
    return folder


REFUSED = [
    # --- files that cannot be read
    Case("missing file", lambda c: c.evaluate(c.tmp / "nope.tif", c.masks()), "nope.tif", "not found"),
    Case("missing mask file", lambda c: c.train(c.images(), c.tmp / "nomask.tif"), "nomask.tif", "not found"),
    Case("empty file", lambda c: c.evaluate(c.raw("empty.tif", b""), c.masks()), "empty.tif", "empty"),
    Case("truncated TIFF", lambda c: c.evaluate(_truncated(c), c.masks()), "cut.tif", "truncated"),
    Case("corrupt TIFF", lambda c: c.evaluate(_corrupt(c), c.masks()), "bad.tif", "corrupt|truncated"),
    Case("PNG named .tif", lambda c: c.evaluate(c.raw("photo.tif", b"\x89PNG\r\n\x1a\n" + bytes(64)), c.masks()),
         "photo.tif", "not a TIFF.*PNG"),
    Case("text file", lambda c: c.predict(c.raw("notes.tif", b"hello, this is not an image\n")), "notes.tif",
         "not a TIFF"),
    Case("empty folder of slices", lambda c: c.evaluate((c.tmp / "nothing").mkdir() or c.tmp / "nothing", c.masks()),
         "nothing", "folder is empty"),
    Case("folder with slices of different sizes", lambda c: c.evaluate(_slice_folder(c), c.masks()), "s2.tif",
         "same size"),
    # --- dimensions, channels, values
    Case("2D image where a 3D stack is needed", lambda c: c.train(c.images("one.tif", c.stack[0][0]), c.masks()),
         "one.tif", "shape"),
    Case("2D image and 2D mask: one slice cannot be split",
         lambda c: c.train(c.images("one.tif", c.stack[0][0]), c.masks("onem.tif", c.stack[1][0])),
         "onem.tif", "cannot split 1"),
    Case("4D stack where 3D is expected", lambda c: c.evaluate(c.tiff("t4.tif", np.zeros((2, 3, 8, 8), np.uint8),
                                                                      metadata={"axes": "TZYX"}), c.masks()),
         "t4.tif", "4D"),
    Case("RGB stack", lambda c: c.predict(c.tiff("rgb.tif", np.zeros((4, 32, 32, 3), np.uint8), photometric="rgb")),
         "rgb.tif", "RGB"),
    Case("multi-channel ImageJ stack", lambda c: c.train(c.tiff("chan.tif", np.zeros((4, 2, 32, 32), np.uint8),
                                                                imagej=True, metadata={"axes": "ZCYX"}), c.masks()),
         "chan.tif", "multichannel"),
    Case("NaN pixels", lambda c: c.predict(c.images("nan.tif", np.where(c.stack[0] > 200, np.nan, 1.0).astype(
        np.float32))), "nan.tif", "NaN"),
    Case("Inf pixels", lambda c: c.train(c.images("inf.tif", np.full(SHAPE, np.inf, np.float32)), c.masks()),
         "inf.tif", "NaN/Inf"),
    Case("image and mask of different slice size",
         lambda c: c.train(c.images(), c.masks("small.tif", c.stack[1][:, :16])), "small.tif", "shape"),
    Case("truth and prediction of different slice counts",
         lambda c: c.evaluate(c.masks(), c.masks("short.tif", c.stack[1][:5])), "short.tif", "shape"),
    Case("image intensities outside the model's range", lambda c: c.predict(_big_values(c)), "bright.tif",
         "do not overlap"),
    # --- masks
    Case("float mask with fractions", lambda c: c.train(c.images(), c.masks("frac.tif", c.stack[1] * 0.5)),
         "frac.tif", "fractional"),
    Case("image given as the mask", lambda c: c.train(c.images(), c.masks("m.tif", c.stack[0])), "m.tif",
         "distinct values"),
    Case("mask with one class only", lambda c: c.train(c.images(), c.masks("flat.tif", np.zeros(SHAPE, np.uint8))),
         "flat.tif", "only one class"),
    Case("mask with more classes than the model",
         lambda c: c.train(c.images(), c.masks("five.tif", np.minimum(c.stack[0] // 40, 5)), "--init-model", c.model()),
         "five.tif", r"values \[4, 5\] are not classes of the model"),
    Case("mask values outside the model's class map",
         lambda c: c.train(c.images(), c.masks("m9.tif", np.where(c.stack[1] == 3, 9, c.stack[1])),
                           "--init-model", c.model()), "m9.tif", r"values \[9\] are not classes"),
    Case("fractional prediction for evaluate", lambda c: c.evaluate(c.masks(), c.masks("p.tif", c.stack[1] + 0.25)),
         "p.tif", "fractional"),
    Case("painted strokes on one slice only", _sparse_one_slice, "strokes.tif", "cannot split 1"),
    # --- model files
    Case("model file missing", lambda c: ["predict", "--model", c.tmp / "gone.keras", "--images", c.images(),
                                          "--out", c.tmp / "p.tif"], "gone.keras", "not found"),
    Case("model file corrupt", lambda c: ["predict", "--model", c.raw("junk.keras", b"PK\x03\x04" + bytes(100)),
                                          "--images", c.images(), "--out", c.tmp / "p.tif"], "junk.keras",
         "not a valid .keras"),
    Case("model file that is a TIFF", lambda c: ["predict", "--model", c.images("m.keras"), "--images", c.images(),
                                                 "--out", c.tmp / "p.tif"], "m.keras", "not a valid .keras"),
    Case("init model missing", lambda c: c.train(c.images(), c.masks(), "--init-model", c.tmp / "gone.keras"),
         "gone.keras", "not found"),
    Case("model from another class count",
         lambda c: ["predict", "--model", c.model_copy("three.keras", _other_count), "--images", c.images(),
                    "--out", c.tmp / "p.tif"], "three.keras", "4 output channels"),
    Case("sidecar that does not match its model",
         lambda c: ["predict", "--model", c.model_copy("odd.keras", _wrong_values), "--images", c.images(),
                    "--out", c.tmp / "p.tif"], "odd.json", "3 classes but n_classes=4"),
    Case("sidecar missing", lambda c: ["predict", "--model", (c.model_copy("lone.keras"),
                                                               c.tmp.joinpath("lone.json").unlink())[0],
                                       "--images", c.images(), "--out", c.tmp / "p.tif"], "lone.json", "missing"),
    Case("sidecar corrupt", lambda c: ["predict", "--model", (c.model_copy("broken.keras"), c.tmp.joinpath(
        "broken.json").write_text("{not json"))[0], "--images", c.images(), "--out", c.tmp / "p.tif"],
         "broken.json", "corrupt"),
    Case("model with a Lambda layer (custom code)",
         lambda c: ["predict", "--model", _unsafe_model(c), "--images", c.images(), "--out", c.tmp / "p.tif"],
         "unsafe.keras", "custom code.*refusing"),
    # --- output paths
    Case("output exists", lambda c: c.evaluate(c.masks(), c.masks(), "--json", c.raw("r.json", b"precious")),
         "r.json", "already exists.*--overwrite"),
    Case("output exists (predict)", lambda c: c.predict(c.images(), "old.tif") if c.raw("old.tif", b"old") else [],
         "old.tif", "already exists"),
    Case("output is a directory", lambda c: c.train(c.images(), c.masks(), out="dir.keras")
         if (c.tmp / "dir.keras").mkdir() is None else [], "dir.keras", "is a folder"),
    Case("output folder missing", lambda c: c.predict(c.images(), "no/such/p.tif"), "no/such", "does not exist"),
    Case("output folder not writable", _locked_out, "report.json", "not writable"),
    Case("output would overwrite the input", lambda c: c.predict(c.images(), "images.tif", "--overwrite"),
         "images.tif", "is also an input"),
    Case("model output without .keras", lambda c: c.train(c.images(), c.masks(), out="model.h5"), "model.h5",
         r"must end in \.keras"),
    # --- settings
    Case("zero epochs", lambda c: c.train(c.images(), c.masks(), "--epochs", 0), "epochs", ">= 1"),
    Case("negative batch size", lambda c: c.train(c.images(), c.masks(), "--batch-size", -4), "batch_size", ">= 1"),
    Case("zero predict batch size", lambda c: c.predict(c.images(), "p.tif", "--batch-size", 0), "--batch-size",
         ">= 1"),
    Case("validation fraction 0", lambda c: c.train(c.images(), c.masks(), "--val-fraction", 0), "val_fraction",
         r"\(0, 1\)"),
    Case("validation fraction above 1", lambda c: c.train(c.images(), c.masks(), "--val-fraction", 1.5),
         "val_fraction", r"\(0, 1\)"),
    Case("fractions leave nothing to train on",
         lambda c: c.train(c.images(), c.masks(), "--val-fraction", 0.6, "--test-fraction", 0.5),
         "val_fraction + test_fraction", "below 1"),
    Case("split leaves the training part empty",
         lambda c: c.train(c.images(), c.masks(), "--val-fraction", 0.5, "--test-fraction", 0.45),
         "masks.tif", "cannot split 8.*0 for training"),
    Case("split of 2 slices leaves training empty",
         lambda c: c.train(c.images("i2.tif", c.stack[0][:2]), c.masks("m2.tif", c.stack[1][:2]),
                           "--val-fraction", 0.5, "--test-fraction", 0.3), "m2.tif", "cannot split 2"),
    Case("unknown backbone", lambda c: c.train(c.images(), c.masks(), "--backbone", "vgg99"), "vgg99",
         "not supported"),
    Case("non-numeric option", lambda c: c.train(c.images(), c.masks(), "--epochs", "ten"), "ten", "invalid int"),
]


def _tree(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` -> SHA-256 of its bytes (hidden temp files included)."""
    found = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def run_main(argv: list[Any]) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name.replace(" ", "-"))
def test_refused(case: Case, tmp_path: Path, stack, request, capsys) -> None:
    ctx = Ctx(tmp_path, stack, request)
    argv = case.build(ctx)
    before = _tree(tmp_path, *ctx.watched)
    capsys.readouterr()
    code = run_main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("sandseg: error: "), err
    assert case.names in lines[0], lines[0]
    assert re.search(case.problem, lines[0], re.IGNORECASE), lines[0]
    assert "Traceback" not in out + err
    assert _tree(tmp_path, *ctx.watched) == before, "a file was changed, created or removed"


# ----------------------------------------------------------------------------- accepted


@pytest.fixture(scope="module")
def loaded_model(model_file):
    """The shared model and its sidecar, loaded once for the in-memory reference predictions."""
    from napari_sandseg.model import load_model

    return load_model(model_file)


def _reference(loaded_model, image: np.ndarray) -> np.ndarray:
    """What ``predict_volume`` makes of ``image`` in memory, with the CLI's batch size, in float32.

    float32 because it is exact and repeatable; bfloat16 (``--precision auto`` on some CPUs)
    flips a few near-tie labels of this barely trained model from run to run.
    """
    from napari_sandseg.predict import predict_volume

    model, info = loaded_model
    volume = image if image.ndim == 3 else image[None]
    labels = predict_volume(model, volume, info, batch_size=8, precision="float32").labels
    return info.class_map.decode(labels)


def _predict_ok(ctx: Ctx, image: np.ndarray, name: str, capsys) -> np.ndarray:
    """``sandseg predict`` on ``image`` succeeds, leaves it alone and writes what ``predict_volume`` makes of it."""
    path = ctx.images(name, image)
    before = path.read_bytes()
    assert run_main(ctx.predict(path, "pred.tif", "--precision", "float32")) == 0, capsys.readouterr().err
    assert path.read_bytes() == before
    labels = read_volume(ctx.tmp / "pred.tif")
    expected = _reference(ctx.request.getfixturevalue("loaded_model"), image)
    assert labels.shape == expected.shape
    np.testing.assert_array_equal(labels, expected)
    return labels


ACCEPTED_IMAGES = {
    "16-bit image": lambda img: img.astype(np.uint16) * 4,
    "float32 image": lambda img: img.astype(np.float32) / 255.0 * 255.0,
    "float64 image": lambda img: img.astype(np.float64),
    "signed int16 image": lambda img: img.astype(np.int16) - 60,
    "constant image": lambda img: np.full_like(img, 120),
    "slices 40 x 24 (not multiples of 32)": lambda img: np.pad(img, ((0, 0), (0, 8), (0, 0)), mode="reflect")[:, :, :24],
    "slices 20 x 12 (smaller than 32)": lambda img: img[:, :20, :12],
    "a single 2D slice": lambda img: img[0],
}


@pytest.mark.parametrize("name", list(ACCEPTED_IMAGES))
def test_accepted_images_are_segmented(name: str, tmp_path: Path, stack, request, capsys) -> None:
    ctx = Ctx(tmp_path, stack, request)
    _predict_ok(ctx, ACCEPTED_IMAGES[name](stack[0]), "img.tif", capsys)


def test_float_copy_of_a_uint8_image_is_segmented_like_it(tmp_path: Path, stack, request, capsys) -> None:
    """The same grey values as float64 give the very labels of the uint8 file: the dtype alone changes nothing."""
    ctx = Ctx(tmp_path, stack, request)
    as_uint8 = _predict_ok(ctx, stack[0], "u8.tif", capsys)
    (tmp_path / "f").mkdir()
    as_float = _predict_ok(Ctx(tmp_path / "f", stack, request), stack[0].astype(np.float64), "f64.tif", capsys)
    np.testing.assert_array_equal(as_float, as_uint8)
    assert len(np.unique(as_uint8)) > 1, "the model should not label a real image with one class"


@pytest.mark.parametrize("values", [(1, 2, 3, 4), (0, 85, 170, 255)], ids=["1..4", "0-85-170-255"])
def test_accepted_mask_values_evaluate(values, tmp_path: Path, stack, request, capsys) -> None:
    ctx = Ctx(tmp_path, stack, request)
    truth = np.asarray(values, np.uint8)[stack[1]]
    pred = truth.copy()
    pred[0] = truth[1]
    report = tmp_path / "r.json"
    assert run_main(ctx.evaluate(ctx.masks("t.tif", truth), ctx.masks("p.tif", pred.astype(np.float32)),
                                 "--json", report)) == 0
    assert json.loads(report.read_text())["class_values"] == list(values)


def test_accepted_training_on_16bit_masks_1_to_4_and_odd_size(tmp_path: Path, stack, request, capsys,
                                                               eager_training) -> None:
    """16-bit images, masks 1..4 and 40 x 24 slices train as they are; the model keeps the values."""
    ctx = Ctx(tmp_path, stack, request)
    image = np.pad(stack[0], ((0, 0), (0, 8), (0, 0)), mode="reflect")[:, :, :24].astype(np.uint16) * 200
    masks = (np.pad(stack[1], ((0, 0), (0, 8), (0, 0)), mode="reflect")[:, :, :24] + 1).astype(np.uint16)
    argv = ctx.train(ctx.images("i16.tif", image), ctx.masks("m14.tif", masks), out="m.keras")
    assert run_main(argv) == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["class_map"]["values"] == np.unique(masks).tolist() and min(side["class_map"]["values"]) == 1


def test_accepted_fine_tuning_on_a_subset_of_the_classes(tmp_path: Path, stack, request, capsys,
                                                          eager_training) -> None:
    """Corrections that show only some phases fine-tune the model; its class map is kept."""
    ctx = Ctx(tmp_path, stack, request)
    masks = np.minimum(stack[1], 2)  # classes 0, 1, 2 of the model's 0..3
    argv = ctx.train(ctx.images(), ctx.masks("sub.tif", masks), "--init-model", ctx.model(), out="ft.keras")
    assert run_main(argv) == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "ft.json").read_text())
    assert side["class_map"]["values"] == [0, 1, 2, 3]


def test_accepted_sidecar_of_another_save_warns_but_predicts(tmp_path: Path, stack, request, capsys) -> None:
    """A sidecar whose checksum is stale but whose classes fit: used, with a one-line warning."""
    ctx = Ctx(tmp_path, stack, request)

    def stale(side: dict) -> dict:
        side["model_sha256"] = "0" * 64
        return side

    model = ctx.model_copy("stale.keras", stale)
    assert run_main(["predict", "--model", model, "--images", ctx.images(), "--out", tmp_path / "p.tif"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warning = [ln for ln in err.splitlines() if ln.startswith("sandseg: warning:")]
    assert len(warning) == 1 and "stale.json" in warning[0]


# ----------------------------------------------------------------------------- disk full


def _enospc_after_writing(monkeypatch) -> None:
    """tifffile writes part of the data, then the disk is full."""
    real = tifffile.TiffWriter.write

    def full(self, data, *args, **kwargs):
        real(self, np.asarray(data)[..., :1] if np.ndim(data) >= 2 else data, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", full)


@pytest.mark.parametrize("command", ["sample", "predict"])
def test_disk_full_on_export_keeps_the_previous_file(command, tmp_path: Path, stack, request, capsys,
                                                     monkeypatch) -> None:
    ctx = Ctx(tmp_path, stack, request)
    if command == "sample":
        target = ctx.images("images.tif", stack[0][:2])
        argv = ["sample", "--out", tmp_path, "--slices", 8, "--size", 16, "--overwrite"]
    else:
        target = ctx.masks("pred.tif", stack[1][:2])
        argv = ctx.predict(ctx.images("in.tif"), "pred.tif", "--overwrite")
    before = _tree(tmp_path)
    _enospc_after_writing(monkeypatch)
    assert run_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk is full" in err[0] and target.name in err[0], err
    assert {k: v for k, v in _tree(tmp_path).items() if k in before} == before  # old file intact
    assert set(_tree(tmp_path)) <= set(before), "a temp or partial file was left behind"


def test_file_size_limit_in_the_real_console_script(tmp_path: Path, stack) -> None:
    """A real write failure (RLIMIT_FSIZE, like a full disk): one line, old file intact, no temp."""
    import resource
    import signal

    old = write_volume(tmp_path / "images.tif", stack[0][:2])
    before = old.read_bytes()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = subprocess.run(
        [sys.executable, "-m", "napari_sandseg.cli", "sample", "--out", str(tmp_path), "--slices", "64",
         "--size", "128", "--overwrite"], capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("sandseg: error: ") and "images.tif" in line and "file-size limit" in line
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tif"]


# ----------------------------------------------------------------------------- console script


@pytest.mark.parametrize("args", [
    lambda t: ["evaluate", "--truth", str(t / "empty.tif"), "--pred", str(t / "empty.tif")],
    lambda t: ["train", "--images", str(t / "empty.tif"), "--masks", str(t / "empty.tif"), "--out",
               str(t / "m.keras"), "--epochs", "0"],
    lambda t: ["sample", "--out", str(t / "empty.tif")],
], ids=["empty-file", "zero-epochs", "output-not-a-folder"])
def test_console_script_prints_one_line_and_no_traceback(args, tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    exe = shutil.which("sandseg")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_sandseg.cli"]
    proc = subprocess.run(cmd + args(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("sandseg:")]
    assert len(lines) == 1 and lines[0].startswith("sandseg: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]
