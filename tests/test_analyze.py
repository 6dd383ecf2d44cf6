"""Rock measures against shapes with known answers, physical units, and PoreSpy where installed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sandseg import rock_measures as rm
from napari_sandseg.analyze import analyze, analyze_pair, format_report, pore_value, to_csv
from napari_sandseg.errors import ConfigError, InputError
from napari_sandseg.units import parse_voxel_size, read_voxel_size

SOLID, PORE = 2, 0


def ball(shape, radius, centre=None) -> np.ndarray:
    """Voxels within ``radius`` of ``centre`` (default: the middle voxel)."""
    grids = np.indices(shape, dtype=float)
    centre = [s // 2 for s in shape] if centre is None else centre
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def as_labels(pore: np.ndarray) -> np.ndarray:
    return np.where(pore, PORE, SOLID).astype(np.uint8)


def blobs(shape=(40, 40, 40), seed=1, level=0.52) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2) > level


# ----------------------------------------------------------------------------- fractions


def test_phase_fractions_by_construction():
    labels = np.full((10, 20, 20), 255, dtype=np.uint8)
    for z in range(10):
        labels[z, :z + 1] = 0  # slice z holds (z + 1) rows of pore out of 20
    labels[:, :, 19] = 85
    labels[0, 0, 19] = 0
    report = analyze(labels)
    counts = {v: np.count_nonzero(labels == v) for v in (0, 85, 255)}
    assert report["phase_fractions"] == pytest.approx({str(v): c / labels.size for v, c in counts.items()}, abs=1e-12)
    expected_profile = [np.count_nonzero(labels[z] == 0) / 400 for z in range(10)]
    assert report["porosity_profile"] == pytest.approx(expected_profile, abs=1e-12)
    assert report["porosity"] == pytest.approx(counts[0] / labels.size)
    assert sum(report["phase_fractions"].values()) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- connectivity


def test_channel_percolates_along_one_axis_only_and_pocket_is_isolated():
    pore = np.zeros((20, 24, 30), dtype=bool)
    pore[8:12, 5:9, :] = True  # a channel from the x=0 face to the x=-1 face
    pore[2:5, 15:19, 10:14] = True  # a pocket touching no face
    report = analyze(as_labels(pore))
    assert report["percolates"] == {"z": False, "y": False, "x": True}
    assert report["connected_porosity"] == pytest.approx(4 * 4 * 30 / pore.size)
    assert report["connected_porosity_per_axis"] == pytest.approx({"z": 0.0, "y": 0.0, "x": 4 * 4 * 30 / pore.size})
    assert report["isolated_porosity"] == pytest.approx(3 * 4 * 4 / pore.size)
    assert report["porosity"] == pytest.approx(report["connected_porosity"] + report["isolated_porosity"])


def test_edge_contact_does_not_connect():
    """Face connectivity: two bars meeting only along an edge do not make a path."""
    pore = np.zeros((6, 10, 10), dtype=bool)
    pore[:, 2, 0:5] = True
    pore[:, 3, 5:10] = True  # touches the first bar only diagonally
    _, percolates, _ = rm.connectivity(pore)
    assert percolates["x"] is False and percolates["z"] is True


def test_single_slice_is_2d():
    pore = np.zeros((1, 30, 30), dtype=bool)
    pore[0, :, 10:14] = True
    report = analyze(as_labels(pore))
    assert report["dimensions"] == 2
    assert report["percolates"] == {"z": None, "y": True, "x": False}
    assert any("2D" in note for note in report["notes"])


# ----------------------------------------------------------------------------- surface area


@pytest.mark.parametrize("voxel", [1.0, 2.5])
def test_sphere_surface_area(voxel):
    radius = 12
    pore = ball((36, 36, 36), radius)
    ssa = rm.specific_surface_area(as_labels(pore), PORE, (voxel,) * 3)
    volume = pore.size * voxel**3
    assert ssa * volume == pytest.approx(4 * np.pi * (radius * voxel) ** 2, rel=0.04)
    # The same interface bounds the solid phase.
    assert rm.specific_surface_area(as_labels(pore), SOLID, (voxel,) * 3) == pytest.approx(ssa, rel=1e-3)


def test_cylinder_surface_area_streamed_across_slabs():
    radius, n_z = 8, rm.SLAB * 2 + 5  # several slabs
    disc = ball((1, 30, 30), radius, centre=(0, 15, 15))[0]
    pore = np.broadcast_to(disc, (n_z, 30, 30))
    area = rm.specific_surface_area(as_labels(pore), PORE, (1, 1, 1)) * pore.size
    # The mantle between the first and last slice centres; the open ends are not surface.
    assert area == pytest.approx(2 * np.pi * radius * (n_z - 1), rel=0.04)


def test_anisotropic_voxels_scale_each_axis():
    """A z-normal plane's area scales with the y and x edges, not the z edge."""
    labels = np.full((10, 12, 12), SOLID, dtype=np.uint8)
    labels[:5] = PORE
    area = rm.specific_surface_area(labels, PORE, (7.0, 2.0, 3.0)) * labels.size * 7 * 2 * 3
    assert area == pytest.approx(11 * 2 * 11 * 3)


