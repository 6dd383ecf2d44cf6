"""Building, saving and loading model artefacts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.errors import ConfigError, InputError, ModelError, OutputError
from napari_sandseg.model import (
    SUPPORTED_BACKBONES,
    ModelInfo,
    build_model,
    check_compatible,
    load_model,
    save_model,
    sidecar_path,
)

CLASS_MAP = ClassMap((0, 85, 170, 255))


def make_info(n_classes=4, backbone="resnet18") -> ModelInfo:
    cmap = CLASS_MAP if n_classes == 4 else ClassMap(tuple(range(n_classes)))
    return ModelInfo(
        config={"backbone": backbone}, class_map=cmap, normalization=Normalization(10.0, 200.0),
        history={"loss": [1.0, 0.5]}, metrics={"mean_iou": 0.5, "per_class_iou": [0.5, None]},
        backbone=backbone, n_classes=n_classes,
    )


@pytest.fixture(scope="module")
def model():
    return build_model("resnet18", 4)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    save_model(model, path, make_info())
    return path


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)


def test_build_model_shapes(model):
    assert tuple(model.inputs[0].shape) == (None, None, None, 1)
    assert model.outputs[0].shape[-1] == 4
    out = model(np.zeros((1, 64, 96, 1), np.float32), training=False).numpy()
    assert out.shape == (1, 64, 96, 4)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_supported_backbones_cover_the_required_ones():
    assert {"resnet18", "resnet34", "resnet50", "efficientnetb0"} <= set(SUPPORTED_BACKBONES)


def test_build_model_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="seresnet18"):
        build_model("seresnet18")
    with pytest.raises(ConfigError, match="n_classes"):
        build_model("resnet18", 1)
    with pytest.raises(ConfigError, match="encoder_weights"):
        build_model("resnet18", 4, encoder_weights="coco")


def test_keras_cache_dirs_start_with_keras_home(tmp_path, monkeypatch):
    from napari_sandseg import model as model_module

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert model_module._keras_cache_dirs()[0] == tmp_path


def test_imagenet_weights_missing_fail_fast_and_clearly(tmp_path, monkeypatch):
    # Both cache folders are the test's own and empty: a real /tmp/.keras (the second place
    # Keras looks) holding the resnet34 file must not change the outcome.
    from napari_sandseg import model as model_module

    caches = [tmp_path / "keras_home", tmp_path / "tmp_keras"]
    monkeypatch.setattr(model_module, "_keras_cache_dirs", lambda: caches)
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        build_model("resnet34", 4, encoder_weights="imagenet")
    assert time.monotonic() - start < 5  # no download attempt / network timeout
    msg = str(err.value)
    assert "resnet34_imagenet_1000_no_top.h5" in msg and "encoder_weights=None" in msg
    assert all(str(d / "models") in msg for d in caches)


def test_save_load_roundtrip(model, saved, x):
    loaded, info = load_model(saved)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)
    assert info.class_map == CLASS_MAP
    assert info.normalization == Normalization(10.0, 200.0)
    assert info.history == {"loss": [1.0, 0.5]} and info.metrics["per_class_iou"] == [0.5, None]
    assert info.backbone == "resnet18" and info.n_classes == 4
    side = json.loads(sidecar_path(saved).read_text())
    for key in ("format_version", "config", "class_map", "class_names", "normalization", "history",
                "metrics", "backbone", "n_classes", "versions", "created", "model_sha256"):
        assert key in side, key
    assert side["class_names"] == list(CLASS_MAP.names)
    assert {"napari_sandseg", "tensorflow", "keras", "segmentation_models"} <= set(side["versions"])
    assert [p.name for p in saved.parent.iterdir() if "tmp" in p.name] == []  # no temp files left


def test_save_refuses_bad_targets(model, tmp_path):
    with pytest.raises(OutputError, match=r"\.keras"):
        save_model(model, tmp_path / "m.h5", make_info())
    path = tmp_path / "m.keras"
    save_model(model, path, make_info())
    with pytest.raises(OutputError, match="exists"):
        save_model(model, path, make_info(), overwrite=False)
    with pytest.raises(ModelError, match="n_classes=3"):
        save_model(model, tmp_path / "other.keras", make_info(n_classes=3))


def test_compiled_model_is_saved_without_optimizer_state(model, tmp_path, x):
    import keras

    from napari_sandseg.model import plain_copy

    compiled = plain_copy(model)
    compiled.compile(optimizer=keras.optimizers.Adam(), loss=lambda a, b: a)  # unserialisable loss
    path = save_model(compiled, tmp_path / "c.keras", make_info())
    loaded, _ = load_model(path)  # loads although the loss could not be deserialised
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_load_missing_and_corrupt_files(saved, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing.keras")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"\x00\xffnot a zip at all" * 100)
    with pytest.raises(ModelError, match="not a valid .keras"):
        load_model(garbage)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    sidecar_path(truncated).write_text(sidecar_path(saved).read_text())
    with pytest.raises(ModelError, match="truncated.keras"):
        load_model(truncated)


def _copy_pair(saved, tmp_path, name="copy"):
    dst = tmp_path / f"{name}.keras"
    dst.write_bytes(saved.read_bytes())
    sidecar_path(dst).write_text(sidecar_path(saved).read_text())
    return dst


def test_load_missing_or_corrupt_sidecar(saved, tmp_path):
    path = _copy_pair(saved, tmp_path)
    side = sidecar_path(path)
    side.unlink()
    with pytest.raises(ModelError, match="sidecar.*missing"):
        load_model(path)
    side.write_text("{ not json")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(path)
    side.write_text(json.dumps({"backbone": "resnet18"}))
    with pytest.raises(ModelError, match="corrupt or incomplete"):
        load_model(path)
    data = json.loads(sidecar_path(saved).read_text())
    data["format_version"] = 99
    side.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="format version 99"):
        load_model(path)


def test_sidecar_with_wrong_n_classes_is_refused(saved, tmp_path):
    path = _copy_pair(saved, tmp_path)
    data = json.loads(sidecar_path(path).read_text())
    data["n_classes"] = 3
    data["class_map"] = ClassMap((0, 1, 2)).to_dict()
    sidecar_path(path).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="n_classes=3.*4 output channels"):
        load_model(path)


def test_sidecar_of_another_file_version_warns(saved, tmp_path):
    path = _copy_pair(saved, tmp_path)
    data = json.loads(sidecar_path(path).read_text())
    data["model_sha256"] = "0" * 64
    sidecar_path(path).write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="different version"):
        _, info = load_model(path)
    assert any("different version" in n for n in info.notes)


def test_lambda_layer_model_is_refused(tmp_path):
    import keras

    inp = keras.Input((None, None, 1))
    hidden = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Conv2D(4, 1, activation="softmax")(hidden)
    unsafe = keras.Model(inp, out)
    path = save_model(unsafe, tmp_path / "unsafe.keras", make_info())
    with pytest.raises(ModelError, match="custom code.*cannot be loaded safely"):
        load_model(path)


def test_weights_only_fallback_when_keras_cannot_rebuild(saved, x, model, monkeypatch):
    import keras

    def broken(*args, **kwargs):
        raise TypeError("cannot deserialize this layer")

    monkeypatch.setattr(keras.models, "load_model", broken)
    loaded, info = load_model(saved)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_check_compatible():
    info = make_info()
    check_compatible(info, np.full((3, 20, 20), 100, np.uint8), CLASS_MAP)
    check_compatible(info, np.full((20, 20), 100, np.uint8))
    with pytest.raises(ModelError, match=r"\[0, 1, 2, 3\].*\[0, 85, 170, 255\]"):
        check_compatible(info, class_map=ClassMap((0, 1, 2, 3)))
    with pytest.raises(InputError, match="shape"):
        check_compatible(info, np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="do not overlap"):
        check_compatible(info, np.full((3, 8, 8), 60000, np.uint16))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet34", "resnet50", "efficientnetb0"])
def test_required_backbones_save_and_load_in_safe_mode(backbone, tmp_path):
    m = build_model(backbone, 3)
    info = ModelInfo(config={}, class_map=ClassMap((0, 1, 2)), normalization=Normalization(0, 1),
                     backbone=backbone, n_classes=3)
    path = save_model(m, tmp_path / f"{backbone}.keras", info)
    xb = np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32)
    loaded, loaded_info = load_model(path)
    np.testing.assert_allclose(loaded(xb, training=False).numpy(), m(xb, training=False).numpy(), atol=1e-5)
    assert loaded_info.backbone == backbone


def test_save_removes_temp_files_of_killed_saves(model, tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now belongs to no process
    stale = tmp_path / f".m.{dead.pid}.7f00.tmp.keras"
    stale.write_bytes(b"half written")
    save_model(model, tmp_path / "m.keras", make_info())
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.keras"]


# --- mixed precision -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_model():
    from napari_sandseg._tf import tf

    tf().keras.utils.set_random_seed(0)  # the same weights whichever tests ran before
    return build_model("resnet18", 4, precision="mixed_bfloat16")


def test_mixed_bfloat16_model_computes_in_bf16_with_float32_output_and_leaks_no_policy(bf16_model, x):
    import keras

    from napari_sandseg.model import OUTPUT_CAST, model_precision

    assert keras.mixed_precision.global_policy().name == "float32"
    assert model_precision(bf16_model) == "mixed_bfloat16"
    convs = [layer for layer in bf16_model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(c.compute_dtype == "bfloat16" and c.kernel.dtype == "float32" for c in convs)
    assert bf16_model.layers[-1].name == OUTPUT_CAST
    out = bf16_model(x, training=False)
    assert out.dtype == "float32" and tuple(out.shape) == (2, 64, 64, 4)
    assert model_precision(build_model("resnet18", 4)) == "float32"  # the next model is float32 again
    with pytest.raises(ConfigError, match="precision"):
        build_model("resnet18", 4, precision="float16")


def test_bfloat16_model_saves_as_float32_and_reloads_with_the_same_weights(bf16_model, tmp_path, x):
    from napari_sandseg.model import model_precision, to_precision

    info = make_info()
    info.config = {"backbone": "resnet18", "precision": "mixed_bfloat16"}
    path = save_model(bf16_model, tmp_path / "bf16.keras", info)
    loaded, _ = load_model(path)
    assert model_precision(loaded) == "float32"
    for a, b in zip(loaded.get_weights(), bf16_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # bfloat16 keeps ~3 significant digits, and its rounding compounds through 18 layers: the
    # float32 copy's probabilities agree to ~0.003 on average, a rare pixel to ~0.05 (measured
    # over 4 seeds of untrained weights: mean 0.0015-0.0033, 99.9th percentile 0.014-0.033).
    diff = np.abs(loaded(x, training=False).numpy() - bf16_model(x, training=False).numpy())
    assert diff.mean() < 0.01 and np.percentile(diff, 99.9) < 0.05, (diff.mean(), np.percentile(diff, 99.9))
    again = to_precision(loaded, "mixed_bfloat16")  # fine-tuning a saved model in bfloat16
    assert model_precision(again) == "mixed_bfloat16" and len(again.layers) == len(bf16_model.layers)
    np.testing.assert_allclose(again(x, training=False).numpy(), bf16_model(x, training=False).numpy(), atol=1e-6)


def test_weights_only_fallback_keeps_the_output_cast_layer(bf16_model, tmp_path, x, monkeypatch):
    import keras

    info = make_info()
    info.config = {"backbone": "resnet18", "precision": "mixed_bfloat16"}
    path = save_model(bf16_model, tmp_path / "fb.keras", info)
    expected = load_model(path)[0](x, training=False).numpy()

    def broken(*args, **kwargs):
        raise TypeError("cannot deserialize this layer")

    monkeypatch.setattr(keras.models, "load_model", broken)
    loaded, _ = load_model(path)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, atol=1e-6)


def test_nan_in_the_history_survives_the_sidecar(model, tmp_path):
    info = make_info()
    info.history = {"loss": [1.0, 0.5], "val_mean_iou": [0.4, float("nan")]}  # a cancelled epoch is unscored
    path = save_model(model, tmp_path / "n.keras", info)
    assert json.loads(sidecar_path(path).read_text())["history"]["val_mean_iou"] == [0.4, None]  # strict JSON
    history = load_model(path)[1].history
    assert history["val_mean_iou"][0] == 0.4 and np.isnan(history["val_mean_iou"][1])
