"""Engine calls as they run inside the engine process (no Qt, no napari here).

:mod:`._engine` runs these in a child process so TensorFlow never shares napari's
interpreter: TensorFlow's C++ calls (importing it, building, tracing and compiling a model)
hold the GIL for up to a second at a time, which would freeze the viewer if they ran on a
thread. Each call is a generator; what it yields is sent to napari as it happens, and its
return value must pickle (so models stay in this process, cached by path).
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np

# Models loaded or trained in this process, by path: loading costs seconds, keep them.
_MODELS: dict[str, tuple[Any, Any, float]] = {}

#: Messages from napari to the engine: ``("run", job_id, name, args, kwargs)``,
#: ``("cancel", job_id)`` and ``("set", job_id, key, value)`` (see :class:`JobControl`); napari
#: ends the engine by closing its end of the socket. From the engine: ``("item", job_id, value)``
#: per yield, then ``("result", job_id, value)`` or ``("error", job_id, (exception, traceback))``.
RUN, CANCEL, SET = "run", "cancel", "set"
ITEM, RESULT, ERROR = "item", "result", "error"

#: Once napari is gone (closed, killed or crashed), a running job gets this long to stop at its
#: next batch (training keeps its best checkpoint, which is written atomically at every
#: improvement) before the engine exits regardless.
EXIT_GRACE_S = 3.0


class JobControl(threading.Event):
    """A job's cancel flag, plus the settings napari changes while the job runs.

    ``values`` holds what ``("set", job_id, key, value)`` messages said last (for training,
    ``"preview_z"``: the slice the user is looking at).
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}


@dataclass
class TrainSummary:
    """The picklable part of a :class:`napari_sandseg.events.TrainResult`."""

    info: Any
    path: Path
    history: dict[str, list[float]]
    cancelled: bool
    best_epoch: int | None = None
    notes: list[str] = field(default_factory=list)


def serve(conn: Any) -> None:
    """The engine process's main loop: run jobs from ``conn`` one at a time, until napari goes.

    A reader thread takes napari's messages as they come (so a cancel reaches a running job
    at once) and notices napari's end: the end of the connection, which comes when napari
    shuts it down (``EngineProcess.shutdown``) or when napari's process is gone for any reason,
    SIGKILL included, since the kernel closes its socket. The engine then cancels the running job and exits within :data:`EXIT_GRACE_S`.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        The engine's end of the socket pair napari created.
    """
    if hasattr(os, "nice"):
        # The lowest scheduling priority: on a machine with few cores TensorFlow's threads
        # would otherwise take the CPU from napari's event loop (nice 10 still gave 300-550 ms
        # stalls on 2 loaded cores; 19 gave 180-290 ms).
        os.nice(19)
    jobs: queue.Queue = queue.Queue()
    cancels: dict[int, JobControl] = {}

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # napari's end of the socket is closed: it is gone
                break
            if message[0] == RUN:
                cancels[message[1]] = JobControl()
                jobs.put(message)
            elif message[0] == CANCEL and message[1] in cancels:
                cancels[message[1]].set()
            elif message[0] == SET and message[1] in cancels:
                cancels[message[1]].values[message[2]] = message[3]
        for event in list(cancels.values()):
            event.set()
        jobs.put(None)
        if cancels:  # a job is still running: give it the grace period, then exit
            timer = threading.Timer(EXIT_GRACE_S, os._exit, (0,))
            timer.daemon = True
            timer.start()

    threading.Thread(target=read, name="sandseg engine reader", daemon=True).start()
    while (message := jobs.get()) is not None:
        _, job_id, name, args, kwargs = message
        try:
            _run_job(conn, job_id, name, args, kwargs, cancels[job_id])
        finally:
            cancels.pop(job_id, None)
    # Exit without interpreter teardown: TensorFlow's thread pools can hang it.
    os._exit(0)


def _run_job(conn: Any, job_id: int, name: str, args: tuple, kwargs: dict, cancel: threading.Event) -> None:
    """Run the generator ``JOBS[name]``, sending each item, then its result or its error."""
    send = _sender(conn, cancel)
    try:
        gen = JOBS[name](*args, cancel=cancel, **kwargs)
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                send((RESULT, job_id, stop.value))
                return
            send((ITEM, job_id, item))
    except Exception as exc:  # noqa: BLE001 - handed to napari, which re-raises it there
        send((ERROR, job_id, (exc, traceback.format_exc())))


def _sender(conn: Any, cancel: threading.Event) -> Callable[[tuple], None]:
    """``send(message)``; once napari cannot be reached the job is cancelled and runs out unheard."""
    gone = False

    def send(message: tuple) -> None:
        nonlocal gone
        if gone:
            return
        try:
            conn.send(message)
        except (OSError, EOFError):
            gone = True
            cancel.set()
        except Exception as exc:  # noqa: BLE001 - an unpicklable value: say what it was instead
            conn.send((ERROR, message[1], (TypeError(f"the engine could not send a {type(message[2]).__name__}: {exc}"),
                                            traceback.format_exc())))

    return send


def _model(path: Path) -> tuple[Any, Any]:
    """The model at ``path``, loaded once per file version."""
    from ..model import load_model

    if not Path(path).is_file():
        return load_model(path)  # raises its ModelError naming the missing file
    key, mtime = str(Path(path).resolve()), Path(path).stat().st_mtime
    cached = _MODELS.get(key)
    if cached is None or cached[2] != mtime:
        model, info = load_model(path)
        _MODELS[key] = (model, info, mtime)
    return _MODELS[key][0], _MODELS[key][1]


