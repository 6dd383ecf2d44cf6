"""Prediction precision: float32 (exact, the library default), mixed bfloat16, and "auto"."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sandseg.choices as choices_module
import napari_sandseg.model as model_module
import napari_sandseg.segmentation_model as segmentation_model
from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.errors import ConfigError
from napari_sandseg.io import read_volume, write_volume
from napari_sandseg.model import ModelInfo, build_model, model_precision, save_model
from napari_sandseg.file_prediction import predict_file
from napari_sandseg.predict import model_at, predict_volume, resolve_predict_precision

CLASS_MAP = ClassMap((0, 1, 2, 3))
INFO = ModelInfo(config={}, class_map=CLASS_MAP, normalization=Normalization(0.0, 255.0), backbone="resnet18",
                 n_classes=4)


def _batch_norms(model) -> list:
    """The batch-norm layers of ``model``, nested models included."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found += _batch_norms(layer)
        elif hasattr(layer, "moving_mean"):
            found.append(layer)
    return found


@pytest.fixture(scope="module")
def trained(tiny_sandstone):
    """``(model, held-out images)``: a resnet18 fitted for ~10 s on 12 slices (92 % pixel accuracy).

    An untrained model's probabilities are close to ties everywhere, so any rounding would flip
    labels: agreement figures need a model that has learned something. Its batch-norm moving
    statistics are then set from one pass over the training slices (momentum 0), so inference
    uses statistics of the data instead of 36 steps' worth of the initial 0/1.
    """
    from napari_sandseg._tf import keras, tf

    tf().keras.utils.set_random_seed(0)
    images, labels = tiny_sandstone
    x = (images.astype(np.float32) / 255.0)[..., None]
    model = build_model("resnet18", 4)
    model.compile(keras().optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x[:12], labels[:12], batch_size=4, epochs=12, verbose=0)
    for layer in _batch_norms(model):
        layer.momentum = 0.0
    model(x[:12], training=True)
    return model, images[12:], labels[12:]


@pytest.mark.parametrize("bf16, gpu, expected", [
    (True, False, "mixed_bfloat16"), (True, True, "float32"), (False, False, "float32"), (False, True, "float32"),
])
def test_auto_is_bfloat16_only_on_a_native_bf16_cpu_without_gpu(monkeypatch, bf16, gpu, expected):
    monkeypatch.setattr(choices_module, "native_bf16", lambda: bf16)
    assert resolve_predict_precision("auto", gpu=gpu) == expected
    for chosen in ("float32", "mixed_bfloat16"):  # explicit choices are kept whatever the machine
        assert resolve_predict_precision(chosen, gpu=gpu) == chosen


def test_auto_asks_tensorflow_for_a_gpu_only_on_a_bf16_cpu(monkeypatch):
    monkeypatch.setattr(choices_module, "native_bf16", lambda: False)
    assert resolve_predict_precision() == "float32"
    monkeypatch.setattr(choices_module, "native_bf16", lambda: True)
    from napari_sandseg._tf import tf

    has_gpu = bool(tf().config.list_physical_devices("GPU"))
    assert resolve_predict_precision() == ("float32" if has_gpu else "mixed_bfloat16")


def test_a_bad_precision_is_refused():
    with pytest.raises(ConfigError, match=r"precision='float16' is not supported; choose one of \['float32', 'mixed_bfloat16', 'auto'\]"):
        resolve_predict_precision("float16")


