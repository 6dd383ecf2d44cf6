"""The engine process and a user's own napari script (issue 10).

A napari script usually builds its viewer at top level, with no ``if __name__ == "__main__":``
guard. multiprocessing's spawn re-ran such a script inside the engine (a second window); the
engine now starts as its own module and must never run the user's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

UNGUARDED_SCRIPT = textwrap.dedent(
    """
    # A plain napari script: everything at top level, no __main__ guard.
    import os
    import threading
    from pathlib import Path

    import napari
    from qtpy.QtCore import QTimer

    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.engine_requests import TrainRequest
    from napari_sandseg.config import TrainConfig
    from napari_sandseg._napari.launch import open_viewer
    from napari_sandseg.sample import make_sandstone
    from napari_sandseg._widgets._state import session_for

    with open(os.environ["MARK_FILE"], "a") as fh:
        fh.write(f"window opened by process {os.getpid()}\\n")

    viewer = open_viewer(show=True)
    engine = session_for(viewer).engine
    images, labels = make_sandstone((8, 64, 64), seed=1)
    done = threading.Event()

    def train():
        cfg = TrainConfig(backbone="resnet18", epochs=1, batch_size=4, val_fraction=0.25, test_fraction=0.0,
                          patience=0)
        request = TrainRequest(images, labels, ClassMap((0, 1, 2, 3)), cfg, Path(os.environ["MODEL_OUT"]))
        for _ in engine.run(request, cancel=threading.Event()):
            pass
        done.set()

    threading.Thread(target=train, daemon=True).start()
    timer = QTimer()
    timer.setInterval(200)
    timer.timeout.connect(lambda: done.is_set() and viewer.close())
    timer.start()
    napari.run()
    """
)


def test_unguarded_script_that_trains_opens_one_window(tmp_path):
    script = tmp_path / "my_napari_script.py"
    script.write_text(UNGUARDED_SCRIPT)
    mark, model = tmp_path / "windows.txt", tmp_path / "model.keras"
    env = {**os.environ, "MARK_FILE": str(mark), "MODEL_OUT": str(model)}
    run = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, timeout=600,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert model.exists()  # it trained, in the engine
    lines = mark.read_text().splitlines()
    assert len(lines) == 1, lines  # the engine never re-ran the script
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def test_progress_queued_for_a_deleted_widget_is_dropped(qtbot):
    """Closing napari deletes the widgets; progress already queued for them must not reach them."""
    from qtpy.QtWidgets import QProgressBar, QWidget

    from napari_sandseg._widgets._workers import Job

    owner = QWidget()
    bar = QProgressBar(owner)
    seen = []

    def job(cancel):
        yield 1

    j = Job(job, on_yield=lambda v: (seen.append(v), bar.setValue(v)), on_finish=lambda: bar.setEnabled(True),
            owner=owner)
    owner.deleteLater()
    qtbot.waitUntil(lambda: not _alive(owner), timeout=5000)
    j._yielded(1)  # as a queued signal would, after the deletion
    j._finished()
    assert seen == []


def _alive(obj) -> bool:
    from qtpy.compat import isalive

    return isalive(obj) is not False