def test_circle_perimeter_2d():
    radius = 15
    pore = ball((1, 50, 50), radius, centre=(0, 25, 25))
    per_area = rm.specific_surface_area(as_labels(pore), PORE, (1, 2, 2))
    assert per_area * 50 * 50 * 4 == pytest.approx(2 * np.pi * radius * 2, rel=0.04)


# ----------------------------------------------------------------------------- Euler number


def test_euler_numbers_of_known_shapes():
    shape = (30, 30, 30)
    assert rm.euler_number(ball(shape, 8)) == 1
    assert rm.euler_number(ball(shape, 5, (8, 8, 8)) | ball(shape, 5, (21, 21, 21))) == 2
    shell = ball(shape, 11) & ~ball(shape, 7)  # a hollow sphere: one piece, one cavity
    assert rm.euler_number(shell) == 2
    z, y, x = np.indices(shape) - 15
    torus = (np.sqrt(y**2 + x**2) - 9) ** 2 + z**2 <= 3**2
    assert rm.euler_number(torus) == 0


def test_streamed_euler_equals_whole_volume():
    from skimage.measure import euler_number

    pore = np.random.default_rng(0).random((rm.SLAB * 2 + 7, 16, 16)) < 0.4
    assert rm.euler_number(pore) == euler_number(pore, connectivity=3)


# ----------------------------------------------------------------------------- pore sizes


def test_sphere_local_thickness():
    radius = 10
    pore = ball((30, 30, 30), radius)
    thickness = rm.local_thickness(pore, (1, 1, 1))
    assert np.all(thickness[~pore] == 0)
    # Every voxel of a ball lies in the ball itself: one thickness, its diameter (to a voxel).
    assert np.unique(thickness[pore]).size == 1
    assert thickness[pore][0] == pytest.approx(2 * radius, abs=1.0)


def test_cylinder_local_thickness_and_report():
    radius = 6
    disc = ball((1, 24, 24), radius, centre=(0, 12, 12))[0]
    pore = np.broadcast_to(disc, (20, 24, 24)).copy()
    report = analyze(as_labels(pore), (2.0, 2.0, 2.0), "um")
    size = report["pore_size"]
    assert size["mean"] == pytest.approx(2 * radius * 2.0, abs=2.0)
    assert size["median"] == pytest.approx(size["mean"], rel=0.1)
    cumulative = [b["cumulative"] for b in size["histogram"]]
    assert cumulative == sorted(cumulative) and cumulative[-1] == pytest.approx(1.0)
    assert sum(b["fraction"] for b in size["histogram"]) == pytest.approx(1.0)


def test_two_pore_sizes_split_the_distribution_by_volume():
    big, small = ball((40, 40, 40), 9, (12, 12, 12)), ball((40, 40, 40), 3, (30, 30, 30))
    diameters, fractions = rm.size_distribution(rm.local_thickness(big | small, (1, 1, 1)))
    assert len(diameters) == 2  # one thickness per ball
    assert fractions[0] == pytest.approx(small.sum() / (small.sum() + big.sum()))
    assert diameters == pytest.approx([6, 18], abs=1.0)


# ----------------------------------------------------------------------------- REV


def test_rev_settles_for_fine_texture_and_not_for_a_gradient():
    fine = np.random.default_rng(0).random((48, 48, 48)) < 0.3
    report = analyze(as_labels(fine))
    assert report["rev_size"] is not None and report["rev_size"] < 48
    graded = np.zeros((48, 48, 48), dtype=bool)
    graded[:, :, :24] = True  # half pore, half solid: sub-cubes swing between 0 and 1
    sizes, porosity = rm.rev_curve(graded, (1, 1, 1))
    assert rm.rev_size(sizes, porosity, 0.5) is None


def test_rev_size_rule():
    sizes = np.array([1.0, 2.0, 4.0, 8.0])
    porosity = np.array([[0.1, 0.308, 0.305, 0.3], [0.5, 0.295, 0.292, 0.3]])
    assert rm.rev_size(sizes, porosity, 0.3) == 2.0
    assert rm.rev_size(sizes, np.array([[0.1, 0.2, 0.5, 0.3]]), 0.3) is None  # settles only at the end


