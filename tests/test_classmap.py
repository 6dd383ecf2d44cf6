"""ClassMap: original mask values <-> contiguous class ids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg.classmap import SANDSTONE_NAMES, ClassMap, check_integer_valued
from napari_sandseg.errors import InputError


@pytest.mark.parametrize("values", [(0, 1, 2, 3), (1, 2, 3, 4), (0, 85, 170, 255)])
def test_encode_decode_round_trip(values: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    mask = rng.choice(np.asarray(values, dtype=np.uint8), size=(3, 17, 19))
    cmap = ClassMap.from_mask(mask)
    assert cmap.values == values
    ids = cmap.encode(mask)
    assert ids.dtype == np.uint8
    assert set(np.unique(ids).tolist()) == {0, 1, 2, 3}
    # id order follows value order
    for i, v in enumerate(values):
        assert np.array_equal(ids == i, mask == v)
    decoded = cmap.decode(ids)
    assert np.array_equal(decoded, mask)
    assert decoded.dtype == np.uint8


def test_four_classes_get_sandstone_names() -> None:
    assert ClassMap((0, 85, 170, 255)).names == SANDSTONE_NAMES
    assert ClassMap((1, 2)).names == ("class 0", "class 1")


def test_unknown_value_raises_with_values_named() -> None:
    cmap = ClassMap((0, 1, 2, 3))
    with pytest.raises(InputError, match=r"\[7\].*not in the class map"):
        cmap.encode(np.array([[0, 7], [1, 2]], dtype=np.uint8), source="masks.tif")


def test_decode_out_of_range_id_raises() -> None:
    with pytest.raises(InputError, match="0..1"):
        ClassMap((0, 255)).decode(np.array([0, 2]))


def test_integer_valued_float_mask_is_accepted() -> None:
    mask = np.array([[0.0, 85.0], [170.0, 255.0]], dtype=np.float32)
    cmap = ClassMap.from_mask(mask)
    assert cmap.values == (0, 85, 170, 255)
    assert cmap.encode(mask).tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("bad", [np.array([0.0, 0.5]), np.array([0.0, np.nan]), np.array([1.0, np.inf])])
def test_fractional_or_nonfinite_float_mask_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="m.tif"):
        check_integer_valued(bad, "m.tif")


def test_dict_round_trip_keeps_everything() -> None:
    cmap = ClassMap((1, 2, 3, 4), ("a", "b", "c", "d"))
    assert ClassMap.from_dict(cmap.to_dict()) == cmap


def test_invalid_class_maps_are_refused() -> None:
    with pytest.raises(InputError):
        ClassMap(())
    with pytest.raises(InputError, match="ascending"):
        ClassMap((2, 1))
    with pytest.raises(InputError, match="image rather than a mask"):
        ClassMap.from_mask(np.arange(300))
