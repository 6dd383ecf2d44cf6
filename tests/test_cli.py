"""The ``sandseg`` command line: the whole headless loop, and its error contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sandseg.cli import main
from napari_sandseg.io import read_volume, write_volume
from napari_sandseg.metrics import evaluate


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    assert run_cli("sample", "--out", out, "--slices", 12, "--size", 64, "--seed", 3) == 0
    return out


#: Enough steps (4 epochs of 4 batches, ~25 s) for the model to learn the synthetic phases;
#: one epoch of 2 batches scores no better than labelling everything quartz.
TRAIN_EPOCHS = 4


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("model") / "model.keras"
    code = run_cli(
        "train", "--images", sample_dir / "images.tif", "--masks", sample_dir / "masks.tif",
        "--out", model, "--backbone", "resnet18", "--epochs", TRAIN_EPOCHS, "--batch-size", 2,
        "--val-fraction", 0.2, "--test-fraction", 0.2,
    )
    assert code == 0
    return model


def _predict(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Labels of a saved model on ``images``, in float32 (exact, repeatable)."""
    from napari_sandseg.model import load_model
    from napari_sandseg.predict import predict_volume

    model, info = load_model(model_path)
    return info.class_map.decode(predict_volume(model, images, info).labels)


def test_sample_writes_a_stack_with_four_classes(sample_dir):
    images = read_volume(sample_dir / "images.tif")
    masks = read_volume(sample_dir / "masks.tif")
    assert images.shape == masks.shape == (12, 64, 64)
    assert set(np.unique(masks).tolist()) == {0, 1, 2, 3}


@pytest.mark.slow
def test_train_writes_model_and_sidecar_with_held_out_metrics(trained):
    assert trained.is_file()
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    assert sidecar["class_map"]["values"] == [0, 1, 2, 3]
    assert sidecar["config"]["backbone"] == "resnet18"
    assert sidecar["config"]["epochs"] == TRAIN_EPOCHS
    loss = sidecar["history"]["loss"]
    assert len(loss) == TRAIN_EPOCHS and loss[-1] < 0.8 * loss[0], loss
    # Held-out slices: far better than labelling every pixel with the most common phase
    # (measured: pixel accuracy 0.84 vs 0.49, mean IoU 0.45 vs 0.12).
    metrics = sidecar["metrics"]
    majority = max(metrics["phase_fractions"])
    assert metrics["n_slices"] == 2
    assert metrics["pixel_accuracy"] > majority + 0.15, (metrics["pixel_accuracy"], majority)
    assert metrics["mean_iou"] > majority / 4 + 0.15, (metrics["mean_iou"], majority / 4)


@pytest.mark.slow
def test_predict_then_evaluate_json_matches_engine(trained, sample_dir, tmp_path, capsys):
    pred = tmp_path / "pred.tif"
    probs = tmp_path / "probs.tif"
    assert run_cli("predict", "--model", trained, "--images", sample_dir / "images.tif",
                   "--out", pred, "--probabilities", probs) == 0
    labels = read_volume(pred)
    assert labels.shape == (12, 64, 64)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
    p = tifffile.imread(probs)
    assert p.shape == (12, 64, 64, 4)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(p.argmax(axis=-1), labels)

    report_path = tmp_path / "report.json"
    capsys.readouterr()
    assert run_cli("evaluate", "--truth", sample_dir / "masks.tif", "--pred", pred, "--json", report_path) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "quartz" in printed
    report = json.loads(report_path.read_text())
    for key in ("per_class_iou", "mean_iou", "pixel_accuracy", "dice", "confusion_matrix",
                "phase_fractions", "class_values"):
        assert key in report
    truth = read_volume(sample_dir / "masks.tif")
    expected = evaluate(truth, labels, 4)
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert report["class_values"] == [0, 1, 2, 3]
    assert np.asarray(report["confusion_matrix"]).sum() == truth.size


@pytest.mark.slow
def test_fine_tune_learns_the_corrected_labels(trained, sample_dir, tmp_path):
    """Corrections that relabel every pore as quartz: the fine-tuned model follows them.

    Measured: the init model calls 7 % of the pores quartz, the fine-tuned one 86 %.
    """
    images = read_volume(sample_dir / "images.tif")
    truth = read_volume(sample_dir / "masks.tif")
    edited = truth.copy()
    edited[truth == 0] = 2
    write_volume(tmp_path / "edited.tif", edited)
    tuned = tmp_path / "tuned.keras"
    assert run_cli("train", "--images", sample_dir / "images.tif", "--masks", tmp_path / "edited.tif",
                   "--out", tuned, "--backbone", "resnet18", "--epochs", 2, "--batch-size", 2,
                   "--val-fraction", 0.2, "--test-fraction", 0.2, "--init-model", trained) == 0
    side = json.loads(tuned.with_suffix(".json").read_text())
    assert side["class_map"]["values"] == [0, 1, 2, 3]  # the init model's classes, though 0 is gone
    pores = truth == 0
    before = (_predict(trained, images)[pores] == 2).mean()
    after = (_predict(tuned, images)[pores] == 2).mean()
    assert before < 0.3 and after > before + 0.4, (before, after)


