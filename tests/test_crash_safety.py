"""Crash safety (issue #5): a process killed mid-write never costs the user a previous file.

SIGKILL mid-training is in ``test_train.py::test_sigkill_mid_training_leaves_a_loadable_checkpoint``
(best checkpoint loadable, sidecar checksum matches). Here: an export killed while it writes,
and autosaved hand edits killed while they are being saved (what a killed viewer leaves).
"""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_sandseg.autosave import EditSnapshot, find_autosave, load_edits, save_edits
from napari_sandseg.io import read_volume, write_volume

_EXPORT_SCRIPT = """
import sys
import numpy as np
from napari_sandseg.io import write_labels, write_volume
from napari_sandseg.classmap import ClassMap
big = np.random.default_rng(0).integers(0, 4, size=(96, 1024, 1024), dtype=np.uint8)
print("writing", flush=True)
if sys.argv[2] == "labels":  # zlib: slow enough to be killed mid-write
    write_labels(sys.argv[1], big, ClassMap((0, 85, 170, 255)), overwrite=True, compression="zlib")
else:
    write_volume(sys.argv[1], big, overwrite=True, compression="zlib")
print("done", flush=True)
"""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between listing and looking
        return 0


def _kill_when_temp_grows(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> int:
    """SIGKILL ``proc`` once a temp file in ``folder`` holds data; returns its size then."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            size = max((_size(p) for p in folder.iterdir() if ".tmp" in p.name), default=0)
            if size > 64 * 1024:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return size
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    pytest.fail(f"the export finished or stalled before it could be killed (exit {proc.returncode})")


@pytest.mark.parametrize("writer", ["volume", "labels"])
def test_killed_export_leaves_the_previous_file_intact(writer: str, tmp_path: Path) -> None:
    target = tmp_path / "labels.tif"
    old = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    write_volume(target, old)
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _EXPORT_SCRIPT, str(target), writer],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    written = _kill_when_temp_grows(proc, tmp_path)
    assert proc.returncode == -signal.SIGKILL and written > 0
    assert target.read_bytes() == before  # the previous export, byte for byte
    assert np.array_equal(read_volume(target), old)
    # what the killed process leaves is a hidden temp file beside it, never a torn target
    assert all(p.name.startswith(".labels.") for p in tmp_path.iterdir() if p != target)


def painted(round_: int, z: int, shape: tuple[int, int]) -> np.ndarray:
    """The labels a simulated user painted on slice ``z`` in round ``round_`` (random: incompressible)."""
    data = np.random.default_rng(round_ * 1000 + z).integers(0, 4, size=shape, dtype=np.uint8)
    data[0, 0] = round_ % 250 + 1
    return data


_AUTOSAVE_SCRIPT = """
import sys, numpy as np
from napari_sandseg.autosave import EditSnapshot, save_edits
""" + inspect.getsource(painted) + """
shape = (64, 512, 512)
for round_ in range(1, 10_000):
    # every round repaints more slices with the round number, like a user painting on
    slices = {z: painted(round_, z, shape[1:]) for z in range(min(round_, 48))}
    save_edits(sys.argv[1], EditSnapshot("masks", shape, slices, {"values": [0, 1, 2, 3]}, "masks.tif"))
    print(round_, flush=True)
"""


def test_autosaved_edits_survive_a_killed_viewer_and_restore(tmp_path: Path) -> None:
    """Kill the process while it rewrites its autosave: the last complete save restores."""
    folder = tmp_path / "autosave"
    proc = subprocess.Popen([sys.executable, "-c", _AUTOSAVE_SCRIPT, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # let a few saves complete, then kill during a later one
            if int(line) >= 3:
                break
        _kill_when_temp_grows(proc, folder)
    finally:
        if proc.poll() is None:
            proc.kill()
    # what a killed save leaves (a hidden temp file) and a damaged file are both passed over
    (folder / "damaged__64x512x512.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    record = find_autosave(folder, "masks", (64, 512, 512))
    assert record is not None and record.source == "masks.tif"
    slices, record = load_edits(record.path)
    rounds = {int(s[0, 0]) - 1 for s in slices.values()}
    assert len(rounds) == 1, "a torn autosave mixes two saves"
    (round_,) = rounds
    assert round_ >= 3 and sorted(slices) == list(range(min(round_, 48)))
    assert all(np.array_equal(s, painted(round_, z, s.shape)) for z, s in slices.items())


def test_autosave_replaces_atomically_in_process(tmp_path: Path, monkeypatch) -> None:
    """A failing autosave write (disk full) keeps the previous autosave readable."""
    import errno

    from napari_sandseg.errors import OutputError

    shape = (4, 8, 8)
    path = save_edits(tmp_path, EditSnapshot("m", shape, {1: np.ones((8, 8), np.uint8)}))
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OutputError, match="disk is full"):
        save_edits(tmp_path, EditSnapshot("m", shape, {2: np.ones((8, 8), np.uint8)}))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
