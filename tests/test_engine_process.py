"""The engine process lives and dies with the process that started it (issue 10).

No Qt here: :class:`EngineProcess` is driven from a plain parent script, which the tests kill
with SIGKILL or SIGTERM while the engine idles or trains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from napari_sandseg.engine_process import EngineProcess, EngineStopped
from napari_sandseg.engine_requests import PREVIEW_Z, DeviceRequest, LoadRequest, TrainRequest
from napari_sandseg.errors import ModelError

#: The engine must be gone this long after its parent died (issue 10: within 5 s).
EXIT_LIMIT_S = 5.0

PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from napari_sandseg.engine_process import EngineProcess
    from napari_sandseg.engine_requests import DeviceRequest, TrainRequest
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.config import TrainConfig
    from napari_sandseg.sample import make_sandstone

    engine = EngineProcess()
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "idle":
        for item in engine.run(DeviceRequest(), cancel=threading.Event()):
            pass
        print("ENGINE", engine.pid, flush=True)
    else:
        images, labels = make_sandstone((12, 64, 64), seed=3)
        cfg = TrainConfig(backbone="resnet18", epochs=200, batch_size=2, val_fraction=0.2, test_fraction=0.0,
                          patience=0)
        request = TrainRequest(images, labels, ClassMap((0, 1, 2, 3)), cfg, Path(out))
        for item in engine.run(request, cancel=threading.Event()):
            # The best checkpoint is written just after the first epoch is reported.
            if getattr(item, "kind", "") == "batch" and item.epoch >= 1 and Path(out).exists():
                print("ENGINE", engine.pid, flush=True)
                break
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _start_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int, Path]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    out = tmp_path / "model.keras"
    parent = subprocess.Popen([sys.executable, str(script), mode, str(out)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    for line in parent.stdout:
        if line.startswith("ENGINE"):
            return parent, int(line.split()[1]), out
        assert time.monotonic() < deadline, "the engine did not report in time"
    pytest.fail(f"the parent ended before its engine reported (exit code {parent.wait()})")


def _wait_gone(pid: int) -> float:
    start = time.monotonic()
    while _alive(pid) and time.monotonic() - start < EXIT_LIMIT_S + 5:
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_idle_engine_exits_when_its_parent_dies(tmp_path, sig):
    parent, child, _ = _start_parent(tmp_path, "idle")
    assert _alive(child)
    parent.send_signal(sig)
    parent.wait(10)
    took = _wait_gone(child)
    assert not _alive(child), f"engine {child} still alive {took:.1f} s after its parent died"
    assert took < EXIT_LIMIT_S


@pytest.mark.slow
def test_training_engine_exits_when_its_parent_is_killed_and_keeps_the_checkpoint(tmp_path):
    from napari_sandseg.model import load_model

    parent, child, out = _start_parent(tmp_path, "train")
    assert out.exists()
    parent.kill()
    parent.wait(10)
    took = _wait_gone(child)
    assert not _alive(child), f"training engine {child} still alive {took:.1f} s after its parent was killed"
    assert took < EXIT_LIMIT_S
    model, info = load_model(out)  # the checkpoint is whole (sidecar checksum checked)
    assert info.history["loss"]


def test_engine_errors_come_back_as_they_were_raised(tmp_path):
    engine = EngineProcess()
    try:
        with pytest.raises(ModelError):
            list(engine.run(LoadRequest(tmp_path / "missing.keras"), cancel=threading.Event()))
        assert engine.pid is not None  # an error in a job does not end the engine
    finally:
        engine.shutdown()


def test_an_engine_killed_mid_job_is_reported_and_replaced(tmp_path):
    engine = EngineProcess()
    try:
        gen = engine.run(DeviceRequest(), cancel=threading.Event())
        assert next(gen) == "importing TensorFlow"
        first = engine.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(EngineStopped, match="engine process ended"):
            list(gen)
        with pytest.raises(ModelError):  # the next job runs in a new engine
            list(engine.run(LoadRequest(tmp_path / "missing.keras"), cancel=threading.Event()))
        assert engine.pid not in (None, first)
    finally:
        engine.shutdown()


@pytest.mark.slow
def test_training_sends_a_live_preview_of_the_slice_napari_asks_for(tmp_path):
    import numpy as np

    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.config import TrainConfig
    from napari_sandseg.sample import make_sandstone

    images, labels = make_sandstone((8, 64, 64), seed=1)
    cfg = TrainConfig(backbone="resnet18", epochs=3, batch_size=4, val_fraction=0.25, test_fraction=0.0, patience=0)
    engine = EngineProcess()
    previews = []
    try:
        request = TrainRequest(images, labels, ClassMap((0, 1, 2, 3)), cfg, tmp_path / "m.keras", preview_z=2)
        for item in engine.run(request, cancel=threading.Event()):
            if getattr(item, "kind", "") == "epoch":
                previews.append((item.preview_z, item.preview))
                engine.set_control(PREVIEW_Z, 6)  # the user moved to slice 6
    finally:
        engine.shutdown()
    assert len(previews) == 3
    assert previews[0][0] == 2 and previews[-1][0] == 6
    for z, ids in previews:
        assert ids.shape == (64, 64) and ids.dtype.kind in "iu" and int(ids.max()) < 4
    assert len(np.unique(previews[-1][1])) >= 2  # a segmentation, not a blank


def test_a_job_cut_off_by_shutdown_is_cancelled_not_an_error():
    from napari_sandseg.errors import Cancelled

    engine = EngineProcess()
    gen = engine.run(DeviceRequest(), cancel=threading.Event())
    assert next(gen) == "importing TensorFlow"
    pid = engine.pid
    engine.shutdown()  # napari is closing while the engine still starts up
    with pytest.raises(Cancelled, match="closing"):
        list(gen)
    assert _wait_gone(pid) < EXIT_LIMIT_S


def test_only_a_request_runs_and_every_request_has_its_job():
    from napari_sandseg.engine_requests import REQUESTS
    from napari_sandseg.engine_server import JOBS

    assert set(JOBS) == set(REQUESTS)
    assert len({request.job for request in REQUESTS}) == len(REQUESTS)  # messages name each job apart
    engine = EngineProcess()
    with pytest.raises(TypeError, match="not an engine request: tuple"):
        next(engine.run(("train", "images.tif"), cancel=threading.Event()))
    assert engine.pid is None  # refused before any engine process started
