"""The model object: load/save, the compatibility check, precision twins and graphs kept in the
model layer (never on the Keras object), and the engine's cache of models by file version."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

import napari_sandseg.segmentation_model as segmentation_model
from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.errors import ConfigError, ModelError
from napari_sandseg.model import ModelInfo, build_model
from napari_sandseg.predict import predict_volume
from napari_sandseg.segmentation_model import ModelCache, SegmentationModel

CLASS_MAP = ClassMap((0, 85, 170, 255))
INFO = ModelInfo(config={}, class_map=CLASS_MAP, normalization=Normalization(0.0, 255.0), backbone="resnet18",
                 n_classes=4)
VOLUME = np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = SegmentationModel(build_model("resnet18", 4), INFO)
    path = model.save(tmp_path_factory.mktemp("m") / "m.keras")
    assert model.path == path
    return model, path


def test_load_gives_back_the_saved_model_with_its_sidecar(saved):
    model, path = saved
    loaded = SegmentationModel.load(path)
    assert loaded.path == path and loaded.class_map == CLASS_MAP and loaded.n_classes == 4
    assert loaded.precision == "float32" and "resnet18" in repr(loaded)
    np.testing.assert_array_equal(predict_volume(loaded, VOLUME).labels, predict_volume(model, VOLUME).labels)
    loaded.check_compatible(VOLUME, CLASS_MAP)
    with pytest.raises(ModelError, match=r"class values \[0, 1, 2, 3\] do not match"):
        loaded.check_compatible(class_map=ClassMap((0, 1, 2, 3)))
    with pytest.raises(ModelError, match="model file not found"):
        SegmentationModel.load(path.with_name("missing.keras"))


def test_twins_and_graphs_are_kept_by_the_model_layer_not_on_keras(saved):
    model, _ = saved
    keras_model = model.keras_model
    twin = model.at("mixed_bfloat16")
    assert twin is not keras_model and model.at("float32") is keras_model
    assert SegmentationModel(keras_model, INFO).at("mixed_bfloat16") is twin  # shared by every wrapper
    fn = model.predict_function("mixed_bfloat16", tta=True)
    assert model.predict_function("mixed_bfloat16", tta=True) is fn
    assert model.predict_function("mixed_bfloat16") is not fn
    predict_volume(keras_model, VOLUME, INFO, precision="mixed_bfloat16", tta=True)  # a bare Keras model too
    assert model.predict_function("mixed_bfloat16", tta=True) is fn  # found again, not retraced
    assert not [name for name in vars(keras_model) if name.startswith("_sandseg")]


def test_what_was_derived_from_a_model_goes_with_it():
    keras_model = build_model("resnet18", 4, fused=False)
    predict_volume(keras_model, VOLUME, INFO, precision="mixed_bfloat16")
    predict_volume(keras_model, VOLUME, INFO)
    gone = weakref.ref(keras_model)
    before = len(segmentation_model._DERIVED)
    del keras_model
    gc.collect()
    assert gone() is None  # the kept graphs hold their model weakly: no leak
    assert len(segmentation_model._DERIVED) < before


def test_a_bare_keras_model_needs_its_info():
    with pytest.raises(ConfigError, match="needs its ModelInfo"):
        predict_volume(build_model("resnet18", 4, fused=False), VOLUME)


def test_the_cache_loads_a_file_once_per_version(saved, tmp_path):
    _, path = saved
    cache = ModelCache()
    first = cache.get(path)
    assert cache.get(path) is first and len(cache) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was rewritten
    try:
        again = cache.get(path)
        assert again is not first and cache.get(path) is again and len(cache) == 1
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    trained = SegmentationModel(first.keras_model, INFO, path)
    cache.put(trained)  # a model just written to its file is kept without loading it back
    assert cache.get(path) is trained
    with pytest.raises(ModelError, match="model file not found"):
        cache.get(tmp_path / "missing.keras")


def test_the_engine_jobs_load_once_into_the_model_layer_cache(saved, monkeypatch):
    import napari_sandseg.engine_server as engine_server
    from napari_sandseg.engine_requests import LoadRequest, PredictRequest
    from napari_sandseg.engine_server import JobControl, load_job, predict_job

    from _helpers import drain

    model, path = saved
    cache = ModelCache()
    monkeypatch.setattr(engine_server, "MODELS", cache)  # a fresh one, whatever ran before
    _, info = drain(load_job(LoadRequest(path), JobControl()))
    assert info.class_map == CLASS_MAP and len(cache) == 1
    slabs, n = drain(predict_job(PredictRequest(path, VOLUME, 8, False, False, "float32"), JobControl()))
    assert n == 2 and len(cache) == 1  # predicted with the model load_job cached
    labels = np.concatenate([slab.labels for slab in slabs])
    np.testing.assert_array_equal(labels, predict_volume(model, VOLUME).labels)