def test_bfloat16_agrees_with_float32_and_returns_float32_probabilities(trained):
    model, images, truth = trained
    exact = predict_volume(model, images, INFO, probabilities=True, uncertainty=True)
    fast = predict_volume(model, images, INFO, probabilities=True, uncertainty=True, precision="mixed_bfloat16")
    assert (exact.labels == truth).mean() > 0.85  # the model has learned the phases
    assert fast.probabilities.dtype == fast.uncertainty.dtype == np.float32
    assert (fast.labels == exact.labels).mean() >= 0.99  # measured: 99.93 %
    # bfloat16 keeps 8 significant bits, so each activation is rounded by up to 2^-9 (0.2 %);
    # through the Unet's ~40 layers that moves probabilities by 6e-4 on average and 0.037 at
    # worst (measured, 16 384 pixels). The bounds leave 3x-8x room for other CPUs' kernels.
    diff = np.abs(fast.probabilities - exact.probabilities)
    assert diff.mean() < 5e-3 and diff.max() < 0.1
    # The softmax itself is float32, so probabilities are normalised, not rounded to bfloat16 steps.
    np.testing.assert_allclose(fast.probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(fast.labels, fast.probabilities.argmax(-1))


def test_the_twin_is_cached_and_the_model_is_unchanged(trained, monkeypatch):
    model, images, _ = trained
    calls = []
    real = model_module.to_precision
    monkeypatch.setattr(segmentation_model, "to_precision", lambda m, p, **kw: calls.append(p) or real(m, p, **kw))
    weights = [w.copy() for w in model.get_weights()]
    segmentation_model._DERIVED.pop(model, None)  # twin built afresh here, whatever ran before
    first = predict_volume(model, images[:2], INFO, precision="mixed_bfloat16").labels
    second = predict_volume(model, images[:2], INFO, precision="mixed_bfloat16").labels
    assert calls == ["mixed_bfloat16"]  # built once, reused by the second call
    np.testing.assert_array_equal(first, second)
    assert model_at(model, "mixed_bfloat16") is model_at(model, "mixed_bfloat16")
    assert model_at(model, "float32") is model  # float32 uses the model itself
    assert model_precision(model) == "float32" and model_precision(model_at(model, "mixed_bfloat16")) == "mixed_bfloat16"
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert len(model.weights) == len(weights)  # the twin is not tracked as a part of the model
    assert not [name for name in vars(model) if name.startswith("_sandseg")]  # nothing set on the Keras object


def test_the_twin_follows_weights_changed_after_it_was_built(trained):
    model, images, _ = trained
    model_at(model, "mixed_bfloat16")  # the twin exists
    saved = model.get_weights()
    try:
        model.set_weights([np.zeros_like(w) if w.ndim == 4 else w for w in saved])  # zero every conv kernel
        twin = model_at(model, "mixed_bfloat16")
        for a, b in zip(model.get_weights(), twin.get_weights()):
            np.testing.assert_array_equal(a, b)
    finally:
        model.set_weights(saved)
    assert all(np.array_equal(a, b) for a, b in zip(saved, model_at(model, "mixed_bfloat16").get_weights()))


def test_predict_file_with_a_precision_writes_the_labels(trained, tmp_path):
    model, images, _ = trained
    model_path = save_model(model, tmp_path / "m.keras", INFO)
    write_volume(tmp_path / "scan.tif", images)
    out = predict_file(model_path, tmp_path / "scan.tif", tmp_path / "labels.tif", precision="mixed_bfloat16")
    expected = predict_volume(model, images, INFO, precision="mixed_bfloat16").labels
    assert (read_volume(out) == expected).mean() >= 0.99  # the loaded model is another (equal) object
    with pytest.raises(ConfigError, match="precision"):
        predict_file(model_path, tmp_path / "scan.tif", tmp_path / "other.tif", precision="bf16")
    assert not (tmp_path / "other.tif").exists()


def test_cli_precision_flag_defaults_to_auto_and_refuses_bad_values(capsys, tmp_path):
    from napari_sandseg.cli import build_parser, main

    base = ["predict", "--model", "m.keras", "--images", "i.tif", "--out", "o.tif"]
    assert build_parser().parse_args(base).precision == "auto"
    for value in ("float32", "mixed_bfloat16", "auto"):
        assert build_parser().parse_args([*base, "--precision", value]).precision == value
    with pytest.raises(SystemExit) as exc:
        main([*base, "--precision", "half"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sandseg: error: argument --precision: invalid choice: 'half'"), err
