"""Truth and prediction with different class numberings: one warning naming both value sets."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sandseg.cli import main
from napari_sandseg.io import write_volume
from napari_sandseg.metrics import class_value_mismatch


@pytest.mark.parametrize(
    "truth, pred, warned",
    [
        ([1, 2, 3, 4], [0, 1, 2, 3], True),  # shifted numbering: each side has a value the other lacks
        ([0, 85, 170, 255], [0, 1, 2, 3], True),
        ([0, 1, 2, 3], [0, 1, 2, 3], False),
        ([0, 1, 2, 3], [0, 1, 2], False),  # a class the model never predicts is a result, not a mix-up
        ([0, 1], [0, 1, 2], False),
    ],
)
def test_class_value_mismatch(truth, pred, warned):
    message = class_value_mismatch(truth, pred, "t.tif", "p.tif")
    assert (message is not None) == warned
    if warned:
        assert f"t.tif holds class values {sorted(truth)}" in message
        assert f"p.tif holds {sorted(pred)}" in message


def _pair(tmp_path, truth_offset: int, pred_offset: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(3, 16, 16)).astype(np.uint8)
    truth = write_volume(tmp_path / "truth.tif", ids + truth_offset)
    pred = write_volume(tmp_path / "pred.tif", ids + pred_offset)
    return truth, pred


def test_cli_warns_once_naming_both_value_sets(tmp_path, capsys):
    truth, pred = _pair(tmp_path, 1, 0)
    assert main(["evaluate", "--truth", str(truth), "--pred", str(pred)]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("sandseg: warning:")]
    assert len(warnings) == 1, err
    assert f"{truth} holds class values [1, 2, 3, 4]" in warnings[0]
    assert f"{pred} holds [0, 1, 2, 3]" in warnings[0]


def test_cli_is_quiet_when_the_values_match(tmp_path, capsys):
    truth, pred = _pair(tmp_path, 0, 0)
    assert main(["evaluate", "--truth", str(truth), "--pred", str(pred)]) == 0
    assert "warning" not in capsys.readouterr().err
