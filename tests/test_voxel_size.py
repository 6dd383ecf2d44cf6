"""Voxel size end to end: read from a TIFF -> segment -> write -> read back the same spacing and unit."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sandseg.classmap import ClassMap
from napari_sandseg.cli import main
from napari_sandseg.data import Normalization
from napari_sandseg.io import read_volume, write_volume
from napari_sandseg.model import ModelInfo, save_model
from napari_sandseg.units import layer_kwargs, layer_voxel_size, read_voxel_size

VOXEL = ((5.0, 2.5, 2.0), "um")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A two-layer network saved with a sidecar: plumbing, not accuracy, is under test."""
    from napari_sandseg._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((None, None, 1))
    out = k.layers.Conv2D(3, 1, activation="softmax")(k.layers.Conv2D(4, 3, padding="same", activation="relu")(inp))
    info = ModelInfo(config={}, class_map=ClassMap((0, 128, 255)), normalization=Normalization(0.0, 255.0),
                     backbone="tiny", n_classes=3)
    return save_model(k.Model(inp, out), tmp_path_factory.mktemp("m") / "m.keras", info)


@pytest.fixture
def stack(tmp_path):
    """A (4, 40, 48) stack whose TIFF carries 5 x 2.5 x 2 um voxels the ImageJ way."""
    volume = np.random.default_rng(0).integers(0, 256, size=(4, 40, 48), dtype=np.uint8)
    path = tmp_path / "images.tif"
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 2.0, 1 / 2.5),
                     metadata={"spacing": 5.0, "unit": "micron", "axes": "ZYX"})
    assert read_voxel_size(path) == VOXEL
    return path


def test_predict_keeps_the_input_voxel_size(model_file, stack, tmp_path):
    out, unc, probs = tmp_path / "labels.tif", tmp_path / "unc.tif", tmp_path / "probs.tif"
    assert main(["predict", "--model", str(model_file), "--images", str(stack), "--out", str(out),
                 "--uncertainty", str(unc), "--probabilities", str(probs), "--precision", "float32"]) == 0
    assert read_voxel_size(out) == VOXEL
    assert read_voxel_size(unc) == VOXEL
    labels = read_volume(out)
    assert labels.shape == (4, 40, 48) and set(np.unique(labels)) <= {0, 128, 255}
    with tifffile.TiffFile(out) as tif:  # ImageJ reads it too: spacing and unit in its own keys
        assert tif.imagej_metadata["spacing"] == 5.0 and tif.imagej_metadata["unit"] == "micron"
    assert tifffile.imread(probs).shape == (4, 40, 48, 3)  # (Z, Y, X, K): no ImageJ tags, still readable


def test_predict_voxel_size_option_overrides_the_file(model_file, stack, tmp_path):
    out = tmp_path / "labels.tif"
    assert main(["predict", "--model", str(model_file), "--images", str(stack), "--out", str(out),
                 "--precision", "float32", "--voxel-size", "0.004mm"]) == 0
    assert read_voxel_size(out) == ((0.004, 0.004, 0.004), "mm")


def test_predict_without_voxel_size_writes_none(model_file, tmp_path):
    src = write_volume(tmp_path / "plain.tif", np.zeros((2, 32, 32), np.uint8))
    out = tmp_path / "labels.tif"
    assert main(["predict", "--model", str(model_file), "--images", str(src), "--out", str(out),
                 "--precision", "float32"]) == 0
    assert read_voxel_size(out) is None


def test_bad_voxel_size_option_is_one_message(model_file, stack, tmp_path, capsys):
    assert main(["predict", "--model", str(model_file), "--images", str(stack), "--out", str(tmp_path / "o.tif"),
                 "--voxel-size=-1um"]) == 2
    err = capsys.readouterr().err
    assert "voxel size '-1um'" in err and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists()


def test_layer_scale_round_trip():
    kwargs = layer_kwargs(VOXEL, 3)
    assert kwargs == {"scale": (5.0, 2.5, 2.0), "units": ("um",) * 3}
    assert layer_voxel_size(kwargs["scale"], kwargs["units"]) == VOXEL
    assert layer_kwargs(VOXEL, 2) == {"scale": (2.5, 2.0), "units": ("um", "um")}
    assert layer_kwargs(((1.0, 1.0, 1.0), "px"), 3) == {} and layer_kwargs(None, 3) == {}
    assert layer_voxel_size((1.0, 1.0, 1.0), ("pixel",) * 3) is None  # napari's default: no voxel size
    assert layer_voxel_size((1.0, 2.0, 2.0), ("micrometer", "micrometer", "millimeter")) is None


def test_napari_writer_keeps_the_layer_scale(tmp_path):
    from napari_sandseg._napari.layers import labels_layer_kwargs
    from napari_sandseg._napari.writer import write_labels_layer

    class_map = ClassMap((0, 128, 255))
    data = np.random.default_rng(1).integers(1, 4, size=(3, 16, 20)).astype(np.uint8)
    attributes = {**labels_layer_kwargs(class_map, "seg"), "scale": [5.0, 2.5, 2.0],
                  "units": ("micrometer",) * 3}
    (written,) = write_labels_layer(str(tmp_path / "seg.tif"), data, attributes)
    assert read_voxel_size(written) == VOXEL
    np.testing.assert_array_equal(read_volume(written), np.asarray(class_map.values)[data - 1])
    (plain,) = write_labels_layer(str(tmp_path / "plain.tif"), data, {**attributes, "units": ("pixel",) * 3})
    assert read_voxel_size(plain) is None


