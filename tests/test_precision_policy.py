"""Precision is an explicit choice: Keras' global policy is never changed behind a caller's back,
and "auto" is decided by one function for the command line and the engine process alike."""

from __future__ import annotations

import numpy as np
import pytest

import napari_sandseg.choices as choices_module
from napari_sandseg.choices import AUTO, resolve_precision
from napari_sandseg.classmap import ClassMap
from napari_sandseg.config import TrainConfig
from napari_sandseg.engine_requests import DeviceRequest
from napari_sandseg.engine_server import JobControl, device_job
from napari_sandseg.errors import ConfigError
from napari_sandseg.predict import predict_volume, resolve_predict_precision
from napari_sandseg.sample import make_sandstone
from napari_sandseg.train import train

from _helpers import drain


def _policy() -> str:
    from napari_sandseg._tf import keras

    return keras().mixed_precision.global_policy().name


@pytest.fixture
def fake_gpu(monkeypatch):
    """TensorFlow reports one GPU (no real one needed); memory-growth calls are recorded."""
    from napari_sandseg._tf import tf

    config = tf().config
    gpu = config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    real = config.list_physical_devices
    monkeypatch.setattr(config, "list_physical_devices",
                        lambda kind=None: [gpu] if kind == "GPU" else real(kind))
    grown: list = []
    monkeypatch.setattr(config.experimental, "set_memory_growth", lambda device, on: grown.append((device, on)))
    monkeypatch.setattr(config.experimental, "get_device_details", lambda device: {"device_name": "Fake GPU"})
    return grown


def test_the_engine_device_setup_on_a_gpu_sets_no_global_policy(fake_gpu):
    assert _policy() == "float32"
    _, described = drain(device_job(DeviceRequest(), JobControl()))
    assert described == "GPU: Fake GPU"
    assert fake_gpu and all(on for _, on in fake_gpu)  # memory growth asked for
    assert _policy() == "float32"  # was mixed_float16 in the engine only, before issue 13


@pytest.mark.parametrize("bf16, gpu, expected", [
    (True, True, "float32"), (True, False, "mixed_bfloat16"), (False, True, "float32"), (False, False, "float32"),
])
def test_training_and_prediction_decide_auto_alike(monkeypatch, request, bf16, gpu, expected):
    if gpu:
        request.getfixturevalue("fake_gpu")
    else:
        from napari_sandseg._tf import tf

        monkeypatch.setattr(tf().config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(choices_module, "native_bf16", lambda: bf16)
    from napari_sandseg._tf import has_gpu

    # What train.train does (sandseg train and the engine's train job run it), and what every
    # prediction path does (sandseg predict, predict_file, the engine's predict jobs).
    assert TrainConfig(precision=AUTO).resolve_precision(gpu=has_gpu()).precision == expected
    assert resolve_predict_precision(AUTO) == expected
    assert resolve_precision(AUTO, has_gpu) == expected
    for chosen in ("float32", "mixed_bfloat16"):
        assert resolve_precision(chosen, has_gpu) == chosen == resolve_predict_precision(chosen)


def test_an_unknown_precision_is_refused_in_one_wording():
    message = r"precision='float16' is not supported; choose one of \['float32', 'mixed_bfloat16', 'auto'\]"
    with pytest.raises(ConfigError, match=message):
        resolve_precision("float16", lambda: False)
    with pytest.raises(ConfigError, match=message):
        resolve_predict_precision("float16")


@pytest.mark.slow
def test_training_and_prediction_leave_the_global_policy_float32(tmp_path):
    images, labels = make_sandstone((8, 64, 64), seed=5)
    assert _policy() == "float32"
    config = TrainConfig(backbone="resnet18", epochs=1, batch_size=2, val_fraction=0.2, test_fraction=0.0,
                         precision="mixed_bfloat16", run_eagerly=True)
    _, result = drain(train(images, labels, ClassMap((0, 1, 2, 3)), config, tmp_path / "m.keras"))
    assert _policy() == "float32"
    for precision in ("mixed_bfloat16", "float32"):
        out = predict_volume(result.model, images[:2], result.info, precision=precision, probabilities=True)
        assert out.probabilities.dtype == np.float32
        assert _policy() == "float32"


def test_models_keep_their_own_policy_whatever_the_global_one(monkeypatch):
    from napari_sandseg._tf import keras
    from napari_sandseg.model import build_model, model_precision, to_precision

    k = keras()
    k.mixed_precision.set_global_policy("mixed_float16")  # as a user's script might
    try:
        model = build_model("resnet18", 4)
        assert model.dtype_policy.name == "float32" == model_precision(model)  # compile adds no loss scaling
        twin = to_precision(model, "mixed_bfloat16")
        assert twin.dtype_policy.name == "mixed_bfloat16" == model_precision(twin)
        assert _policy() == "mixed_float16"  # the caller's policy is left as it was
    finally:
        k.mixed_precision.set_global_policy("float32")
