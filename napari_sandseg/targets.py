"""Where a result may be written: the one check of an output path, and its messages.

Every writer (:func:`napari_sandseg.io.atomic_write`, hence ``write_volume``/``write_labels``
and the TIFF slab writer; the zarr slab writer; :func:`napari_sandseg.model.save_model`;
``predict_file``, ``predict_cluster``, ``train``, the bioimage.io package export and
extraction), the command line and the widgets ask
:func:`target_problem` (or :func:`check_target`, which raises it) before they write. A bad
destination is so refused before any slow work, in the same words wherever it is met; only
the name of the overwrite switch differs (``--overwrite``, the widget's box, ``overwrite=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence, Union

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

#: A model file's ending; Keras itself demands exactly this, lower case.
MODEL_SUFFIX = ".keras"

#: Ending of an output written as a zarr store (a folder) instead of a file.
ZARR_SUFFIX = ".zarr"

#: Files whose presence makes a folder a zarr store (v3 array or group, v2 array, v2 group).
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")

#: Endings a segmentation (labels, probabilities, uncertainty) can be chosen with in a widget.
SEGMENTATION_SUFFIXES = (".tif", ".tiff", ZARR_SUFFIX)

#: How each front end lets a user replace an existing output (named in the "already exists" message).
OVERWRITE_API = "overwrite=True"
OVERWRITE_CLI = "--overwrite"
OVERWRITE_WIDGET = "tick 'overwrite existing files'"

# Endings compared exactly; the others ignore case (.TIF is a TIFF, .ZARR a store).
_CASE_SENSITIVE = frozenset({MODEL_SUFFIX})


def is_zarr_path(path: PathLike) -> bool:
    """Whether an output path names a zarr store (ends in ``.zarr``, any case)."""
    return Path(path).suffix.lower() == ZARR_SUFFIX


def is_zarr_store(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding zarr metadata (:data:`ZARR_MARKERS`)."""
    p = Path(path)
    return p.is_dir() and any((p / marker).is_file() for marker in ZARR_MARKERS)


def target_problem(
    path: PathLike,
    overwrite: bool = False,
    *,
    suffixes: Sequence[str] | None = None,
    inputs: Iterable[PathLike | None] = (),
    allow: str = OVERWRITE_API,
    store: bool | None = None,
) -> str | None:
    """Why ``path`` cannot take an output (one line for the user, naming the path), or None.

    Parameters
    ----------
    path : path-like
        The destination.
    overwrite : bool
        The user agreed to replace an existing output.
    suffixes : sequence of str, optional
        Endings the destination must have (e.g. ``(".keras",)``); None accepts any.
    inputs : iterable of path-like, optional
        Files or stores the same run reads; an output must never be one of them, even with
        ``overwrite``. None entries are skipped.
    allow : str
        How the caller's user allows overwriting (:data:`OVERWRITE_CLI`, ...), for the message.
    store : bool, optional
        The output is a zarr store (a folder) rather than a file; None decides by the
        ``.zarr`` ending. An existing folder is replaced only when it is a zarr store: replacing
        deletes it.

    Returns
    -------
    str or None
    """
    path = Path(path)
    if suffixes is not None and not _has_suffix(path, suffixes):
        return f"{path}: the file name must end in {_alternatives(suffixes)}"
    for source in inputs:
        if source is not None and path.resolve() == Path(source).resolve():
            return f"{path}: is also an input of this run; choose another name (an output never overwrites its input)"
    store = is_zarr_path(path) if store is None else store
    if path.is_dir() and not store:
        return f"{path}: is a folder; give a file name"
    if path.is_dir() and not is_zarr_store(path):
        return f"{path}: is a folder but not a zarr store, and replacing it would delete it; choose another name"
    if path.exists() and not overwrite:
        return f"{path}: already exists; choose another name or allow overwriting ({allow})"
    parent = path.parent
    if not parent.is_dir():
        return f"{path}: the folder {parent} does not exist; create it first"
    if not os.access(parent, os.W_OK):
        return not_writable(path)
    return None


def not_writable(path: PathLike, reason: str = "") -> str:
    """The message for an output whose folder refuses new files (``reason``: the system's words).

    Also what a writer says when the system refuses a file that :func:`target_problem` let
    pass (root, whom ``os.access`` always allows; read-only mounts; network file systems).
    """
    path = Path(path)
    because = f" ({reason})" if reason else ""
    return f"{path}: the folder {path.parent} is not writable{because}; choose a folder you can write to"


def check_target(path: PathLike, overwrite: bool = False, **rules) -> Path:
    """:func:`target_problem` as an :class:`~napari_sandseg.errors.OutputError`; returns ``Path(path)``.

    ``rules`` are the keywords of :func:`target_problem` (``suffixes``, ``inputs``, ``allow``,
    ``store``).
    """
    problem = target_problem(path, overwrite, **rules)
    if problem is not None:
        raise OutputError(problem)
    return Path(path)


def check_targets(paths: Iterable[PathLike | None], overwrite: bool = False, **rules) -> list[Path]:
    """Check the outputs of one run: each as :func:`check_target`, and no two the same.

    None entries (outputs not asked for) are skipped. Returns the checked paths.
    """
    targets = [Path(p) for p in paths if p is not None]
    resolved = [p.resolve() for p in targets]
    if len(set(resolved)) != len(resolved):
        raise OutputError(f"the outputs must be different files, got {[str(p) for p in targets]}")
    return [check_target(p, overwrite, **rules) for p in targets]


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return any(path.suffix == s or (s not in _CASE_SENSITIVE and path.suffix.lower() == s) for s in suffixes)


def _alternatives(suffixes: Sequence[str]) -> str:
    """``(".tif", ".tiff", ".zarr")`` -> ``".tif, .tiff or .zarr"``."""
    return suffixes[0] if len(suffixes) == 1 else f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
