"""Prediction: any slice size, slabs, probabilities, uncertainty, TTA, streaming to TIFF."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization, pad_slices
from napari_sandseg.errors import Cancelled, ConfigError, InputError, OutputError
from napari_sandseg.model import ModelInfo, build_model, save_model
from napari_sandseg.file_prediction import predict_file
from napari_sandseg.predict import entropy, iter_predict, predict_volume

CLASS_MAP = ClassMap((0, 85, 170, 255))


@pytest.fixture(scope="module")
def model_and_info():
    # An untrained model is enough: these tests check the plumbing, not the accuracy.
    from napari_sandseg._tf import tf

    tf().keras.utils.set_random_seed(0)
    model = build_model("resnet18", 4)
    info = ModelInfo(config={}, class_map=CLASS_MAP, normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4)
    return model, info


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).integers(0, 256, size=(5, 100, 75), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(5, 100, 75), (3, 20, 20)])
def test_any_slice_size_probabilities_and_uncertainty(model_and_info, shape):
    model, info = model_and_info
    vol = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    res = predict_volume(model, vol, info, batch_size=2, probabilities=True, uncertainty=True)
    assert res.labels.shape == shape and res.labels.dtype == np.uint8
    assert res.probabilities.shape == shape + (4,) and res.probabilities.dtype == np.float32
    np.testing.assert_allclose(res.probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(res.labels, res.probabilities.argmax(-1))
    assert res.uncertainty.shape == shape and res.uncertainty.dtype == np.float32
    assert 0.0 <= res.uncertainty.min() and res.uncertainty.max() <= 1.0


def test_padding_is_reflection_cropped_back(model_and_info, volume):
    model, info = model_and_info
    res = predict_volume(model, volume[:1], info, probabilities=True)
    x = pad_slices(info.normalization.apply(volume[:1]))[..., None]
    assert x.shape == (1, 128, 96, 1)
    direct = model(x, training=False).numpy()[:, :100, :75]
    # Same float32 math in another batch/kernel layout (oneDNN picks kernels by shape): rounding
    # differences up to 1.3e-5 were seen; a wrong pad or crop would differ by far more.
    np.testing.assert_allclose(res.probabilities, direct, atol=1e-4)


def test_result_does_not_depend_on_batch_size(model_and_info, volume):
    model, info = model_and_info
    a = predict_volume(model, volume, info, batch_size=1, probabilities=True)
    b = predict_volume(model, volume, info, batch_size=4, probabilities=True)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)  # oneDNN: batch-size rounding


def test_defaults_hold_no_probabilities_and_accept_2d(model_and_info, volume):
    model, info = model_and_info
    res = predict_volume(model, volume[0], info)
    assert res.labels.shape == (1, 100, 75)
    assert res.probabilities is None and res.uncertainty is None
    slabs = list(iter_predict(model, volume, info, batch_size=2))
    assert [(z0, z1) for z0, z1, *_ in slabs] == [(0, 2), (2, 4), (4, 5)]
    assert all(p is None and u is None for *_, p, u in slabs)


def test_entropy_range():
    uniform = np.full((2, 3, 4), 0.25, np.float32)
    np.testing.assert_allclose(entropy(uniform), 1.0, atol=1e-6)
    certain = np.zeros((2, 3, 4), np.float32)
    certain[..., 2] = 1.0
    np.testing.assert_allclose(entropy(certain), 0.0, atol=1e-6)


def test_tta_is_flip_equivariant(model_and_info, volume):
    model, info = model_and_info
    vol = volume[:2, :64, :64]
    res = predict_volume(model, vol, info, probabilities=True, tta=True)
    flipped = predict_volume(model, vol[:, ::-1, :], info, probabilities=True, tta=True)
    np.testing.assert_allclose(res.probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(flipped.probabilities[:, ::-1, :], res.probabilities, atol=1e-5)
    plain = predict_volume(model, vol, info, probabilities=True)
    assert not np.allclose(plain.probabilities, res.probabilities, atol=1e-4)


def test_progress_and_cancel(model_and_info, volume):
    model, info = model_and_info
    calls = []
    predict_volume(model, volume, info, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    cancel = threading.Event()

    def stop_after_first(done, total):
        cancel.set()

    with pytest.raises(Cancelled, match="after 2 of 5"):
        predict_volume(model, volume, info, batch_size=2, cancel=cancel, progress=stop_after_first)


def test_bad_arguments(model_and_info, volume):
    model, info = model_and_info
    with pytest.raises(ConfigError, match="batch_size"):
        predict_volume(model, volume, info, batch_size=0)
    with pytest.raises(InputError, match="shape"):
        predict_volume(model, volume[None, ..., None], info)


@pytest.fixture(scope="module")
def model_file(model_and_info, tmp_path_factory):
    model, info = model_and_info
    return save_model(model, tmp_path_factory.mktemp("pf") / "m.keras", info)


def test_predict_file_streams_the_same_result(model_and_info, model_file, volume, tmp_path):
    from napari_sandseg.io import read_volume, write_volume
    from napari_sandseg.model import load_model

    src = write_volume(tmp_path / "images.tif", volume)
    out, probs, unc = tmp_path / "labels.tif", tmp_path / "probs.tif", tmp_path / "unc.tif"
    calls = []
    predict_file(model_file, src, out, probs, uncertainty_path=unc, batch_size=2,
                 progress=lambda d, t: calls.append(d))
    assert calls == [2, 4, 5]
    model, info = load_model(model_file)
    ref = predict_volume(model, volume, info, batch_size=2, probabilities=True, uncertainty=True)
    labels = read_volume(out)
    np.testing.assert_array_equal(labels, CLASS_MAP.decode(ref.labels))  # original values
    assert set(np.unique(labels)) <= {0, 85, 170, 255}
    np.testing.assert_array_equal(tifffile.imread(probs), ref.probabilities)
    np.testing.assert_array_equal(tifffile.imread(unc), ref.uncertainty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tif", "labels.tif", "probs.tif", "unc.tif"]


def test_predict_file_refuses_overwrite_and_cleans_up_on_cancel(model_file, volume, tmp_path):
    from napari_sandseg.io import write_volume

    src = write_volume(tmp_path / "images.tif", volume)
    out = tmp_path / "labels.tif"
    out.write_bytes(b"previous")
    with pytest.raises(OutputError, match="exists"):
        predict_file(model_file, src, out)
    with pytest.raises(OutputError, match="input"):
        predict_file(model_file, src, src, overwrite=True)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        predict_file(model_file, src, out, tmp_path / "p.tif", batch_size=2, overwrite=True,
                     cancel=cancel, progress=lambda d, t: cancel.set())
    assert out.read_bytes() == b"previous"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tif", "labels.tif"]


def test_slab_size_caps_pixels_per_model_call():
    """Big slices are predicted a few at a time so memory stays bounded; small ones batch fully."""
    from napari_sandseg.predict import MAX_PIXELS_PER_CALL, slab_size

    assert slab_size(8, 128, 128) == 8
    assert slab_size(8, 1024, 996) == 1  # padded to 1024 x 1024: one slice per call
    assert slab_size(8, 512, 512) == 4
    assert slab_size(8, 4096, 4096) == 1  # never zero
    assert slab_size(8, 700, 700) * 704 * 704 <= MAX_PIXELS_PER_CALL
