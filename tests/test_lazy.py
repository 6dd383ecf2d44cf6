"""Lazy volumes: TIFF (plain/compressed), folders, zarr, OME-Zarr; dask layers; streamed zarr prediction."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sandseg import lazy
from napari_sandseg.errors import InputError
from napari_sandseg.io import write_volume

VOL = np.random.default_rng(0).integers(0, 256, size=(7, 40, 33), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["plain", "zlib", "folder", "zarr", "zarr-group", "ome-zarr"])
def test_every_layout_opens_lazily_and_reads_exactly(tmp_path, kind):
    if kind in ("plain", "zlib"):
        path = write_volume(tmp_path / "v.tif", VOL, compression=None if kind == "plain" else "zlib")
    elif kind == "folder":
        path = tmp_path / "slices"
        path.mkdir()
        for z in range(len(VOL)):
            write_volume(path / f"s{z}.tif", VOL[z])  # natural order: s10 after s9
    elif kind == "zarr":
        path = tmp_path / "v.zarr"
        zarr.open_array(str(path), mode="w", shape=VOL.shape, chunks=(2, 40, 33), dtype="u1")[:] = VOL
    elif kind == "zarr-group":
        path = tmp_path / "g.zarr"
        zarr.open_group(str(path), mode="w").create_array("data", shape=VOL.shape, dtype="u1")[:] = VOL
    else:  # OME-Zarr 0.4: (t, c, z, y, x) levels "0" (full) and "1" (half), leading axes of length 1
        path = tmp_path / "ome.zarr"
        group = zarr.open_group(str(path), mode="w")
        group.create_array("0", shape=(1, 1) + VOL.shape, dtype="u1")[:] = VOL[None, None]
        group.create_array("1", shape=(1, 1, 7, 20, 17), dtype="u1")[:] = VOL[None, None, :, ::2, ::2]
        group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}]}]
    vol = lazy.open_volume(path)
    assert not isinstance(vol, np.ndarray)  # nothing read yet: slices are read when indexed
    assert vol.shape == VOL.shape and vol.dtype == VOL.dtype
    assert np.array_equal(vol[2:5], VOL[2:5]) and np.array_equal(vol[::3, 5], VOL[::3, 5])
    assert np.array_equal(np.asarray(vol), VOL)
    dask_vol = lazy.as_dask(vol)
    assert dask_vol.chunks[0] == (1,) * len(VOL)  # one slice per chunk: what napari shows
    assert np.array_equal(dask_vol[4].compute(), VOL[4])
    if kind == "ome-zarr":
        levels = lazy.open_levels(path)
        assert [lv.shape for lv in levels] == [VOL.shape, (7, 20, 17)]


def test_single_image_nan_and_bad_stores(tmp_path):
    path = write_volume(tmp_path / "one.tif", VOL[0])
    assert np.array_equal(lazy.open_volume(path), VOL[:1])
    bad = VOL.astype(np.float32)
    bad[3, 1, 1] = np.nan
    path = write_volume(tmp_path / "nan.tif", bad)
    with pytest.raises(InputError, match="slice 3 holds 1 NaN"):
        lazy.open_volume(path)
    assert lazy.open_volume(path, check_finite=False).shape == VOL.shape  # the viewer skips the check
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    group.create_array("a", shape=(2, 2, 2), dtype="u1")
    group.create_array("b", shape=(2, 2, 2), dtype="u1")
    with pytest.raises(InputError, match="2 arrays"):
        lazy.open_volume(tmp_path / "two.zarr")
    zarr.open_array(str(tmp_path / "4d.zarr"), mode="w", shape=(2, 3, 4, 4), dtype="u1")
    with pytest.raises(InputError, match="4D"):
        lazy.open_volume(tmp_path / "4d.zarr")
    (tmp_path / "x.tif").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match="PNG"):
        lazy.open_volume(tmp_path / "x.tif")


def test_mapped_volume_translates_values_and_refuses_unknown():
    raw = np.array([[[0, 85], [170, 255]]], np.uint8)
    mapped = lazy.MappedVolume(raw, np.array([255, 0, 85, 170], np.uint8), np.array([3, 0, 1, 2]))
    assert np.array_equal(mapped[0], [[0, 1], [2, 3]])
    with pytest.raises(InputError, match="value 7"):
        lazy.MappedVolume(np.full((1, 2, 2), 7, np.uint8), np.array([0, 85]), np.array([0, 1]))[:]
    assert np.array_equal(lazy.unique_values(raw, slab=1), [0, 85, 170, 255])


def test_reader_returns_dask_layers_for_zarr_and_big_files(tmp_path, monkeypatch):
    import dask.array as da

    from napari_sandseg._napari import reader as _reader
    from napari_sandseg._napari.layers import CLASS_MAP_KEY

    store = tmp_path / "scan.zarr"
    zarr.open_array(str(store), mode="w", shape=VOL.shape, dtype="u1")[:] = VOL
    reader = _reader.napari_get_reader(str(store))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(store))
    assert kind == "image" and isinstance(data, da.Array) and np.array_equal(data[3].compute(), VOL[3])
    assert kwargs["contrast_limits"][0] <= VOL.min() + 10
    # A file at or above the threshold opens lazily too; a mask keeps its class map.
    monkeypatch.setattr(_reader, "LAZY_BYTES", 1)
    mask = write_volume(tmp_path / "mask.tif", (VOL // 64 * 85).astype(np.uint8))
    [(data, kwargs, kind)] = _reader.napari_get_reader(str(mask))(str(mask))
    assert kind == "labels" and isinstance(data, da.Array)
    assert kwargs["metadata"][CLASS_MAP_KEY]["values"] == [0, 85, 170, 255]
    assert np.array_equal(data.compute(), VOL // 64 + 1)  # layer value = class id + 1


@pytest.mark.slow
def test_predict_file_zarr_in_zarr_out_equals_in_memory(tmp_path):
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, build_model, load_model, save_model
    from napari_sandseg.file_prediction import predict_file
    from napari_sandseg.predict import predict_volume

    info = ModelInfo(config={}, class_map=ClassMap((0, 85, 170, 255)), normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4)
    save_model(build_model("resnet18", 4), tmp_path / "m.keras", info)
    store = tmp_path / "in.zarr"
    zarr.open_array(str(store), mode="w", shape=VOL.shape, chunks=(3, 40, 33), dtype="u1")[:] = VOL
    out = predict_file(tmp_path / "m.keras", store, tmp_path / "out.zarr", batch_size=3,
                       uncertainty_path=tmp_path / "unc.tif")
    model, info = load_model(tmp_path / "m.keras")
    expected = predict_volume(model, VOL, info, batch_size=3, uncertainty=True)
    assert np.array_equal(lazy.open_volume(out)[:], info.class_map.decode(expected.labels))
    np.testing.assert_allclose(tifffile.imread(tmp_path / "unc.tif"), expected.uncertainty, atol=1e-6)
    predict_file(tmp_path / "m.keras", store, tmp_path / "out.zarr", batch_size=3, overwrite=True)  # replaces the store
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_predict_file_reads_a_folder_of_slices_lazily(tmp_path, monkeypatch):
    """A folder is streamed through open_volume: io.read_volume (which loads it whole) is never called."""
    from napari_sandseg import io
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.file_prediction import predict_file
    from napari_sandseg.model import ModelInfo, build_model, load_model, save_model
    from napari_sandseg.predict import predict_volume

    info = ModelInfo(config={}, class_map=ClassMap((0, 85, 170, 255)), normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4)
    save_model(build_model("resnet18", 4), tmp_path / "m.keras", info)
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(len(VOL)):
        write_volume(folder / f"s{z}.tif", VOL[z])

    def whole_read(*args, **kwargs):
        raise AssertionError("the folder was read whole")

    monkeypatch.setattr(io, "read_volume", whole_read)
    out = predict_file(tmp_path / "m.keras", folder, tmp_path / "labels.tif", batch_size=3)
    model, info = load_model(tmp_path / "m.keras")
    expected = predict_volume(model, VOL, info, batch_size=3)
    assert np.array_equal(tifffile.imread(out), info.class_map.decode(expected.labels))


def test_reader_names_and_colours_an_ome_zarr_label_image_as_written(tmp_path):
    """A .zarr label output opens as Labels with the class names and colours it was written with."""
    from napari_sandseg._napari import reader as _reader
    from napari_sandseg._napari.layers import CLASS_MAP_KEY, class_map_from_metadata
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.outputs import slab_writer

    written = ClassMap((0, 85, 170, 255), ("void", "clay", "grain", "heavy"),
                       ((0.0, 0.0, 0.0, 1.0), (1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)))
    labels = (VOL // 64 * 85).astype(np.uint8)
    store = tmp_path / "labels.zarr"
    with slab_writer(store, labels.shape, labels.dtype, class_map=written) as writer:
        writer.write(0, labels)
    [(data, kwargs, kind)] = _reader.napari_get_reader(str(store))(str(store))
    assert kind == "labels"
    read = class_map_from_metadata(kwargs["metadata"])
    assert read.values == written.values and read.names == written.names
    np.testing.assert_allclose(read.colors, written.colors, atol=1 / 255)
    assert kwargs["metadata"][CLASS_MAP_KEY]["names"] == ["void", "clay", "grain", "heavy"]
    assert np.array_equal(data[2].compute(), labels[2] // 85 + 1)  # layer value = class id + 1
    # A plain zarr array of the same values has no names to give: the default ones.
    plain = tmp_path / "plain.zarr"
    zarr.open_array(str(plain), mode="w", shape=labels.shape, dtype="u1")[:] = labels
    [(_, kwargs, kind)] = _reader.napari_get_reader(str(plain))(str(plain))
    assert kind == "labels" and class_map_from_metadata(kwargs["metadata"]).names == ClassMap((0, 85, 170, 255)).names
