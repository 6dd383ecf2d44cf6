"""Tiling inside a slice: overlapping tiles, halo discarded, stitched without seams."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_sandseg.predict as predict_mod
from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization, padded_size
from napari_sandseg.errors import Cancelled, ConfigError
from napari_sandseg.model import ModelInfo
from napari_sandseg.predict import iter_predict, predict_volume, tile_axis

INFO = ModelInfo(config={}, class_map=ClassMap((0, 1, 2, 3)), normalization=Normalization(0.0, 255.0),
                 backbone="tiny", n_classes=4)


@pytest.fixture(scope="module")
def tiny_model():
    """A two-level Unet (conv, pool, conv, upsample, skip): its receptive field (radius 4 px) is
    smaller than the 32 px halo, so tiles see every pixel's full context and tiled prediction
    must equal the whole-slice prediction up to float rounding."""
    from napari_sandseg._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((None, None, 1))
    a = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    b = k.layers.Conv2D(8, 3, padding="same", activation="relu")(k.layers.MaxPooling2D(2)(a))
    up = k.layers.UpSampling2D(2)(b)
    out = k.layers.Conv2D(4, 1, activation="softmax")(k.layers.Concatenate()([a, up]))
    return k.Model(inp, out)


def _volume(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _whole_and_tiled(model, vol, tile_size, tile_halo, **kw):
    whole = predict_volume(model, vol, INFO, probabilities=True, uncertainty=True, tile_size=None, **kw)
    tiled = predict_volume(model, vol, INFO, probabilities=True, uncertainty=True, tile_size=tile_size,
                           tile_halo=tile_halo, **kw)
    return whole, tiled


def _assert_same(whole, tiled):
    # Float rounding only (oneDNN picks kernels by input size): 1e-5 on probabilities; labels must
    # agree wherever the top two classes are further apart than that.
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)
    np.testing.assert_allclose(tiled.uncertainty, whole.uncertainty, atol=1e-4)
    top2 = np.sort(whole.probabilities, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4
    np.testing.assert_array_equal(tiled.labels[clear], whole.labels[clear])
    assert clear.mean() > 0.99


@pytest.mark.parametrize("shape", [(2, 200, 330), (1, 197, 301), (1, 250, 64), (1, 40, 500)])
def test_tiled_equals_whole_slice(tiny_model, shape):
    """Multiples of 32 or not, tiled in both dimensions or in one only."""
    whole, tiled = _whole_and_tiled(tiny_model, _volume(shape), 96, 32)
    assert tiled.labels.shape == shape and tiled.probabilities.shape == shape + (4,)
    assert tiled.uncertainty.shape == shape and tiled.uncertainty.dtype == np.float32
    np.testing.assert_allclose(tiled.probabilities.sum(-1), 1.0, atol=1e-5)
    _assert_same(whole, tiled)


def test_tta_tiled_equals_whole_slice(tiny_model):
    whole, tiled = _whole_and_tiled(tiny_model, _volume((1, 150, 230), seed=3), 96, 32, tta=True)
    _assert_same(whole, tiled)


def test_dropping_the_halo_leaves_seams(tiny_model):
    """The equality above needs the halo: abutting tiles (halo 0) differ along their seams only."""
    vol = _volume((1, 192, 288))  # tiles of 96 abut exactly: seams at y = 96, x = 96 and 192
    assert tile_axis(288, 96, 0).starts == (0, 96, 192)
    whole, tiled = _whole_and_tiled(tiny_model, vol, 96, 0)
    diff = np.abs(tiled.probabilities - whole.probabilities).max(axis=(0, -1))
    assert diff[96].max() > 1e-3  # the horizontal seam
    assert diff[:, 96].max() > 1e-3 and diff[:, 192].max() > 1e-3  # both vertical seams
    far = np.ones(diff.shape, bool)  # further from every seam than the receptive field (4 px)
    for cut in (96,):
        far[cut - 8:cut + 8] = False
    for cut in (96, 192):
        far[:, cut - 8:cut + 8] = False
    assert diff[far].max() < 1e-5


def _spy_on_model_calls(monkeypatch):
    """Record the (B, H, W, 1) shape of every input sent to the model."""
    real = predict_mod.predict_function
    shapes = []

    def spying(model, tta=False):
        fn = real(model, tta)

        def call(x):
            shapes.append(tuple(x.shape))
            return fn(x)

        return call

    monkeypatch.setattr(predict_mod, "predict_function", spying)
    return shapes


def test_model_calls_are_at_most_one_tile(tiny_model, monkeypatch):
    shapes = _spy_on_model_calls(monkeypatch)
    vol = _volume((2, 200, 330))
    list(iter_predict(tiny_model, vol, INFO, tile_size=96, tile_halo=32))
    assert shapes and all(h <= 96 and w <= 96 for _, h, w, _ in shapes)
    tiles = sum(b for b, *_ in shapes)
    assert tiles == 2 * len(tile_axis(224, 96, 32).starts) * len(tile_axis(352, 96, 32).starts)
    assert tiles * 96 * 96 > 2 * 224 * 352 * 2  # tiles overlap: well over twice the padded area


def test_small_slices_take_the_unchanged_fast_path(tiny_model, monkeypatch):
    shapes = _spy_on_model_calls(monkeypatch)
    vol = _volume((3, 100, 75))
    res = predict_volume(tiny_model, vol, INFO, batch_size=2, probabilities=True, tile_size=128,
                         tile_halo=32)
    assert shapes == [(2, 128, 96, 1), (1, 128, 96, 1)]  # whole padded slices, batched as before
    ref = predict_volume(tiny_model, vol, INFO, batch_size=2, probabilities=True, tile_size=None)
    np.testing.assert_array_equal(res.probabilities, ref.probabilities)


def test_default_tiles_slices_over_1024(tiny_model, monkeypatch):
    shapes = _spy_on_model_calls(monkeypatch)
    list(iter_predict(tiny_model, _volume((1, 1100, 40)), INFO))
    assert sum(b for b, *_ in shapes) == 2  # 1120 padded rows: two tiles
    assert all(h <= predict_mod.DEFAULT_TILE_SIZE for _, h, _, _ in shapes)


def test_progress_per_slab_and_cancel_between_tiles(tiny_model, monkeypatch):
    vol = _volume((2, 200, 330))
    calls = []
    predict_volume(tiny_model, vol, INFO, batch_size=1, tile_size=96, tile_halo=32,
                   progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    shapes = _spy_on_model_calls(monkeypatch)
    monkeypatch.setattr(predict_mod, "MAX_PIXELS_PER_CALL", 96 * 96)  # one tile per model call
    cancel = threading.Event()
    with pytest.raises(Cancelled, match="after 1 of 2"):
        list(iter_predict(tiny_model, vol, INFO, tile_size=96, tile_halo=32, cancel=cancel,
                          progress=lambda d, t: cancel.set()))
    assert len(shapes) == 45  # the first slice's 5 x 9 tiles; the second slice never starts
    shapes.clear()
    calls_before_cancel = 3

    def stop_after_three(x):
        shapes.append(x.shape)
        if len(shapes) == calls_before_cancel:
            cancel.set()
        return np.full(x.shape[:3] + (4,), 0.25, np.float32)

    cancel.clear()
    monkeypatch.setattr(predict_mod, "predict_function",
                        lambda model, tta=False: lambda x: _Numpy(stop_after_three(x)))
    with pytest.raises(Cancelled, match="after 0 of 2"):
        list(iter_predict(tiny_model, vol, INFO, tile_size=96, tile_halo=32, cancel=cancel))
    assert len(shapes) == calls_before_cancel  # stopped inside the first slice, between tiles


class _Numpy:
    """Stands in for a tensor: ``.numpy()`` gives the array."""

    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array


@pytest.mark.parametrize("length", [32, 64, 96, 128, 224, 352, 1024, 1056, 1120, 2048, 4000, 4096])
@pytest.mark.parametrize("tile_size, halo", [(96, 32), (128, 0), (160, 40), (1024, 96), (1024, 128)])
def test_tile_axis_covers_with_halo(length, tile_size, halo):
    t = tile_axis(length, tile_size, halo)
    n = len(t.starts)
    assert t.size <= max(tile_size, length) and t.size % 32 == 0
    assert all(s % 32 == 0 for s in t.starts) and t.starts[0] == 0 and t.starts[-1] + t.size == length
    assert t.cuts[0] == 0 and t.cuts[-1] == length and all(a < b for a, b in zip(t.cuts, t.cuts[1:]))
    for i, s in enumerate(t.starts):
        lo, hi = t.cuts[i], t.cuts[i + 1]
        assert s <= lo and hi <= s + t.size  # a tile supplies only pixels it holds...
        assert i == 0 or lo - s >= halo  # ...at least `halo` away from its inner borders
        assert i == n - 1 or s + t.size - hi >= halo
    # No more tiles than needed: n - 1 tiles of tile_size, advancing as far as the halo allows,
    # would not reach the end.
    max_stride = (tile_size - 2 * halo) // 32 * 32
    assert n == 1 or tile_size + (n - 2) * max_stride < length
    assert (n == 1) == (length <= tile_size)


def test_bad_tiling_arguments(tiny_model):
    vol = _volume((1, 64, 64))
    for kwargs, match in [({"tile_size": 100}, "tile_size"), ({"tile_size": 0}, "tile_size"),
                          ({"tile_halo": -1}, "tile_halo"), ({"tile_size": 96, "tile_halo": 40}, "2 \\* tile_halo")]:
        with pytest.raises(ConfigError, match=match):
            predict_volume(tiny_model, vol, INFO, **kwargs)
    assert padded_size(200) == 224  # the sizes used above


def test_dask_workers_tile_through_iter_predict(tiny_model, monkeypatch):
    """A dask task (``cluster.predict_slab``) predicts through iter_predict with the client's tiling."""
    from types import SimpleNamespace

    import distributed

    from napari_sandseg import cluster
    from napari_sandseg.segmentation_model import SegmentationModel

    vol = _volume((2, 200, 330))
    plugin = SimpleNamespace(model=SegmentationModel(tiny_model, INFO), volume=lambda path: vol)  # what ModelPlugin keeps
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(plugins={cluster.PLUGIN_NAME: plugin}))
    shapes = _spy_on_model_calls(monkeypatch)
    labels = cluster.predict_slab("scan.tif", 0, 2, 8, tile_size=96, tile_halo=32)
    assert shapes and all(h <= 96 and w <= 96 for _, h, w, _ in shapes)
    ref = predict_volume(tiny_model, vol, INFO, tile_size=96, tile_halo=32).labels
    np.testing.assert_array_equal(labels, ref)
    with pytest.raises(ConfigError, match="tile_size"):  # checked before any model, file or cluster
        cluster.predict_cluster("missing.keras", "missing.tif", "out.tif", workers=1, tile_size=100)


def test_cli_tile_size_flag():
    from napari_sandseg.cli import _tiling, build_parser

    base = ["predict", "--model", "m.keras", "--images", "i.tif", "--out", "o.tif"]
    assert _tiling(build_parser().parse_args(base)) == {}  # the engine's default
    assert _tiling(build_parser().parse_args(base + ["--tile-size", "512"])) == {"tile_size": 512}
    assert _tiling(build_parser().parse_args(base + ["--tile-size", "0"])) == {"tile_size": None}