def device_job(cancel: Any) -> Generator[str, None, str]:
    """Enable GPU memory growth and mixed precision, describe the device."""
    from .._tf import configure_gpu, describe_device

    yield "importing TensorFlow"
    configure_gpu()
    return describe_device()


def train_job(images: np.ndarray, targets: np.ndarray, class_map: Any, config: Any, out_path: Path,
              init_model: Path | None, cancel: Any, preview_z: int | None = None,
              preview_uncertainty: bool = False, voxel_size: Any = None) -> Generator[Any, None, TrainSummary]:
    """The engine's training generator; the trained model stays cached here under its path.

    With ``preview_z``, the live-preview events (see ``TrainEvent.preview``) carry that slice
    segmented with the current weights; napari moves it with ``EngineProcess.set_control("preview_z", z)``,
    and switches the preview's uncertainty on and off with ``set_control("preview_uncertainty", flag)``.
    ``voxel_size`` (of the images) is recorded in the model's sidecar.
    """
    from .._tf import configure_gpu
    from ..train import train

    configure_gpu()
    values = getattr(cancel, "values", None)
    if values is not None and preview_z is not None:
        values.setdefault("preview_z", preview_z)
        values.setdefault("preview_uncertainty", preview_uncertainty)
    preview = None if values is None or preview_z is None else (lambda: values.get("preview_z"))
    entropy = None if preview is None else (lambda: bool(values.get("preview_uncertainty")))
    result = yield from train(images, targets, class_map, config, out_path, init_model=init_model, cancel=cancel,
                              preview=preview, preview_uncertainty=entropy, voxel_size=voxel_size)
    path = Path(result.path)
    _MODELS[str(path.resolve())] = (result.model, result.info, path.stat().st_mtime)
    return TrainSummary(result.info, path, result.history, result.cancelled, result.best_epoch, list(result.info.notes))


def load_job(path: Path, cancel: Any) -> Generator[str, None, Any]:
    """Load (and cache) a model file; returns its :class:`ModelInfo`."""
    yield f"loading {path}"
    return _model(path)[1]


def predict_job(model_path: Path, volume: np.ndarray, batch_size: int, probabilities: bool, uncertainty: bool,
                cancel: Any, precision: str = "float32") -> Generator[tuple, None, int]:
    """Predict slab by slab, yielding ``(z0, z1, labels, probs, unc)``; returns the slice count.

    ``precision`` is that of :func:`napari_sandseg.predict.iter_predict`; a bfloat16 twin stays
    cached with the model here, for the next run.
    """
    from ..model import check_compatible
    from ..predict import iter_predict

    model, info = _model(model_path)
    check_compatible(info, volume)
    for z0, z1, lab, p, u in iter_predict(model, volume, info, batch_size=batch_size, probabilities=probabilities,
                                          uncertainty=uncertainty, cancel=cancel, precision=precision):
        yield z0, z1, lab, p, u
    return volume.shape[0]


@dataclass
class FileSummary:
    """What :func:`predict_file_job` wrote: the output paths and their total size on disk."""

    out: Path
    probabilities: Path | None
    uncertainty: Path | None
    nbytes: int


def predict_file_job(model_path: Path, images_path: Path, out_path: Path, probabilities_path: Path | None,
                     uncertainty_path: Path | None, batch_size: int, overwrite: bool,
                     cancel: Any, precision: str = "float32",
                     voxel_size: Any = None) -> Generator[tuple[int, int], None, FileSummary]:
    """Segment a volume file into output files, slab by slab (:func:`napari_sandseg.predict.predict_file`).

    Only paths come in and go out: the volume is read here from its file and the labels are
    written here, so a volume bigger than memory never crosses the process boundary.
    Yields ``(done, total)`` slices after each slab. On cancel or failure no output appears
    and no temp file is left (the writers rename a complete temp file into place).
    ``voxel_size`` is kept in the outputs (None: the image file's own).
    """
    from ..lazy import nbytes_on_disk
    from ..predict import predict_file

    # predict_file reports progress through a callback, but jobs must yield it: run it on a
    # thread and hand the callback's items over through a queue.
    items: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["path"] = predict_file(
                model_path, images_path, out_path, probabilities_path, batch_size=batch_size, overwrite=overwrite,
                progress=lambda done, total: items.put((done, total)), uncertainty_path=uncertainty_path,
                cancel=cancel, precision=precision, voxel_size=voxel_size,
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the job's own thread
            outcome["error"] = exc
        finally:
            items.put(None)

    thread = threading.Thread(target=work, name="sandseg predict_file", daemon=True)
    thread.start()
    while (item := items.get()) is not None:
        yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    probs, unc = (Path(p) if p is not None else None for p in (probabilities_path, uncertainty_path))
    written = [p for p in (Path(out_path), probs, unc) if p is not None]
    return FileSummary(Path(out_path), probs, unc, sum(nbytes_on_disk(p) for p in written))


JOBS: dict[str, Callable[..., Generator]] = {
    "device": device_job,
    "train": train_job,
    "load": load_job,
    "predict": predict_job,
    "predict_file": predict_file_job,
}