# ----------------------------------------------------------------------------- units and choices


def test_physical_units_scale_with_voxel_size():
    labels = as_labels(blobs((32, 32, 32)))
    one = analyze(labels, (1, 1, 1), "um")
    scaled = analyze(labels, (2.5, 2.5, 2.5), "um")
    for key in ("porosity", "connected_porosity", "isolated_porosity", "euler_number", "percolates"):
        assert scaled[key] == pytest.approx(one[key])
    assert scaled["pore_size"]["mean"] == pytest.approx(2.5 * one["pore_size"]["mean"], rel=1e-5)
    assert scaled["pore_size"]["median"] == pytest.approx(2.5 * one["pore_size"]["median"], rel=1e-5)
    assert scaled["rev"]["sizes"] == pytest.approx([2.5 * s for s in one["rev"]["sizes"]])
    for value, ssa in one["specific_surface_area"].items():
        assert scaled["specific_surface_area"][value] == pytest.approx(ssa / 2.5, rel=1e-5)


def test_pore_class_choice():
    assert pore_value([0, 1, 2, 3], ("pore", "clay", "quartz", "bright mineral")) == 0
    assert pore_value([10, 20, 30], ("grain", "Pore", "clay")) == 20
    assert pore_value([5, 9]) == 5  # no names: the darkest (lowest) class
    assert pore_value([0, 1, 2], ("a", "b", "c"), "c") == 2
    assert pore_value([0, 85, 170], (), "85") == 85
    with pytest.raises(InputError, match="not one of the class values"):
        pore_value([0, 1], ("pore", "grain"), "air")


def test_report_keys_and_pair_differences():
    truth = as_labels(blobs((24, 24, 24)))
    pred = truth.copy()
    pred[0, 0, :10] = PORE if truth[0, 0, 0] == SOLID else SOLID
    report = analyze_pair(truth, truth, (2.5,) * 3, "um")
    for side in ("truth", "prediction"):
        assert {"voxel_size", "unit", "phase_fractions", "porosity", "connected_porosity", "isolated_porosity",
                "percolates", "euler_number", "specific_surface_area", "pore_size", "rev_size"} <= set(report[side])
    assert report["difference"]["porosity_pp"] == 0 and report["difference"]["pore_size_distance"] == 0
    extra = np.zeros_like(truth)
    extra[truth == SOLID] = SOLID
    extra.flat[np.flatnonzero(truth == SOLID)[:100]] = PORE  # 100 more pore voxels
    diff = analyze_pair(truth, extra)["difference"]
    assert diff["porosity_pp"] == pytest.approx(100 * 100 / truth.size)
    assert diff["pore_size_distance"] > 0
    assert "pore-size distribution distance" in format_report(analyze_pair(truth, extra))
    assert to_csv(report).splitlines()[0] == "measure,truth,prediction,unit"


def test_volume_of_pore_only_has_no_pore_size():
    report = analyze(np.zeros((4, 10, 10), dtype=np.uint8))
    assert report["porosity"] == 1.0 and report["connected_porosity"] == 1.0
    assert report["pore_size"]["mean"] is None and report["pore_size"]["histogram"] == []


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match="shape"):
        analyze(np.zeros((2, 2, 2, 2), dtype=np.uint8))
    with pytest.raises(InputError, match="fractional"):
        analyze(np.full((2, 4, 4), 0.5))
    with pytest.raises(ConfigError, match="voxel size"):
        analyze(np.zeros((2, 4, 4), dtype=np.uint8), (1, -1, 1))
    with pytest.raises(InputError, match="local thickness needs the whole pore space"):
        rm.check_memory((512, 1024, 1024), "local thickness", available=2**30)


def test_parse_voxel_size():
    assert parse_voxel_size("2.5um") == ((2.5, 2.5, 2.5), "um")
    assert parse_voxel_size("2.5 µm") == ((2.5, 2.5, 2.5), "um")
    assert parse_voxel_size("0.0025mm") == ((0.0025, 0.0025, 0.0025), "mm")
    assert parse_voxel_size("5,2.5,2.5 microns") == ((5.0, 2.5, 2.5), "um")
    assert parse_voxel_size("3") == ((3.0, 3.0, 3.0), "px")
    for bad in ("2.5 furlongs", "-1um", "2,3um", ""):
        with pytest.raises(ConfigError, match="voxel size"):
            parse_voxel_size(bad)


