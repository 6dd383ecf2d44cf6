"""``sandseg analyze``: report keys, voxel size from the flag or the TIFF, truth vs prediction, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_sandseg.analyze import analyze
from napari_sandseg.cli import main

KEYS = {"voxel_size", "unit", "phase_fractions", "porosity", "connected_porosity", "isolated_porosity",
        "percolates", "euler_number", "specific_surface_area", "pore_size", "rev_size"}


@pytest.fixture()
def labels(tiny_sandstone) -> np.ndarray:
    """Labels 0..3 of the tiny synthetic sandstone (0 = pore)."""
    return tiny_sandstone[1]


def run(*args) -> int:
    return main(["analyze", *[str(a) for a in args]])


def test_json_has_the_report_keys_in_physical_units(labels, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "l.tif", labels)
    assert run("--labels", tmp_path / "l.tif", "--voxel-size", "2.5um", "--json", tmp_path / "r.json",
               "--csv", tmp_path / "r.csv") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert KEYS <= set(report)
    assert report["voxel_size"] == [2.5, 2.5, 2.5] and report["unit"] == "um"
    assert set(report["percolates"]) == {"z", "y", "x"}
    assert {"mean", "median", "histogram"} <= set(report["pore_size"])
    expected = analyze(labels, (2.5, 2.5, 2.5), "um")
    assert report["porosity"] == pytest.approx(np.mean(labels == 0))
    assert report["pore_size"]["mean"] == pytest.approx(expected["pore_size"]["mean"])
    assert report["specific_surface_area"] == pytest.approx(expected["specific_surface_area"])
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0] == ["measure", "value", "unit"]
    assert dict((r[0], r[2]) for r in rows[1:])["mean pore size"] == "um"
    out = capsys.readouterr().out
    assert "porosity" in out and "wrote" in out


def test_voxel_size_comes_from_the_imagej_tiff(labels, tmp_path):
    tifffile.imwrite(tmp_path / "l.tif", labels, imagej=True, resolution=(1 / 2.0, 1 / 2.0),
                     metadata={"spacing": 4.0, "unit": "micron", "axes": "ZYX"})
    assert run("--labels", tmp_path / "l.tif", "--json", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["voxel_size"] == pytest.approx([4.0, 2.0, 2.0]) and report["unit"] == "um"


def test_no_voxel_size_warns_and_uses_pixels(labels, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "l.tif", labels)
    assert run("--labels", tmp_path / "l.tif", "--json", tmp_path / "r.json") == 0
    assert "carries no voxel size" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["unit"] == "px"


def test_truth_gives_both_sides_and_the_difference(labels, tmp_path):
    pred = labels.copy()
    pred[pred == 2] = 0  # every quartz voxel called pore: porosity error known by construction
    tifffile.imwrite(tmp_path / "t.tif", labels)
    tifffile.imwrite(tmp_path / "p.tif", pred)
    assert run("--labels", tmp_path / "p.tif", "--truth", tmp_path / "t.tif", "--voxel-size", "3um",
               "--json", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert KEYS <= set(report["truth"]) and KEYS <= set(report["prediction"])
    assert report["difference"]["porosity_pp"] == pytest.approx(100 * np.mean(labels == 2))
    assert report["difference"]["pore_size_distance"] > 0
    assert "2" in report["prediction"]["phase_fractions"]  # same classes on both sides (0 there)


def test_pore_class_by_value(labels, tmp_path):
    tifffile.imwrite(tmp_path / "l.tif", labels)
    assert run("--labels", tmp_path / "l.tif", "--pore-class", "1", "--voxel-size", "1um",
               "--json", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pore_class"] == 1 and report["porosity"] == pytest.approx(np.mean(labels == 1))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--voxel-size", "2.5 furlongs"], "voxel size '2.5 furlongs'"),
        (["--pore-class", "air"], "pore class 'air' is not one of the class values"),
    ],
)
def test_bad_settings_are_one_line_errors(labels, tmp_path, capsys, extra, message):
    tifffile.imwrite(tmp_path / "l.tif", labels)
    assert run("--labels", tmp_path / "l.tif", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_existing_json_is_refused_before_any_work(labels, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "l.tif", labels)
    (tmp_path / "r.json").write_text("keep")
    assert run("--labels", tmp_path / "l.tif", "--json", tmp_path / "r.json") == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "r.json").read_text() == "keep"


def test_image_passed_as_labels_is_refused(tmp_path, capsys):
    image = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "image.tif", image)
    assert run("--labels", tmp_path / "image.tif") == 2
    assert "fractional" in capsys.readouterr().err


def test_too_big_is_refused_before_any_work_unless_pore_sizes_are_left_out(labels, tmp_path, capsys, monkeypatch):
    from napari_sandseg import rock_measures

    tifffile.imwrite(tmp_path / "l.tif", labels)
    # Room for connectivity (13 bytes per voxel), not for local thickness (60).
    monkeypatch.setattr(rock_measures, "available_memory", lambda: labels.size * 20)
    assert run("--labels", tmp_path / "l.tif", "--voxel-size", "1um") == 2
    err = capsys.readouterr().err
    assert "local thickness needs the whole pore space in memory" in err and "--no-pore-sizes" in err
    assert run("--labels", tmp_path / "l.tif", "--voxel-size", "1um", "--no-pore-sizes",
               "--json", tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pore_size"]["mean"] is None and report["porosity"] == pytest.approx(np.mean(labels == 0))
