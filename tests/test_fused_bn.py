"""The fused batch norm computes what Keras' BatchNormalization computes, and never reaches a file."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from napari_sandseg import fused_bn


@pytest.fixture(scope="module")
def tfk():
    from napari_sandseg._tf import keras, tf

    return tf(), keras()


def _pair(keras, channels: int, momentum: float = 0.9):
    """A Keras BatchNormalization and a fused one with identical, non-trivial weights."""
    rng = np.random.default_rng(1)
    plain = keras.layers.BatchNormalization(momentum=momentum)
    fused = fused_bn.layer_class()(momentum=momentum)
    gamma = rng.normal(1.0, 0.5, channels).astype(np.float32)
    beta = rng.normal(0.0, 0.5, channels).astype(np.float32)
    for layer in (plain, fused):
        layer.build((None, None, None, channels))
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return plain, fused


def _run(tf, layer, x, w):
    """Training-mode output, gradients (input, gamma, beta), moving stats, inference output."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * w)
    grads = tape.gradient(loss, [xt, layer.gamma, layer.beta])
    return {
        "y": y.numpy(),
        "dx": grads[0].numpy(),
        "dgamma": grads[1].numpy(),
        "dbeta": grads[2].numpy(),
        "moving_mean": layer.moving_mean.numpy(),
        "moving_variance": layer.moving_variance.numpy(),
        "inference": layer(xt, training=False).numpy(),
    }


def test_fused_layer_matches_keras_batchnorm(tfk):
    tf, keras = tfk
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (3, 10, 12, 6)).astype(np.float32)
    w = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    plain, fused = _pair(keras, 6)
    a, b = _run(tf, plain, x, w), _run(tf, fused, x, w)
    for key in a:
        scale = max(1.0, float(np.abs(a[key]).max()))
        np.testing.assert_allclose(b[key], a[key], atol=2e-5 * scale, err_msg=key)
    # The statistics moved: the comparison above is not between two untouched initial values.
    assert np.abs(a["moving_mean"]).max() > 0.1
    # Biased variance, as Keras keeps it (the fused op's own output is Bessel-corrected).
    n = x.shape[0] * x.shape[1] * x.shape[2]
    expected = 0.9 * 1.0 + 0.1 * x.reshape(n, -1).var(axis=0)
    np.testing.assert_allclose(b["moving_variance"], expected, rtol=1e-5)


def test_fused_layer_in_bfloat16_stays_close(tfk):
    tf, keras = tfk
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, (2, 8, 8, 4)).astype(np.float32)
    plain, _ = _pair(keras, 4)
    fused = fused_bn.layer_class()(momentum=0.9, dtype="mixed_bfloat16")
    fused.build((None, None, None, 4))
    fused.set_weights(plain.get_weights())
    y = fused(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), plain(x, training=True).numpy(), atol=0.05)


def test_unfusable_calls_fall_back_to_keras(tfk):
    tf, keras = tfk
    fused = fused_bn.layer_class()(axis=1)  # channels-first: the fused NHWC kernel does not apply
    plain = keras.layers.BatchNormalization(axis=1)
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-5)
    assert not fused._fusable(tf.constant(x), None)
    assert not fused_bn.layer_class()()._fusable(tf.zeros((2, 4, 4, 3)), tf.ones((2, 4, 4), bool))
    assert fused_bn.layer_class()()._fusable(tf.zeros((2, 4, 4, 3)), None)


def test_fused_copy_and_plain_config_round_trip(tfk, tmp_path):
    _, keras = tfk
    from napari_sandseg._tf import sm

    model = sm().Unet("resnet18", encoder_weights=None, input_shape=(None, None, 1), classes=3, activation="softmax")
    n_bn = sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
    fused = fused_bn.fused_copy(model)
    assert fused_bn.count_fused(fused) == n_bn > 20
    x = np.random.default_rng(4).random((2, 64, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(fused(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)
    plain = type(fused).from_config(fused_bn.plain_config(fused.get_config()))
    plain.set_weights(fused.get_weights())
    assert fused_bn.count_fused(plain) == 0
    path = tmp_path / "plain.keras"
    plain.save(path)
    with zipfile.ZipFile(path) as z:
        text = z.read("config.json").decode()
    assert "FusedBatchNormalization" not in text and "BatchNormalization" in json.dumps(json.loads(text))
    reloaded = keras.models.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-5)


def test_engine_models_are_fused_and_files_are_plain(tfk, tmp_path):
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, build_model, load_model, save_model

    model = build_model("resnet18", 3)
    assert fused_bn.count_fused(model) > 20
    assert fused_bn.count_fused(build_model("resnet18", 3, fused=False)) == 0
    info = ModelInfo(config={}, class_map=ClassMap((0, 1, 2)), normalization=Normalization(0.0, 1.0),
                     backbone="resnet18", n_classes=3)
    path = save_model(model, tmp_path / "m.keras", info)
    with zipfile.ZipFile(path) as z:
        assert "FusedBatchNormalization" not in z.read("config.json").decode()
    assert fused_bn.count_fused(model) > 20  # saving converted a copy, not the model itself
    loaded, _ = load_model(path)
    plain, _ = load_model(path, fused=False)
    assert fused_bn.count_fused(loaded) == fused_bn.count_fused(model)
    assert fused_bn.count_fused(plain) == 0
    x = np.random.default_rng(5).random((2, 64, 96, 1), dtype=np.float32)
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, atol=1e-5)
    # Fused and plain BN reach the same float32 values by different kernels: through 20 layers
    # they differ by float32 rounding, up to 1.3e-5 seen on a 2-core AVX2 machine.
    np.testing.assert_allclose(plain(x, training=False).numpy(), expected, atol=1e-4)
