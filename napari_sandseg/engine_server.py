"""The engine process's side: its main loop and the jobs it runs (no Qt, no napari here).

:mod:`napari_sandseg.engine_process` runs these in a child process so TensorFlow never shares
napari's interpreter: TensorFlow's C++ calls (importing it, building, tracing and compiling a
model) hold the GIL for up to a second at a time, which would freeze the viewer if they ran on
a thread. Each job is a generator taking one request of :mod:`napari_sandseg.engine_requests`;
what it yields is sent to napari as it happens, and its return value must pickle (so models
stay in this process, in :data:`napari_sandseg.segmentation_model.MODELS`, by file).
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Generator

from .engine_requests import (
    CANCEL,
    ERROR,
    ITEM,
    PREVIEW_UNCERTAINTY,
    PREVIEW_Z,
    DeviceRequest,
    FileSummary,
    LoadRequest,
    PredictedSlab,
    PredictFileRequest,
    PredictRequest,
    RESULT,
    RUN,
    SET,
    SliceProgress,
    TrainRequest,
    TrainSummary,
)
from .segmentation_model import MODELS, SegmentationModel

#: Once napari is gone (closed, killed or crashed), a running job gets this long to stop at its
#: next batch (training keeps its best checkpoint, which is written atomically at every
#: improvement) before the engine exits regardless.
EXIT_GRACE_S = 3.0


class JobControl(threading.Event):
    """A job's cancel flag, plus the settings napari changes while the job runs.

    ``values`` holds what ``("set", job_id, key, value)`` messages said last (for training,
    :data:`~napari_sandseg.engine_requests.PREVIEW_Z`: the slice the user is looking at).
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}


def serve(conn: Any) -> None:
    """The engine process's main loop: run jobs from ``conn`` one at a time, until napari goes.

    A reader thread takes napari's messages as they come (so a cancel reaches a running job
    at once) and notices napari's end: the end of the connection, which comes when napari
    shuts it down (``EngineProcess.shutdown``) or when napari's process is gone for any reason,
    SIGKILL included, since the kernel closes its socket. The engine then cancels the running
    job and exits within :data:`EXIT_GRACE_S`.

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
        _, job_id, request = message
        try:
            _run_job(conn, job_id, request, cancels[job_id])
        finally:
            cancels.pop(job_id, None)
    # Exit without interpreter teardown: TensorFlow's thread pools can hang it.
    os._exit(0)


def _run_job(conn: Any, job_id: int, request: Any, cancel: JobControl) -> None:
    """Run the job of ``request``'s type, sending each item, then its result or its error."""
    send = _sender(conn, cancel)
    try:
        gen = JOBS[type(request)](request, cancel)
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


# ---------------------------------------------------------------------------------- jobs


def device_job(request: DeviceRequest, cancel: JobControl) -> Generator[str, None, str]:
    """Enable GPU memory growth (device set-up only: no global precision policy), describe the device."""
    from ._tf import configure_gpu, describe_device

    yield "importing TensorFlow"
    configure_gpu()
    return describe_device()


def train_job(request: TrainRequest, cancel: JobControl) -> Generator[Any, None, TrainSummary]:
    """The engine's training generator; the trained model stays cached here under its path.

    The live preview follows ``cancel.values``: napari moves it with
    ``set_control(PREVIEW_Z, z)`` and switches its uncertainty with
    ``set_control(PREVIEW_UNCERTAINTY, flag)``.
    """
    from ._tf import configure_gpu
    from .train import train

    configure_gpu()
    values = cancel.values
    preview = entropy = None
    if request.preview_z is not None:
        values.setdefault(PREVIEW_Z, request.preview_z)
        values.setdefault(PREVIEW_UNCERTAINTY, request.preview_uncertainty)
        preview = lambda: values.get(PREVIEW_Z)  # noqa: E731 - read at each preview
        entropy = lambda: bool(values.get(PREVIEW_UNCERTAINTY))  # noqa: E731
    result = yield from train(request.images, request.targets, request.class_map, request.config, request.out_path,
                              init_model=request.init_model, cancel=cancel, preview=preview,
                              preview_uncertainty=entropy, voxel_size=request.voxel_size)
    path = Path(result.path)
    MODELS.put(SegmentationModel(result.model, result.info, path))  # the next predict_job finds it
    return TrainSummary(result.info, path, result.history, result.cancelled, result.best_epoch,
                        tuple(result.info.notes))


def load_job(request: LoadRequest, cancel: JobControl) -> Generator[str, None, Any]:
    """Load (and cache) a model file; returns its :class:`ModelInfo`."""
    yield f"loading {request.path}"
    return MODELS.get(request.path).info


def predict_job(request: PredictRequest, cancel: JobControl) -> Generator[PredictedSlab, None, int]:
    """Predict slab by slab, yielding :class:`PredictedSlab`; returns the slice count.

    A bfloat16 twin of the model stays cached with it here, for the next run.
    """
    from .predict import iter_predict

    model = MODELS.get(request.model_path)
    model.check_compatible(request.volume)
    for z0, z1, lab, p, u in iter_predict(model, request.volume, batch_size=request.batch_size,
                                          probabilities=request.probabilities, uncertainty=request.uncertainty,
                                          cancel=cancel, precision=request.precision):
        yield PredictedSlab(z0, z1, lab, p, u)
    return request.volume.shape[0]


def predict_file_job(request: PredictFileRequest, cancel: JobControl) -> Generator[SliceProgress, None, FileSummary]:
    """Segment a volume file into output files, slab by slab (:func:`napari_sandseg.file_prediction.predict_file`).

    Only paths come in and go out: the volume is read here from its file and the labels are
    written here, so a volume bigger than memory never crosses the process boundary.
    Yields :class:`SliceProgress` after each slab. On cancel or failure no output appears and
    no temp file is left (the writers rename a complete temp file into place).
    """
    from .file_prediction import predict_file
    from .lazy import nbytes_on_disk

    r = request
    # predict_file reports progress through a callback, but jobs must yield it: run it on a
    # thread and hand the callback's items over through a queue.
    items: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["path"] = predict_file(
                r.model_path, r.images_path, r.out_path, r.probabilities_path, batch_size=r.batch_size,
                overwrite=r.overwrite, progress=lambda done, total: items.put(SliceProgress(done, total)),
                uncertainty_path=r.uncertainty_path, cancel=cancel, precision=r.precision,
                voxel_size=r.voxel_size,
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
    probs, unc = (Path(p) if p is not None else None for p in (r.probabilities_path, r.uncertainty_path))
    written = [p for p in (Path(r.out_path), probs, unc) if p is not None]
    return FileSummary(Path(r.out_path), probs, unc, sum(nbytes_on_disk(p) for p in written))


#: The job of each request type (``EngineProcess.run`` refuses any other type).
JOBS: dict[type, Callable[[Any, JobControl], Generator]] = {
    DeviceRequest: device_job,
    LoadRequest: load_job,
    TrainRequest: train_job,
    PredictRequest: predict_job,
    PredictFileRequest: predict_file_job,
}
