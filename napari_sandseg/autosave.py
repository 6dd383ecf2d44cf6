"""Autosave of hand-edited label slices, so a crash or a closed window loses none of them.

Only the slices a user painted are stored (one ``.npz`` per layer: slice indices, the slices'
label values, the painted pixels of each slice as a boolean mask, and a JSON header; files
of format 1, written before the masks were kept, have no masks and still load), written atomically (temp file + :func:`os.replace`), so the
file on disk is always either the previous complete save or the new one. Writing happens on
a background thread; the caller hands over copies of the slices.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write

#: Environment variable that moves the autosave folder (tests, shared machines).
ENV_AUTOSAVE_DIR = "SANDSEG_AUTOSAVE_DIR"
_FORMAT_VERSION = 2  # 2: painted-pixel masks (format 1 files have none)


def autosave_dir() -> Path:
    """Folder for autosaves: ``$SANDSEG_AUTOSAVE_DIR`` or ``~/.cache/napari-sandseg/autosave``."""
    env = os.environ.get(ENV_AUTOSAVE_DIR)
    return Path(env) if env else Path.home() / ".cache" / "napari-sandseg" / "autosave"


@dataclass
class AutosaveRecord:
    """What one autosave file holds (without the slice data)."""

    path: Path
    layer_name: str
    shape: tuple[int, ...]
    slices: list[int]
    saved_at: float
    class_map: dict[str, Any] | None = None
    source: str | None = None


@dataclass
class EditSnapshot:
    """Copies of a layer's edited slices (and of their painted pixels), ready to be written."""

    layer_name: str
    shape: tuple[int, ...]
    slices: dict[int, np.ndarray] = field(default_factory=dict)
    class_map: dict[str, Any] | None = None
    source: str | None = None
    painted: dict[int, np.ndarray] | None = None  # {z: (Y, X) bool}, the pixels the user painted


def autosave_path(directory: Path, layer_name: str, shape: tuple[int, ...]) -> Path:
    """File name for a layer's autosave: its name made file-safe plus the volume shape."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", layer_name).strip("_") or "labels"
    return Path(directory) / f"{safe}__{'x'.join(str(s) for s in shape)}.npz"


def save_edits(directory: Path, snapshot: EditSnapshot) -> Path:
    """Write a snapshot atomically; returns the file written.

    Raises
    ------
    OutputError
        If the folder cannot be created or written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = autosave_path(directory, snapshot.layer_name, snapshot.shape)
    zs = sorted(snapshot.slices)
    header = {
        "version": _FORMAT_VERSION,
        "layer_name": snapshot.layer_name,
        "shape": list(snapshot.shape),
        "slices": zs,
        "saved_at": time.time(),
        "class_map": snapshot.class_map,
        "source": snapshot.source,
    }
    if zs:
        data = np.stack([snapshot.slices[z] for z in zs])
    else:
        data = np.zeros((0, *snapshot.shape[1:]), dtype=np.uint8)
    arrays = {"z": np.asarray(zs, dtype=np.int64), "slices": data, "header": np.asarray(json.dumps(header))}
    if snapshot.painted is not None:
        masks = np.zeros(data.shape, bool)  # strokes compress to almost nothing
        for i, z in enumerate(zs):
            masks[i] = snapshot.painted.get(z, False)
        arrays["painted"] = masks
    with atomic_write(target, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return target


def read_header(path: Path) -> AutosaveRecord:
    """The header of an autosave file."""
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"]))
    return AutosaveRecord(
        path=Path(path),
        layer_name=header["layer_name"],
        shape=tuple(header["shape"]),
        slices=list(header["slices"]),
        saved_at=float(header["saved_at"]),
        class_map=header.get("class_map"),
        source=header.get("source"),
    )


def load_edits(path: Path) -> tuple[dict[int, np.ndarray], AutosaveRecord]:
    """Read an autosave: ``{z: slice}`` and its record."""
    record = read_header(path)
    with np.load(path, allow_pickle=False) as npz:
        zs, data = npz["z"], npz["slices"]
        slices = {int(z): data[i] for i, z in enumerate(zs)}
    return slices, record


def load_painted(path: Path) -> dict[int, np.ndarray] | None:
    """The painted pixels of an autosave, ``{z: (Y, X) bool}``; None for a file that has none (format 1)."""
    with np.load(path, allow_pickle=False) as npz:
        if "painted" not in npz.files:
            return None
        zs, masks = npz["z"], npz["painted"]
    return {int(z): masks[i] for i, z in enumerate(zs)}


def list_autosaves(directory: Path) -> list[AutosaveRecord]:
    """All readable autosaves in ``directory``, newest first (unreadable files are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    records = []
    for path in directory.glob("*.npz"):
        if path.name.startswith("."):
            continue  # the temp file of a save that was killed midway (the last complete save is kept)
        try:
            records.append(read_header(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # a foreign or damaged file is not an autosave we can offer
    return sorted(records, key=lambda r: r.saved_at, reverse=True)


def find_autosave(directory: Path, layer_name: str, shape: tuple[int, ...]) -> AutosaveRecord | None:
    """The autosave for this layer: same name and shape, else the newest of the same shape."""
    candidates = [r for r in list_autosaves(directory) if tuple(r.shape) == tuple(shape) and r.slices]
    for record in candidates:
        if record.layer_name == layer_name:
            return record
    return candidates[0] if candidates else None


class AutosaveWriter:
    """Writes snapshots on one background thread; a newer snapshot of a layer wins.

    Parameters
    ----------
    directory : Path
        Where autosaves go.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandseg-autosave")
        self._lock = threading.Lock()
        self._pending: dict[str, EditSnapshot] = {}
        self._last: Future | None = None
        self.errors: list[Exception] = []

    def submit(self, snapshot: EditSnapshot) -> None:
        """Queue a snapshot; returns at once."""
        with self._lock:
            self._pending[snapshot.layer_name] = snapshot
        self._last = self._pool.submit(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for snapshot in pending.values():
            try:
                save_edits(self.directory, snapshot)
            except Exception as exc:  # noqa: BLE001 - kept and re-raised by flush() on the caller's thread
                self.errors.append(exc)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued snapshot is on disk; re-raise a write error, if any."""
        last = self._last
        if last is not None:
            last.result(timeout)
        if self.errors:
            raise self.errors.pop(0)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._pool.shutdown(wait=True)