def test_export_jobs_keep_the_voxel_size(tmp_path):
    import threading

    from napari_sandseg._napari.layers import labels_layer_kwargs
    from napari_sandseg._widgets._export_widget import export_job, export_lazy_job
    from _helpers import drain

    class_map = ClassMap((0, 128, 255))
    metadata = labels_layer_kwargs(class_map, "seg")["metadata"]
    data = np.random.default_rng(2).integers(1, 4, size=(3, 16, 20)).astype(np.uint8)
    for job, name in ((export_job, "eager.tif"), (export_lazy_job, "lazy.tif")):
        _, written = drain(job(data, metadata, "seg", tmp_path / name, False, threading.Event(), voxel_size=VOXEL))
        assert read_voxel_size(written) == VOXEL
        np.testing.assert_array_equal(read_volume(written), np.asarray(class_map.values)[data - 1])


def test_model_sidecar_records_the_voxel_size(model_file, tmp_path):
    import dataclasses

    from napari_sandseg.model import load_model, read_info

    model, info = load_model(model_file)
    assert info.voxel_size is None  # trained on images without one
    path = save_model(model, tmp_path / "physical.keras", dataclasses.replace(info, voxel_size=VOXEL))
    assert read_info(path).voxel_size == VOXEL
    assert read_info(path).to_dict()["voxel_size"] == {"zyx": [5.0, 2.5, 2.0], "unit": "um"}


def test_zarr_outputs_and_inputs_keep_the_voxel_size(model_file, stack, tmp_path):
    out_zarr, back_tif = tmp_path / "labels.zarr", tmp_path / "again.tif"
    assert main(["predict", "--model", str(model_file), "--images", str(stack), "--out", str(out_zarr),
                 "--precision", "float32"]) == 0
    assert read_voxel_size(out_zarr) == VOXEL
    # a zarr input passes its voxel size on, as a TIFF does
    assert main(["predict", "--model", str(model_file), "--images", str(out_zarr), "--out", str(back_tif),
                 "--precision", "float32"]) == 0
    assert read_voxel_size(back_tif) == VOXEL


@pytest.mark.parametrize("axes, scale, unit, expected", [
    (["z", "y", "x"], [5.0, 2.5, 2.0], "micrometer", VOXEL),
    (["t", "c", "z", "y", "x"], [1.0, 1.0, 0.005, 0.0025, 0.002], "millimeter", ((0.005, 0.0025, 0.002), "mm")),
    (["y", "x"], [2.5, 2.0], "micrometer", ((2.5, 2.5, 2.0), "um")),
    (["z", "y", "x"], [5.0, 2.5, 2.0], None, None),  # no unit: no voxel size
])
def test_ome_zarr_scale_is_read(tmp_path, axes, scale, unit, expected):
    import zarr

    group = zarr.open_group(str(tmp_path / "scan.ome.zarr"), mode="w")
    group.create_array("0", shape=(2,) * len(axes), dtype="uint8")
    kinds = {"t": "time", "c": "channel"}
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": a, "type": kinds.get(a, "space"), **({"unit": unit} if unit and a not in kinds else {})}
                 for a in axes],
        # the level's scale times the multiscale's own (here 1, except for a doubled x)
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale[:-1] + [scale[-1] / 2]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1.0] * (len(axes) - 1) + [2.0]}],
    }]
    assert read_voxel_size(tmp_path / "scan.ome.zarr") == (
        None if expected is None else (pytest.approx(expected[0]), expected[1]))


def test_malformed_ome_zarr_metadata_reads_as_no_voxel_size(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    group.attrs["multiscales"] = [{"axes": [{"name": "z", "type": "space", "unit": "micrometer"}], "datasets": []}]
    assert read_voxel_size(tmp_path / "bad.zarr") is None


@pytest.mark.parametrize("voxel_size", [((2.5, 2.5, 2.5), "um"), ((5.0, 2.5, 2.0), "um"), ((1e-05,) * 3, "m"),
                                        ((0.123456789, 0.123456789, 0.2), "mm")])
def test_format_voxel_size_reads_back(voxel_size):
    """What the widgets' command lines write for --voxel-size parses back to the same size."""
    from napari_sandseg.units import format_voxel_size, parse_voxel_size

    text = format_voxel_size(voxel_size)
    assert parse_voxel_size(text) == voxel_size
    assert " " not in text and ("," in text) == (len(set(voxel_size[0])) > 1)


def test_predict_to_zarr_round_trips_labels_voxel_size_and_classes(model_file, stack, tmp_path):
    """read TIFF -> segment -> .zarr (OME-Zarr label image) -> read: the TIFF output's labels, the
    input's voxel size, and the model's class names; the plugin reader shows it as Labels in um."""
    import zarr

    from napari_sandseg._napari.reader import read_layers
    from napari_sandseg.lazy import open_volume

    tif, store = tmp_path / "labels.tif", tmp_path / "labels.zarr"
    for out in (tif, store):
        assert main(["predict", "--model", str(model_file), "--images", str(stack), "--out", str(out),
                     "--precision", "float32"]) == 0
    labels = open_volume(store)[:]
    np.testing.assert_array_equal(labels, read_volume(tif))
    assert len(np.unique(labels)) >= 2  # else "equal labels" would prove little
    assert read_voxel_size(store) == VOXEL
    image_label = zarr.open_group(str(store), mode="r").attrs["ome"]["image-label"]
    assert [(p["label-value"], p["class"]) for p in image_label["properties"]] == [
        (0, "class 0"), (128, "class 1"), (255, "class 2")]
    [(data, kwargs, kind)] = read_layers(str(store))
    assert kind == "labels" and kwargs["scale"] == VOXEL[0]