def test_evaluate_keeps_original_class_values(tmp_path, capsys):
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[:, :4] = 255
    truth[:, 4:6] = 85
    pred = truth.copy()
    pred[0, 0, 0] = 170  # a class only the prediction has
    write_volume(tmp_path / "t.tif", truth)
    write_volume(tmp_path / "p.tif", pred)
    assert run_cli("evaluate", "--truth", tmp_path / "t.tif", "--pred", tmp_path / "p.tif",
                   "--json", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["class_values"] == [0, 85, 170, 255]
    assert report["per_class_iou"][2] == 0.0  # predicted once, never true: IoU 0, not NaN
    assert report["per_class_iou"][1] == 1.0


def test_existing_output_is_refused_and_untouched(sample_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    out.write_text("precious")
    code = run_cli("evaluate", "--truth", sample_dir / "masks.tif", "--pred", sample_dir / "masks.tif", "--json", out)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sandseg: error: ") and str(out) in err and "--overwrite" in err
    assert out.read_text() == "precious"


def test_missing_input_names_the_file(tmp_path, capsys):
    code = run_cli("evaluate", "--truth", tmp_path / "nope.tif", "--pred", tmp_path / "nope2.tif")
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.tif" in err and "not found" in err


def test_bad_setting_is_one_line_exit_2(sample_dir, tmp_path, capsys):
    code = run_cli("train", "--images", sample_dir / "images.tif", "--masks", sample_dir / "masks.tif",
                   "--out", tmp_path / "m.keras", "--epochs", 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sandseg: error:") and "epochs" in err[0]
    assert not (tmp_path / "m.keras").exists()


def test_installed_command_prints_no_traceback(tmp_path):
    """The real console script: usage mistakes and bad files are one line, exit 2."""
    for args in (["train"], ["evaluate", "--truth", str(tmp_path / "x.tif"), "--pred", str(tmp_path / "y.tif")]):
        proc = subprocess.run([sys.executable, "-m", "napari_sandseg.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("sandseg: error:")


# --- recipe flags -----------------------------------------------------------------------------


def _parsed_config(*flags: str):
    from napari_sandseg.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--images", "i.tif", "--masks", "m.tif", "--out", "m.keras", *flags])
    return _train_config(args)


def test_recipe_flags_override_the_preset():
    from napari_sandseg.config import TrainConfig

    assert _parsed_config() == TrainConfig.default()
    cfg = _parsed_config("--warmup-epochs", "3", "--monitor", "val_loss", "--precision", "float32",
                         "--crops-per-epoch", "100")
    assert (cfg.warmup_epochs, cfg.monitor, cfg.precision, cfg.crops_per_epoch) == (3, "val_loss", "float32", 100)
    assert _parsed_config("--crops-per-epoch", "none").crops_per_epoch is None
    classic = _parsed_config("--preset", "classic", "--warmup-epochs", "1", "--monitor", "val_mean_iou",
                             "--precision", "auto")
    assert classic == TrainConfig.classic(warmup_epochs=1, monitor="val_mean_iou", precision="auto")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--warmup-epochs", "-1"], "warmup_epochs must be an integer >= 0"),
        (["--crops-per-epoch", "0"], "crops_per_epoch must be an integer >= 1"),
        (["--preset", "classic", "--crops-per-epoch", "10"], "crops_per_epoch=10 needs random crops"),
        (["--monitor", "accuracy"], "argument --monitor: invalid choice: 'accuracy'"),
        (["--precision", "float16"], "argument --precision: invalid choice: 'float16'"),
        (["--crops-per-epoch", "many"], "expected a whole number or 'none', got 'many'"),
    ],
)
def test_bad_recipe_flags_are_one_line_exit_2(sample_dir, tmp_path, capsys, flags, message):
    try:
        code = run_cli("train", "--images", sample_dir / "images.tif", "--masks", sample_dir / "masks.tif",
                       "--out", tmp_path / "m.keras", *flags)
    except SystemExit as exc:  # argparse's own checks exit from parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sandseg: error:") and message in err[0], err
    assert not (tmp_path / "m.keras").exists()
