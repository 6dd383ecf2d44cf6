"""Rock properties of a label volume in physical units: porosity, connectivity, pore sizes, REV.

:func:`analyze` turns a ``(Z, Y, X)`` volume of class values into one JSON-ready report (the
keys ``sandseg analyze --json`` writes); :func:`analyze_pair` measures a ground truth and a
prediction side by side with their differences. The measures live in
:mod:`napari_sandseg.rock_measures`; this module picks the pore class, checks memory and input,
and lays out the report. Lengths are in the voxel-size unit (``unit``), areas per volume in
1/unit. A single slice is measured in 2D (the report's ``dimensions`` is 2 and ``notes`` says
which measures changed meaning).
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np

from . import rock_measures as rm
from .classmap import MAX_CLASSES, SANDSTONE_NAMES, check_integer_valued
from .errors import InputError, SandsegWarning
from .io import check_pair
from .units import check_voxel_size

#: Name of the class that is pore space by default.
PORE_NAME = SANDSTONE_NAMES[0]

#: How close the sub-cube porosities must stay to the whole-volume porosity for the REV (fraction).
REV_TOLERANCE = 0.01

#: Unit of lengths when no voxel size is known.
NO_UNIT = "px"

#: Steps reported to ``progress`` (so a widget or a bar can show how far the analysis is).
STEPS = ("phase fractions", "surface area", "Euler number", "connectivity", "local thickness", "REV")


def pore_value(values: Sequence[int], names: Sequence[str] = (), choice: str | int | None = None) -> int:
    """The class value that is pore space.

    Parameters
    ----------
    values : sequence of int
        Class values, ascending (those present, or a class map's).
    names : sequence of str, optional
        Class names, one per value.
    choice : str or int, optional
        The user's choice: a class value or a class name (case-insensitive). By default the class
        named ``"pore"``, else the darkest class: the lowest value (class values follow the grey
        level, as in the reference sandstone where 0 is pore).

    Raises
    ------
    InputError
        If ``choice`` is neither one of ``values`` nor one of ``names``.
    """
    values = [int(v) for v in values]
    lowered = [str(n).lower() for n in names]
    if choice is None:
        return values[lowered.index(PORE_NAME)] if PORE_NAME in lowered and len(names) == len(values) else values[0]
    text = str(choice).strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is not None and value in values:
        return value
    if text.lower() in lowered and len(names) == len(values):
        return values[lowered.index(text.lower())]
    named = f" or names {list(names)}" if names else ""
    raise InputError(f"pore class {choice!r} is not one of the class values {values}{named}")


def iter_analyze(
    labels: np.ndarray,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    unit: str = NO_UNIT,
    *,
    pore: str | int | None = None,
    names: Sequence[str] = (),
    values: Sequence[int] | None = None,
    n_sizes: int = 25,
    pore_sizes: bool = True,
    source: str = "labels",
) -> Generator[tuple[int, int, str], None, dict[str, Any]]:
    """Measure a label volume: phase fractions, porosity and connectivity, surface areas, Euler
    number, pore-size distribution and REV.

    Parameters
    ----------
    labels : ndarray
        ``(Z, Y, X)`` (or ``(Y, X)``) class values; may be memory-mapped (streamed measures read
        it slab by slab).
    voxel_size : sequence of float
        ``(z, y, x)`` voxel edges in ``unit`` (one number: cubic voxels).
    unit : str
        Length unit of ``voxel_size`` and of every length in the report.
    pore : str or int, optional
        Pore class value or name (see :func:`pore_value`).
    names : sequence of str, optional
        Class names, one per value of ``values``.
    values : sequence of int, optional
        The class values (default: the values present). Give the same list for two volumes that
        are compared, so both report the same classes.
    n_sizes : int
        Ball radii tried by the local thickness.
    pore_sizes : bool
        Measure the pore-size distribution (local thickness: the slowest measure, and the one
        that needs the most memory); without it ``pore_size`` holds nulls.
    source : str
        What to call the volume in error messages.

    Yields
    ------
    (step, n_steps, name)
        Before each step of :data:`STEPS` (a caller may stop between steps).

    Returns
    -------
    dict
        JSON-ready report; keys described in the README's "Rock properties" section.

    Raises
    ------
    InputError
        Not 2D/3D, not integer-valued, too many classes, an unknown pore class, a bad voxel size,
        or a volume whose whole-pore-space measures would not fit in memory.
    """
    labels = _as_volume(labels, source)
    voxel_size = check_voxel_size(voxel_size)
    if values is None:
        values = _present_values(labels, source)
    values = [int(v) for v in values]
    pore_class = pore_value(values, names, pore)
    two_d = rm.is_2d(labels.shape)
    # Refuse up front, not after the streamed measures have run for minutes.
    rm.check_memory(labels.shape, "connectivity")
    if pore_sizes:
        rm.check_memory(labels.shape, "local thickness")
    yield 0, len(STEPS), STEPS[0]
    whole, per_slice = rm.phase_fractions(labels, values)
    porosity = float(whole[values.index(pore_class)])
    yield 1, len(STEPS), STEPS[1]
    ssa = {str(v): rm.specific_surface_area(labels, v, voxel_size) for v in values}
    pore_mask = np.zeros(labels.shape, dtype=bool)
    for z0 in range(0, labels.shape[0], rm.SLAB):
        pore_mask[z0 : z0 + rm.SLAB] = np.asarray(labels[z0 : z0 + rm.SLAB]) == pore_class
    yield 2, len(STEPS), STEPS[2]
    euler = rm.euler_number(pore_mask)
    yield 3, len(STEPS), STEPS[3]
    per_axis, percolates, connected = rm.connectivity(pore_mask)
    yield 4, len(STEPS), STEPS[4]
    diameters = fractions = np.zeros(0)
    if pore_sizes:
        diameters, fractions = rm.size_distribution(rm.local_thickness(pore_mask, voxel_size, n_sizes))
    yield 5, len(STEPS), STEPS[5]
    sizes, rev_porosity = rm.rev_curve(pore_mask, voxel_size)
    return {
        "voxel_size": list(voxel_size),
        "unit": unit,
        "shape": list(labels.shape),
        "dimensions": 2 if two_d else 3,
        "pore_class": pore_class,
        "class_names": {str(v): str(n) for v, n in zip(values, names)} if len(names) == len(values) else {},
        "phase_fractions": {str(v): float(f) for v, f in zip(values, whole)},
        "phase_fractions_per_slice": {str(v): [float(f) for f in row] for v, row in zip(values, per_slice)},
        "porosity": porosity,
        "porosity_profile": [float(f) for f in per_slice[values.index(pore_class)]],
        "connected_porosity": connected,
        "connected_porosity_per_axis": per_axis,
        "isolated_porosity": porosity - connected,
        "percolates": percolates,
        "euler_number": euler,
        "specific_surface_area": ssa,
        "pore_size": _pore_size(diameters, fractions),
        "rev": {
            "sizes": [float(s) for s in sizes],
            "porosity": [[float(p) for p in row] for row in rev_porosity],
            "tolerance": REV_TOLERANCE,
        },
        "rev_size": rm.rev_size(sizes, rev_porosity, porosity, REV_TOLERANCE),
        "notes": _notes(two_d) + ([] if pore_sizes else ["pore sizes not measured (pore_sizes=False)"]),
    }


def analyze(labels: np.ndarray, *args: Any, progress: Callable[[int, int, str], None] | None = None,
            **kwargs: Any) -> dict[str, Any]:
    """:func:`iter_analyze` run to the end; ``progress(step, n_steps, name)`` is called before each step."""
    return _drain(iter_analyze(labels, *args, **kwargs), progress)


def analyze_pair(*args: Any, progress: Callable[[int, int, str], None] | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`iter_analyze_pair` run to the end, as :func:`analyze`."""
    return _drain(iter_analyze_pair(*args, **kwargs), progress)


def _drain(steps: Generator[tuple[int, int, str], None, dict[str, Any]], progress) -> dict[str, Any]:
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(*step)


def iter_analyze_pair(
    truth: np.ndarray,
    prediction: np.ndarray,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    unit: str = NO_UNIT,
    *,
    pore: str | int | None = None,
    names: Sequence[str] = (),
    n_sizes: int = 25,
    pore_sizes: bool = True,
    sources: tuple[str, str] = ("truth", "prediction"),
) -> Generator[tuple[int, int, str], None, dict[str, Any]]:
    """Measure a ground truth and a prediction on the same classes, with their differences.

    A generator like :func:`iter_analyze` (steps of both sides, numbered on), returning the report.

    Both volumes are measured with the union of their class values (so a class one side lacks
    has fraction 0 there). ``difference`` holds prediction minus truth: ``porosity_pp``,
    ``connected_porosity_pp`` and ``isolated_porosity_pp`` in percentage points,
    ``phase_fractions_pp`` per class, ``euler_number``, ``specific_surface_area`` per class,
    ``pore_size_mean`` and ``rev_size`` (length, None when either is None), and
    ``pore_size_distance``: the Wasserstein-1 (earth mover's) distance between the two
    volume-weighted pore-size distributions, in the length unit.
    """
    truth = _as_volume(truth, sources[0])
    prediction = _as_volume(prediction, sources[1])
    check_pair(truth, prediction, sources[0], sources[1])
    values = sorted(set(_present_values(truth, sources[0])) | set(_present_values(prediction, sources[1])))
    if len(names) != len(values):
        names = ()  # the names given belong to another class list; fall back to the values

    common = dict(pore=pore, names=names, values=values, n_sizes=n_sizes, pore_sizes=pore_sizes)
    sides = {}
    for i, (name, volume, source) in enumerate(zip(("truth", "prediction"), (truth, prediction), sources)):
        steps = iter_analyze(volume, voxel_size, unit, source=source, **common)
        while True:
            try:
                step, n_steps, what = next(steps)
            except StopIteration as stop:
                sides[name] = stop.value
                break
            yield i * n_steps + step, 2 * n_steps, f"{name}: {what}"
    t, p = sides["truth"], sides["prediction"]
    return {"voxel_size": t["voxel_size"], "unit": unit, "truth": t, "prediction": p, "difference": difference(t, p)}


def difference(truth: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any]:
    """Prediction minus truth for two :func:`analyze` reports (see :func:`analyze_pair`)."""
    from scipy.stats import wasserstein_distance

    def pp(key: str) -> float:
        return 100.0 * (prediction[key] - truth[key])

    t_size, p_size = truth["pore_size"], prediction["pore_size"]
    distance = None
    if t_size["histogram"] and p_size["histogram"]:
        distance = float(wasserstein_distance(
            [b["diameter"] for b in t_size["histogram"]], [b["diameter"] for b in p_size["histogram"]],
            [b["fraction"] for b in t_size["histogram"]], [b["fraction"] for b in p_size["histogram"]],
        ))
    return {
        "porosity_pp": pp("porosity"),
        "connected_porosity_pp": pp("connected_porosity"),
        "isolated_porosity_pp": pp("isolated_porosity"),
        "phase_fractions_pp": {
            k: 100.0 * (prediction["phase_fractions"][k] - truth["phase_fractions"][k]) for k in truth["phase_fractions"]
        },
        "euler_number": prediction["euler_number"] - truth["euler_number"],
        "specific_surface_area": {
            k: prediction["specific_surface_area"][k] - truth["specific_surface_area"][k]
            for k in truth["specific_surface_area"]
        },
        "pore_size_mean": _minus(p_size["mean"], t_size["mean"]),
        "pore_size_distance": distance,
        "rev_size": _minus(prediction["rev_size"], truth["rev_size"]),
    }


#: Largest volume (voxels, each side) whose pore sizes an evaluation measures: local thickness
#: is the slowest measure (``benchmarks/analyze.py``: about a minute for the whole analysis of
#: 128 x 256 x 256 on 2 cores), and IoU should not wait minutes for it. 4 slices of 1024 x 1024.
EVALUATE_PORE_SIZE_VOXELS = 2**22

#: Keys of each side of an evaluation's ``physical`` block (the per-slice profiles and the REV
#: curves are left to ``sandseg analyze``).
PHYSICAL_KEYS = (
    "dimensions", "pore_class", "class_names", "phase_fractions", "porosity", "connected_porosity",
    "isolated_porosity", "percolates", "euler_number", "specific_surface_area", "pore_size", "rev_size",
)

#: Rows of the compact physical-accuracy table (labels of :func:`summary_table`).
PHYSICAL_ROWS = ("porosity", "connected porosity", "isolated porosity", "Euler number", "mean pore size",
                 "pore-size distribution distance")


def physical_accuracy(
    truth: np.ndarray,
    prediction: np.ndarray,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    unit: str = NO_UNIT,
    *,
    pore: str | int | None = None,
    names: Sequence[str] = (),
    pore_sizes: bool | None = None,
) -> dict[str, Any]:
    """Physical accuracy of a prediction, the ``physical`` block of ``sandseg evaluate --json``.

    :func:`analyze_pair` of the two volumes, each side cut down to :data:`PHYSICAL_KEYS`. A single
    slice is measured in 2D (``dimensions`` 2; ``notes`` says what that changes).

    Parameters
    ----------
    truth, prediction : ndarray
        Class values, ``(Z, Y, X)`` or ``(Y, X)``, the same shape.
    voxel_size, unit, pore, names
        As in :func:`iter_analyze_pair`.
    pore_sizes : bool, optional
        Measure the pore-size distribution; by default only up to
        :data:`EVALUATE_PORE_SIZE_VOXELS` voxels and when it fits in memory (a note says why not).

    Returns
    -------
    dict
        ``voxel_size``, ``unit``, ``truth``, ``prediction``, ``difference`` (as
        :func:`analyze_pair`) and ``notes``; or, when the measures that need the whole pore space
        would not fit in memory, ``voxel_size``, ``unit`` and ``skipped`` (the reason) only, so
        the IoU figures are still reported.
    """
    shape = (1,) * (3 - np.ndim(truth)) + tuple(np.shape(truth))
    notes: list[str] = []
    try:
        rm.check_memory(shape, "connectivity")
    except InputError as exc:
        return {"voxel_size": list(check_voxel_size(voxel_size)), "unit": unit, "skipped": str(exc)}
    if pore_sizes is None:
        pore_sizes = int(np.prod(shape)) <= EVALUATE_PORE_SIZE_VOXELS
        if not pore_sizes:
            notes.append(f"pore sizes not measured: {' x '.join(map(str, shape))} is over "
                         f"{EVALUATE_PORE_SIZE_VOXELS:,} voxels (local thickness is slow); use sandseg analyze")
        else:
            try:
                rm.check_memory(shape, "local thickness")
            except InputError as exc:
                pore_sizes = False
                notes.append(f"pore sizes not measured: {exc}")
    report = analyze_pair(truth, prediction, voxel_size, unit, pore=pore, names=names, pore_sizes=pore_sizes)
    sides = {side: {k: report[side][k] for k in PHYSICAL_KEYS} for side in ("truth", "prediction")}
    return {"voxel_size": report["voxel_size"], "unit": unit, **sides, "difference": report["difference"],
            "notes": notes + report["truth"]["notes"]}


def physical_rows(physical: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of text of the compact physical-accuracy table (:data:`PHYSICAL_ROWS`).

    ``physical`` is :func:`physical_accuracy`'s block; a skipped one gives no rows.
    """
    if "skipped" in physical:
        return ["measure", "truth", "prediction", "difference"], []
    columns, rows = summary_table(physical)
    return columns, [row for row in rows if row[0] in PHYSICAL_ROWS]


#: Differences averaged (as absolute values) over the slices of a per-slice physical block.
PER_SLICE_MEANS = ("porosity_pp", "connected_porosity_pp", "isolated_porosity_pp", "pore_size_distance")


def physical_accuracy_per_slice(truth: np.ndarray, prediction: np.ndarray, voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
                                unit: str = NO_UNIT, **kwargs: Any) -> dict[str, Any]:
    """:func:`physical_accuracy` of each slice on its own, in 2D, for a stack whose slices are not
    neighbours (the held-out slices of the slices protocol), where 3D measures would mean nothing.

    Returns
    -------
    dict
        ``voxel_size``, ``unit``, ``per_slice`` (``{"slice": z, ...}`` per slice, each a
        :func:`physical_accuracy` block), ``mean_abs_difference`` (:data:`PER_SLICE_MEANS`,
        None where no slice has the figure) and ``notes``.
    """
    truth, prediction = _as_volume(truth, "truth"), _as_volume(prediction, "prediction")
    check_pair(truth, prediction, "truth", "prediction")
    slices = [{"slice": z, **physical_accuracy(truth[z], prediction[z], voxel_size, unit, **kwargs)}
              for z in range(truth.shape[0])]
    means = {}
    for key in PER_SLICE_MEANS:
        found = [abs(s["difference"][key]) for s in slices if "difference" in s and s["difference"][key] is not None]
        means[key] = float(np.mean(found)) if found else None
    return {"voxel_size": list(check_voxel_size(voxel_size)), "unit": unit, "per_slice": slices,
            "mean_abs_difference": means,
            "notes": ["each slice measured on its own, in 2D (per slice): the slices are not taken as neighbours"]}


def physical_notes(physical: dict[str, Any]) -> list[str]:
    """The notes of a physical block that change what its figures mean (2D, pore sizes left out)."""
    return [n for n in physical.get("notes", []) if n.startswith(("pore sizes not", "one slice"))]


def format_physical(physical: dict[str, Any]) -> str:
    """The compact physical-accuracy table as text, for the command line (one per slice for a
    :func:`physical_accuracy_per_slice` block, then the mean absolute differences)."""
    if "per_slice" in physical:
        parts = [f"slice {s['slice']}: {format_physical(s)}" for s in physical["per_slice"]]
        means = ", ".join(f"{k} {v:.4g}" for k, v in physical["mean_abs_difference"].items() if v is not None)
        return "\n".join(parts + [f"mean absolute difference over {len(parts)} slices: {means}"])
    if "skipped" in physical:
        return f"physical measures skipped: {physical['skipped']}"
    columns, rows = physical_rows(physical)
    lines = [f"physical accuracy: {report_header(physical)}"]
    for cells in [columns] + rows:
        lines.append(f"{cells[0]:<34}  " + "  ".join(f"{c:>14}" for c in cells[1:]))
    return "\n".join(lines + [f"note: {n}" for n in physical_notes(physical)])


def analyze_files(
    labels_path: str | Path,
    truth_path: str | Path | None = None,
    voxel_size: str | None = None,
    pore: str | None = None,
    pore_sizes: bool = True,
    **reading: Any,
) -> dict[str, Any]:
    """What ``sandseg analyze`` does: open the label file(s) lazily and measure them.

    Parameters
    ----------
    labels_path : path-like
        Label volume (TIFF, folder of TIFFs, zarr), read slab by slab where a measure streams.
    truth_path : path-like, optional
        Ground truth of the same shape; then the report is :func:`analyze_pair`'s.
    voxel_size : str, optional
        Text such as ``"2.5um"`` (:func:`napari_sandseg.units.parse_voxel_size`); by default the
        voxel size the labels (else the truth) file carries, else 1 px with a warning.
    pore : str, optional
        Pore class value or name (:func:`pore_value`).
    pore_sizes : bool
        Measure the pore-size distribution (see :func:`iter_analyze`).
    **reading
        Reading options of :func:`napari_sandseg.lazy.open_volume`.
    """
    from .lazy import open_volume
    from .units import resolve_voxel_size

    paths = [Path(labels_path)] + ([Path(truth_path)] if truth_path is not None else [])
    (sizes, unit), note = resolve_voxel_size(voxel_size, paths)
    volumes = [open_volume(p, **reading) for p in paths]
    if truth_path is None:
        report = analyze(volumes[0], sizes, unit, pore=pore, pore_sizes=pore_sizes, source=str(paths[0]))
    else:
        report = analyze_pair(volumes[1], volumes[0], sizes, unit, pore=pore, pore_sizes=pore_sizes,
                              sources=(str(paths[1]), str(paths[0])))
    if note is not None:  # said once the measures succeeded, so an error stays the only line
        warnings.warn(note, SandsegWarning, stacklevel=2)
    return report


#: Rows of the summary table and CSV: (label, key path, scale, format).
_SUMMARY = (
    ("porosity", ("porosity",), 100, "{:.2f} %"),
    ("connected porosity", ("connected_porosity",), 100, "{:.2f} %"),
    ("isolated porosity", ("isolated_porosity",), 100, "{:.2f} %"),
    ("percolates z", ("percolates", "z"), None, "{}"),
    ("percolates y", ("percolates", "y"), None, "{}"),
    ("percolates x", ("percolates", "x"), None, "{}"),
    ("Euler number", ("euler_number",), None, "{}"),
    ("mean pore size", ("pore_size", "mean"), 1, "{:.4g}"),
    ("median pore size", ("pore_size", "median"), 1, "{:.4g}"),
    ("REV size", ("rev_size",), 1, "{:.4g}"),
)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(label, value)`` rows of one :func:`analyze` report, for tables and CSV files."""
    rows: list[tuple[str, Any]] = []
    names = report.get("class_names", {})

    def named(value: str) -> str:
        return f"{names[value]} ({value})" if value in names else f"class {value}"

    for value, fraction in report["phase_fractions"].items():
        rows.append((f"fraction of {named(value)}", fraction))
    for label, path, _, _ in _SUMMARY:
        rows.append((label, _get(report, path)))
    for value, area in report["specific_surface_area"].items():
        rows.append((f"specific surface area of {named(value)}", area))
    return rows


def report_header(report: dict[str, Any]) -> str:
    """One line: voxel size, pore class and dimensions of a report (single or pair)."""
    first = report["truth"] if "truth" in report else report
    sizes = " x ".join(f"{v:g}" for v in report["voxel_size"])
    return f"voxel size {sizes} {report['unit']} (z, y, x); pore class {first['pore_class']}; {first['dimensions']}D"


def summary_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of text of a report (single, or truth / prediction / difference)."""
    pair = "truth" in report
    unit = report["unit"]
    reports = [report["truth"], report["prediction"]] if pair else [report]
    columns = ["measure"] + (["truth", "prediction", "difference"] if pair else ["value"])
    diff = report.get("difference", {})
    diff_of = {"porosity": "porosity_pp", "connected porosity": "connected_porosity_pp",
               "isolated porosity": "isolated_porosity_pp", "Euler number": "euler_number",
               "mean pore size": "pore_size_mean"}
    all_rows = [summary_rows(r) for r in reports]
    rows = []
    for i, (label, _) in enumerate(all_rows[0]):
        cells = [label] + [_show(label, side[i][1], unit) for side in all_rows]
        if pair:
            d = diff.get(diff_of.get(label, ""), None)
            cells.append(_show_difference(label, d, unit))
        rows.append(cells)
    if pair and diff.get("pore_size_distance") is not None:
        rows.append(["pore-size distribution distance", "", "", f"{diff['pore_size_distance']:.4g} {unit}"])
    return columns, rows


def format_report(report: dict[str, Any]) -> str:
    """A printable table of an :func:`analyze` or :func:`analyze_pair` report."""
    columns, rows = summary_table(report)
    lines = [report_header(report)]
    for cells in [columns] + rows:
        lines.append(f"{cells[0]:<40}  " + "  ".join(f"{c:>22}" for c in cells[1:]))
    return "\n".join(lines)


def to_csv(report: dict[str, Any]) -> str:
    """The summary of a report as CSV: ``measure,value`` (or ``measure,truth,prediction``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if "truth" in report:
        writer.writerow(["measure", "truth", "prediction", "unit"])
        for (label, t), (_, p) in zip(summary_rows(report["truth"]), summary_rows(report["prediction"])):
            writer.writerow([label, t, p, _unit_of(label, report["unit"])])
    else:
        writer.writerow(["measure", "value", "unit"])
        for label, value in summary_rows(report):
            writer.writerow([label, value, _unit_of(label, report["unit"])])
    return out.getvalue()


# ----------------------------------------------------------------------------- helpers


def _as_volume(labels: np.ndarray, source: str) -> np.ndarray:
    """A ``(Z, Y, X)`` view of a 2D or 3D integer-valued label array."""
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or 0 in labels.shape:
        raise InputError(f"{source}: shape {tuple(labels.shape)}; a label volume is (Z, Y, X) or (Y, X) and not empty")
    if labels.dtype.kind not in "biu":
        check_integer_valued(np.asarray(labels[: rm.SLAB]), source)
    return labels


def _present_values(labels: np.ndarray, source: str) -> list[int]:
    """Distinct class values, slab by slab; refuses an image passed as labels."""
    found: set[int] = set()
    for z0 in range(0, labels.shape[0], rm.SLAB):
        slab = np.asarray(labels[z0 : z0 + rm.SLAB])
        check_integer_valued(slab, source)
        found.update(int(v) for v in np.unique(slab))
        if len(found) > MAX_CLASSES:
            raise InputError(
                f"{source}: more than {MAX_CLASSES} distinct values; is this an image rather than a label volume?"
            )
    return sorted(found)


def _pore_size(diameters: np.ndarray, fractions: np.ndarray) -> dict[str, Any]:
    """Mean, median and histogram (with cumulative curve) of the volume-weighted local thickness."""
    if diameters.size == 0:
        return {"mean": None, "median": None, "histogram": [], "weighting": "pore volume"}
    cumulative = np.cumsum(fractions)
    median = float(diameters[np.searchsorted(cumulative, 0.5 - 1e-12)])
    return {
        "mean": float(np.sum(diameters * fractions)),
        "median": median,
        "histogram": [
            {"diameter": float(d), "fraction": float(f), "cumulative": float(min(c, 1.0))}
            for d, f, c in zip(diameters, fractions, cumulative)
        ],
        "weighting": "pore volume",
    }


def _notes(two_d: bool) -> list[str]:
    notes = [
        "connected porosity: pore clusters (face-connected) touching both faces of an axis; "
        "isolated porosity = porosity - connected porosity",
        "Euler number: pore space 26-connected" if not two_d else "Euler number: pore space 8-connected (2D)",
        "pore size: local thickness (diameter of the largest inscribed ball), weighted by pore volume",
    ]
    if two_d:
        notes += [
            "one slice, measured in 2D: specific surface area is perimeter per unit area; local thickness "
            "uses discs; connectivity and REV are within the slice (z entries are null)",
        ]
    return notes


def _show_difference(label: str, d: Any, unit: str) -> str:
    if d is None:
        return ""
    if label.endswith("porosity"):
        return f"{d:+.2f} pp"
    return f"{d:+}" if isinstance(d, (int, np.integer)) else f"{d:+.4g} {_unit_of(label, unit)}".strip()


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        value = value[key]
    return value


def _unit_of(label: str, unit: str) -> str:
    if label.startswith("specific surface area"):
        return f"1/{unit}"
    if label.endswith("size"):
        return unit
    return ""


def _show(label: str, value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if label.endswith("porosity") or label.startswith("fraction"):
        return f"{100 * value:.2f} %"
    if isinstance(value, (int, np.integer)):
        return str(value)
    unit_text = _unit_of(label, unit)
    return f"{value:.4g} {unit_text}".strip()
