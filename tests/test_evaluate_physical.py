"""Physical accuracy next to IoU: ``sandseg evaluate --json`` reports porosity, connectivity and pore
sizes of truth and prediction, on a case whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_sandseg.analyze as analyze_mod
import napari_sandseg.rock_measures as rm
from napari_sandseg.cli import main
from napari_sandseg.io import write_volume

PORE, SOLID = 0, 255
VOXEL = ((2.0, 2.0, 2.0), "um")


def _pair(shape=(10, 20, 20)):
    """Truth: a pore layer 5 voxels thick, x = 5..9, walled on both sides (porosity 1/4, connects
    the z and y faces, not x). Prediction: the same plus an isolated 2 x 2 x 2 pore (8 voxels)."""
    truth = np.full(shape, SOLID, np.uint8)
    truth[..., 5:10] = PORE
    pred = truth.copy()
    z0 = max(0, shape[0] // 2 - 1)
    pred[z0:z0 + 2, 4:6, 14:16] = PORE
    return truth, pred


def _evaluate(tmp_path, truth, pred, *extra, voxel_size=VOXEL):
    t = write_volume(tmp_path / "truth.tif", truth, overwrite=True, voxel_size=voxel_size)
    p = write_volume(tmp_path / "pred.tif", pred, overwrite=True, voxel_size=voxel_size)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--truth", str(t), "--pred", str(p), "--json", str(out), "--overwrite", *extra]) == 0
    return json.loads(out.read_text())


def test_physical_block_known_by_construction(tmp_path, capsys):
    truth, pred = _pair()
    report = _evaluate(tmp_path, truth, pred)
    assert report["mean_iou"] > 0.99  # IoU barely sees 8 voxels ...
    phys = report["physical"]
    assert phys["voxel_size"] == [2.0, 2.0, 2.0] and phys["unit"] == "um"
    t, p, d = phys["truth"], phys["prediction"], phys["difference"]
    assert t["dimensions"] == 3 and t["pore_class"] == PORE
    assert t["porosity"] == pytest.approx(0.25) and p["porosity"] == pytest.approx(0.25 + 8 / 4000)
    assert t["connected_porosity"] == pytest.approx(0.25) and p["connected_porosity"] == pytest.approx(0.25)
    assert t["isolated_porosity"] == pytest.approx(0.0) and p["isolated_porosity"] == pytest.approx(8 / 4000)
    assert t["percolates"] == {"z": True, "y": True, "x": False} == p["percolates"]
    # ... the physical figures do: porosity +0.2 pp, all of it isolated, one more pore body.
    assert d["porosity_pp"] == pytest.approx(0.2) and d["connected_porosity_pp"] == pytest.approx(0.0)
    assert d["isolated_porosity_pp"] == pytest.approx(0.2)
    assert d["euler_number"] == p["euler_number"] - t["euler_number"] == 1
    # Pore sizes in um: the 5-voxel layer is 10 um thick (to a voxel); the small pore pulls the mean down.
    assert 8.0 <= t["pore_size"]["mean"] <= 12.0 and p["pore_size"]["mean"] < t["pore_size"]["mean"]
    assert d["pore_size_distance"] > 0
    printed = capsys.readouterr().out
    assert "physical accuracy: voxel size 2 x 2 x 2 um" in printed and "+0.20 pp" in printed


def test_lengths_scale_with_the_voxel_size(tmp_path):
    truth, pred = _pair()
    in_um = _evaluate(tmp_path, truth, pred)["physical"]
    in_px = _evaluate(tmp_path, truth, pred, voxel_size=None)["physical"]
    assert in_px["unit"] == "px" and any("carries no voxel size" in n for n in in_px["notes"])
    assert in_um["truth"]["pore_size"]["mean"] == pytest.approx(2 * in_px["truth"]["pore_size"]["mean"])
    assert in_um["difference"]["pore_size_distance"] == pytest.approx(2 * in_px["difference"]["pore_size_distance"])
    assert in_um["truth"]["porosity"] == in_px["truth"]["porosity"]
    # --voxel-size overrides the files
    given = _evaluate(tmp_path, truth, pred, "--voxel-size", "0.001mm")["physical"]
    assert given["unit"] == "mm" and given["truth"]["pore_size"]["mean"] == pytest.approx(
        in_px["truth"]["pore_size"]["mean"] / 1000)


def test_one_slice_is_measured_in_2d_and_says_so(tmp_path, capsys):
    truth, pred = _pair(shape=(1, 20, 20))
    phys = _evaluate(tmp_path, truth, pred)["physical"]
    assert phys["truth"]["dimensions"] == 2 and phys["truth"]["percolates"]["z"] is None
    assert phys["truth"]["porosity"] == pytest.approx(0.25)
    assert phys["prediction"]["porosity"] == pytest.approx(0.25 + 4 / 400)  # the pore is 2 x 2 in this slice
    assert any("measured in 2D" in n for n in phys["notes"])
    assert "note: one slice, measured in 2D" in capsys.readouterr().out


def test_big_volume_skips_pore_sizes_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(analyze_mod, "EVALUATE_PORE_SIZE_VOXELS", 1000)
    truth, pred = _pair()
    phys = _evaluate(tmp_path, truth, pred)["physical"]
    assert phys["truth"]["pore_size"]["mean"] is None and phys["difference"]["pore_size_distance"] is None
    assert any(n.startswith("pore sizes not measured: 10 x 20 x 20 is over 1,000 voxels") for n in phys["notes"])
    assert phys["difference"]["porosity_pp"] == pytest.approx(0.2)  # the rest is still there


def test_no_memory_for_connectivity_keeps_the_iou(tmp_path, monkeypatch):
    monkeypatch.setattr(rm, "available_memory", lambda: 1024)
    truth, pred = _pair()
    report = _evaluate(tmp_path, truth, pred)
    assert report["mean_iou"] > 0.99
    assert set(report["physical"]) == {"voxel_size", "unit", "skipped", "notes"}
    assert "connectivity needs the whole pore space in memory" in report["physical"]["skipped"]


def test_no_physical_and_bad_pore_class(tmp_path, capsys):
    truth, pred = _pair()
    assert "physical" not in _evaluate(tmp_path, truth, pred, "--no-physical")
    t, p = tmp_path / "truth.tif", tmp_path / "pred.tif"
    assert main(["evaluate", "--truth", str(t), "--pred", str(p), "--pore-class", "7"]) == 2
    captured = capsys.readouterr()
    assert "pore class '7' is not one of the class values [0, 255]" in captured.err
    assert "mean IoU" not in captured.out.split("physical")[-1]  # nothing printed after the IoU run


def test_per_slice_measures_each_slice_in_2d(tmp_path, capsys):
    truth, pred = _pair(shape=(2, 20, 20))
    pred[0] = truth[0]  # slice 0 right, slice 1 with a 2 x 2 pore too many
    phys = _evaluate(tmp_path, truth, pred, "--per-slice")["physical"]
    first, second = phys["per_slice"]
    assert (first["slice"], second["slice"]) == (0, 1)
    assert first["truth"]["dimensions"] == 2 == second["truth"]["dimensions"]
    assert first["difference"]["porosity_pp"] == pytest.approx(0.0)
    assert second["difference"]["porosity_pp"] == pytest.approx(100 * 4 / 400)
    assert phys["mean_abs_difference"]["porosity_pp"] == pytest.approx(0.5)
    assert phys["mean_abs_difference"]["connected_porosity_pp"] == pytest.approx(0.0)
    out = capsys.readouterr().out
    assert "slice 1: physical accuracy" in out and "mean absolute difference over 2 slices: porosity_pp 0.5" in out