def test_read_voxel_size_from_tiff(tmp_path):
    import tifffile

    data = np.zeros((3, 8, 8), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 2.5, 1 / 2.0),
                     metadata={"spacing": 5.0, "unit": "\\u00B5m", "axes": "ZYX"})
    sizes, unit = read_voxel_size(tmp_path / "ij.tif")
    assert sizes == pytest.approx((5.0, 2.0, 2.5)) and unit == "um"
    tifffile.imwrite(tmp_path / "cm.tif", data, resolution=(4000, 4000), resolutionunit="CENTIMETER")
    sizes, unit = read_voxel_size(tmp_path / "cm.tif")
    assert sizes == pytest.approx((2.5, 2.5, 2.5)) and unit == "um"
    tifffile.imwrite(tmp_path / "dpi.tif", data, resolution=(72, 72), resolutionunit="INCH")
    assert read_voxel_size(tmp_path / "dpi.tif") is None  # an editor's dpi, not a voxel size
    tifffile.imwrite(tmp_path / "plain.tif", data)
    assert read_voxel_size(tmp_path / "plain.tif") is None


# ----------------------------------------------------------------------------- PoreSpy cross-check


def test_against_porespy():
    ps = pytest.importorskip("porespy")
    pore = blobs()
    per_axis, _, _ = rm.connectivity(pore)
    for axis, name in enumerate(rm.AXES):
        trimmed = ps.filters.trim_nonpercolating_paths(pore, axis=axis)
        assert per_axis[name] == pytest.approx(trimmed.sum() / pore.size, abs=1e-12)
    # PoreSpy bins local thickness into whole-voxel radii: the same sphere, and the same mean
    # within half a voxel of radius on a random pore space.
    sphere = ball((30, 30, 30), 10)
    ours = rm.local_thickness(sphere, (1, 1, 1))
    theirs = ps.filters.local_thickness(sphere, method="dt", smooth=False)
    assert ours[sphere].mean() / 2 == pytest.approx(theirs[sphere].mean(), abs=0.5)
    ours, theirs = rm.local_thickness(pore, (1, 1, 1)), ps.filters.local_thickness(pore, method="dt", smooth=False)
    assert ours[pore].mean() / 2 == pytest.approx(theirs[pore].mean(), abs=0.5)
    # Surface area: PoreSpy's mesh (ball(1) blur + marching cubes) of an interior sphere.
    mesh = ps.tools.mesh_region(sphere)
    from skimage.measure import mesh_surface_area

    area = rm.specific_surface_area(as_labels(sphere), PORE, (1, 1, 1)) * sphere.size
    assert area == pytest.approx(mesh_surface_area(mesh.verts, mesh.faces), rel=0.01)


@pytest.mark.parametrize("n_z", [3, 7])
def test_label_stack_written_slab_by_slab_keeps_the_voxel_size(tmp_path, n_z):
    from napari_sandseg.io import read_volume
    from napari_sandseg.lazy import open_volume
    from napari_sandseg.outputs import slab_writer

    labels = (np.arange(n_z * 6 * 5).reshape(n_z, 6, 5) % 4).astype(np.uint8)
    path = tmp_path / "labels.tif"
    with slab_writer(path, labels.shape, labels.dtype, voxel_size=((5.0, 2.5, 2.0), "um")) as writer:
        writer.write(0, labels[:2])
        writer.write(2, labels[2:])
    sizes, unit = read_voxel_size(path)
    assert sizes == pytest.approx((5.0, 2.5, 2.0)) and unit == "um"
    np.testing.assert_array_equal(read_volume(path), labels)  # 3 slices stay slices, not RGB
    np.testing.assert_array_equal(open_volume(path)[1:3], labels[1:3])


def test_local_thickness_with_anisotropic_voxels():
    """A pore layer 6 slices thick, z edge 2: 12 units thick, however wide the layer is."""
    pore = np.zeros((16, 20, 20), dtype=bool)
    pore[5:11] = True
    thickness = rm.local_thickness(pore, (2.0, 1.0, 1.0))
    assert thickness[pore].max() == pytest.approx(12.0, abs=2.0)  # to a voxel, as for the sphere
    assert np.all(thickness[~pore] == 0)


def test_2d_disc_and_ring():
    disc = ball((1, 40, 40), 12, (0, 20, 20))
    ring = disc & ~ball((1, 40, 40), 6, (0, 20, 20))
    assert rm.euler_number(disc) == 1 and rm.euler_number(ring) == 0
    thickness = rm.local_thickness(disc, (1, 0.5, 0.5))  # discs in the slice plane, y/x edges 0.5
    assert thickness[disc].max() == pytest.approx(12.0, abs=0.5)
