"""Metrics from one confusion matrix, checked against scikit-learn and by properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, jaccard_score

from napari_sandseg import metrics
from napari_sandseg.errors import InputError


def _random_pair(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.integers(0, k, size=shape).astype(np.uint8)
    # prediction agrees ~60 % of the time so IoUs are neither 0 nor 1
    noise = rng.integers(0, k, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, truth, noise).astype(np.uint8)
    return truth, pred


def test_agrees_with_sklearn_on_random_volume() -> None:
    rng = np.random.default_rng(0)
    truth, pred = _random_pair(rng, (7, 23, 31), 4)
    report = metrics.evaluate(truth, pred, 4)
    t, p = truth.ravel(), pred.ravel()
    np.testing.assert_allclose(report["per_class_iou"], jaccard_score(t, p, average=None, labels=range(4)))
    np.testing.assert_allclose(report["dice"], f1_score(t, p, average=None, labels=range(4)))
    np.testing.assert_array_equal(report["confusion_matrix"], sk_confusion(t, p, labels=range(4)))
    assert report["pixel_accuracy"] == pytest.approx(np.mean(t == p))
    np.testing.assert_allclose(report["phase_fractions"], np.bincount(t, minlength=4) / t.size)
    np.testing.assert_allclose(report["predicted_fractions"], np.bincount(p, minlength=4) / p.size)
    assert report["mean_iou"] == pytest.approx(np.mean(report["per_class_iou"]))


def test_not_the_notebook_logical_and_iou() -> None:
    # The tutorial "IoU" = sum(truth & pred) / sum(truth | pred) on ids; it calls this 1.0.
    truth = np.array([[1, 2], [3, 1]], dtype=np.uint8)
    pred = np.array([[2, 3], [1, 2]], dtype=np.uint8)
    wrong = np.logical_and(truth, pred).sum() / np.logical_or(truth, pred).sum()
    assert wrong == 1.0
    report = metrics.evaluate(truth, pred, 4)
    assert report["mean_iou"] == 0.0
    assert report["pixel_accuracy"] == 0.0


def test_absent_class_is_nan_and_left_out_of_mean() -> None:
    truth = np.array([0, 0, 1, 1, 1], dtype=np.uint8)
    pred = np.array([0, 1, 1, 1, 1], dtype=np.uint8)
    report = metrics.evaluate(truth, pred, 4)
    iou = report["per_class_iou"]
    assert iou[0] == pytest.approx(1 / 2)
    assert iou[1] == pytest.approx(3 / 4)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert math.isnan(report["dice"][2])
    assert report["mean_iou"] == pytest.approx((1 / 2 + 3 / 4) / 2)


def test_class_only_predicted_counts_as_zero() -> None:
    truth = np.zeros(4, dtype=np.uint8)
    pred = np.array([0, 0, 0, 2], dtype=np.uint8)
    report = metrics.evaluate(truth, pred, 3)
    assert report["per_class_iou"][2] == 0.0
    assert report["mean_iou"] == pytest.approx((3 / 4 + 0.0) / 2)


def test_perfect_prediction() -> None:
    truth = np.array([[[0, 1], [3, 3]]], dtype=np.uint8)
    report = metrics.evaluate(truth, truth.copy(), 4)
    assert report["per_class_iou"][[0, 1, 3]].tolist() == [1.0, 1.0, 1.0]
    assert math.isnan(report["per_class_iou"][2])
    assert report["mean_iou"] == 1.0 and report["pixel_accuracy"] == 1.0


def test_per_slice_iou_matches_slice_by_slice_evaluation() -> None:
    rng = np.random.default_rng(3)
    truth, pred = _random_pair(rng, (5, 9, 11), 3)
    truth[2] = 0  # a slice where only some classes are present
    per_slice = metrics.per_slice_iou(truth, pred, 3)
    expected = [metrics.evaluate(truth[z], pred[z], 3)["mean_iou"] for z in range(5)]
    np.testing.assert_allclose(per_slice, expected)
    np.testing.assert_allclose(metrics.evaluate(truth, pred, 3)["per_slice_iou"], expected)


def test_chunking_gives_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    truth, pred = _random_pair(rng, (13, 8, 8), 4)
    whole = metrics.confusion_matrix(truth, pred, 4)
    monkeypatch.setattr(metrics, "CHUNK_VOXELS", 3 * 64)  # 3 slices per bincount
    np.testing.assert_array_equal(metrics.confusion_matrix(truth, pred, 4), whole)
    assert whole.sum() == truth.size and whole.dtype == np.int64


def test_2d_input_works() -> None:
    truth = np.array([[0, 1], [1, 1]])
    report = metrics.evaluate(truth, truth, 2)
    assert report["per_slice_iou"].shape == (1,)
    assert report["mean_iou"] == 1.0


@pytest.mark.parametrize(
    ("truth", "pred", "k", "match"),
    [
        (np.zeros((2, 2), int), np.zeros((2, 3), int), 2, "shape"),
        (np.zeros(3, int), np.array([0, 1, 4]), 4, r"0\.\.3"),
        (np.zeros(3, float), np.zeros(3, int), 2, "integer"),
        (np.array([-1, 0]), np.zeros(2, int), 2, r"0\.\.1"),
    ],
)
def test_bad_inputs_raise(truth: np.ndarray, pred: np.ndarray, k: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        metrics.evaluate(truth, pred, k)


def test_json_dict_is_strict_json() -> None:
    truth = np.array([0, 0, 1], dtype=np.uint8)
    report = metrics.evaluate(truth, truth, 3, class_values=[0, 85, 170], names=["a", "b", "c"])
    data = metrics.to_json_dict(report)
    text = json.dumps(data, allow_nan=False)  # raises on NaN
    back = json.loads(text)
    assert back["per_class_iou"] == [1.0, 1.0, None]
    assert back["class_values"] == [0, 85, 170]
    assert back["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_format_table_lists_every_class() -> None:
    truth = np.array([0, 0, 1, 2], dtype=np.uint8)
    pred = np.array([0, 1, 1, 2], dtype=np.uint8)
    report = metrics.evaluate(truth, pred, 4, class_values=[0, 85, 170, 255])
    table = metrics.format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["class", "value", "IoU", "Dice"]
    assert any(line.startswith("pore") and " 0.500 " in line for line in lines)
    assert any(line.startswith("bright mineral") and "255" in line and "n/a" in line for line in lines)
    assert "mean IoU:       0.6667 (over 3 classes present)" in table
    assert "pixel accuracy: 0.7500" in table
    # the JSON form formats the same
    assert metrics.format_table(metrics.to_json_dict(report)) == table


# ---- properties -------------------------------------------------------------------------------

_pairs = st.integers(1, 5).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)).flatmap(
            lambda shape: st.tuples(
                hnp.arrays(np.uint8, shape, elements=st.integers(0, k - 1)),
                hnp.arrays(np.uint8, shape, elements=st.integers(0, k - 1)),
            )
        ),
    )
)


@settings(max_examples=30, deadline=None)
@given(_pairs)
def test_property_iou_range_symmetry_and_sklearn(data: tuple[int, tuple[np.ndarray, np.ndarray]]) -> None:
    k, (truth, pred) = data
    report = metrics.evaluate(truth, pred, k)
    iou = report["per_class_iou"]
    assert np.all(np.isnan(iou) | ((iou >= 0) & (iou <= 1)))
    present = np.isin(np.arange(k), np.concatenate([truth.ravel(), pred.ravel()]))
    assert np.array_equal(~np.isnan(iou), present)
    swapped = metrics.evaluate(pred, truth, k)["per_class_iou"]
    np.testing.assert_allclose(swapped, iou, equal_nan=True)
    labels = np.flatnonzero(present)
    expected = jaccard_score(truth.ravel(), pred.ravel(), average=None, labels=labels, zero_division=0)
    np.testing.assert_allclose(iou[labels], expected)


@settings(max_examples=30, deadline=None)
@given(_pairs)
def test_property_perfect_prediction_scores_one(data: tuple[int, tuple[np.ndarray, np.ndarray]]) -> None:
    k, (truth, _) = data
    report = metrics.evaluate(truth, truth, k)
    present = np.unique(truth)
    assert np.all(report["per_class_iou"][present] == 1.0)
    assert np.all(report["dice"][present] == 1.0)
    assert report["mean_iou"] == 1.0 and report["pixel_accuracy"] == 1.0
