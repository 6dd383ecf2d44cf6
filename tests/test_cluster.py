"""Cluster inference: a 2-worker dask LocalCluster on localhost gives exactly the single-process labels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.errors import ConfigError, OutputError
from napari_sandseg.lazy import open_volume
from napari_sandseg.model import ModelInfo, build_model, load_model, save_model
from napari_sandseg.predict import predict_volume

import distributed  # noqa: F401  (a declared dependency: its absence is a failure, not a skip)
pytestmark = pytest.mark.slow

CLASS_MAP = ClassMap((0, 85, 170, 255))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from napari_sandseg._tf import tf

    tf().keras.utils.set_random_seed(0)  # untrained: the plumbing is under test, not accuracy
    info = ModelInfo(config={}, class_map=CLASS_MAP, normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4)
    path = tmp_path_factory.mktemp("model") / "m.keras"
    save_model(build_model("resnet18", 4), path, info)
    return path


@pytest.fixture(scope="module")
def client():
    from napari_sandseg.cluster import connect

    c = connect(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory):
    # 21 slices: not a multiple of the slab size, so the last slab is short.
    vol = np.random.default_rng(5).integers(0, 256, size=(21, 64, 48), dtype=np.uint8)
    path = tmp_path_factory.mktemp("vol") / "images.tif"
    tifffile.imwrite(path, vol, compression="zlib")  # compressed: read through the zarr store
    return path, vol


def test_two_workers_equal_single_process_exactly(model_file, volume_file, client, tmp_path):
    from napari_sandseg.cluster import predict_cluster

    path, vol = volume_file
    seen = []
    out = predict_cluster(model_file, path, tmp_path / "pred.tif", client=client, batch_size=2,
                          batches_per_slab=2, progress=lambda done, total: seen.append((done, total)))
    model, info = load_model(model_file)
    expected = CLASS_MAP.decode(predict_volume(model, vol, info, batch_size=2).labels)
    got = tifffile.imread(out)
    assert got.shape == vol.shape and got.dtype == expected.dtype
    assert np.array_equal(got, expected)
    assert seen[-1] == (21, 21) and [d for d, _ in seen] == sorted(d for d, _ in seen)  # written in order
    # both workers took part, and each loaded the model once (the plugin holds it)
    loaded = client.run(lambda dask_worker: dask_worker.plugins["napari-sandseg-model"].model is not None)
    assert len(loaded) == 2 and all(loaded.values())


def test_zarr_output_and_errors(model_file, volume_file, client, tmp_path):
    import zarr

    from napari_sandseg.cluster import predict_cluster

    path, vol = volume_file
    # bfloat16 too: the workers run the same twin and batches, so the labels are equal exactly.
    out = predict_cluster(model_file, path, tmp_path / "pred.zarr", client=client, batch_size=4,
                          precision="mixed_bfloat16")
    model, info = load_model(model_file)
    expected = CLASS_MAP.decode(predict_volume(model, vol, info, batch_size=4, precision="mixed_bfloat16").labels)
    assert np.array_equal(open_volume(out)[:], expected)
    # An OME-Zarr label image like the single-process output: each class value named.
    image_label = zarr.open_group(str(out), mode="r").attrs["ome"]["image-label"]
    assert [(p["label-value"], p["class"]) for p in image_label["properties"]] == list(
        zip(CLASS_MAP.values, CLASS_MAP.names))
    assert not list(tmp_path.glob(".*tmp*"))  # the temp store was renamed into place
    with pytest.raises(OutputError, match="already exists"):
        predict_cluster(model_file, path, out, client=client)
    with pytest.raises(ConfigError, match="not both"):
        predict_cluster(model_file, path, tmp_path / "x.tif", scheduler="tcp://127.0.0.1:1", workers=2)


def test_cli_predict_on_local_workers_and_error_contract(model_file, volume_file, tmp_path, capsys):
    from napari_sandseg.cli import main

    path, vol = volume_file
    base = ["predict", "--model", str(model_file), "--images", str(path), "--batch-size", "4"]
    assert main(base + ["--out", str(tmp_path / "p.zarr"), "--workers", "1"]) == 0
    model, info = load_model(model_file)
    # The CLI's precision is "auto"; the local worker decides it on this same machine.
    expected = CLASS_MAP.decode(predict_volume(model, vol, info, batch_size=4, precision="auto").labels)
    assert np.array_equal(open_volume(tmp_path / "p.zarr")[:], expected)
    capsys.readouterr()
    for bad in (["--workers", "0"], ["--workers", "2", "--dask-scheduler", "tcp://127.0.0.1:1"]):
        assert main(base + ["--out", str(tmp_path / "q.tif")] + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandseg: error:")
    assert not (tmp_path / "q.tif").exists()
