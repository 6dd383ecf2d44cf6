"""The engine process: one long-lived child process that runs every TensorFlow call.

napari's thread workers keep Python code off the event loop, but TensorFlow's C++ calls hold
the GIL for up to a second (import, graph tracing, compilation: measured 0.5-1.1 s stalls of a
20 ms timer on 2 cores), so the viewer would still freeze. Here TensorFlow lives in a child
process, started on first use and kept (it caches TensorFlow and the current model). A thread
worker calls :meth:`EngineProcess.run` with a request of :mod:`napari_sandseg.engine_requests`,
a generator that forwards the child's progress messages; cancelling sends the child a message
its job checks at the next batch. Nothing here imports Qt or TensorFlow: a plain script can
drive the engine too (the tests and benchmarks do).

The child is ``python -m napari_sandseg._engine_main`` talking over a socket pair, rather than
a ``multiprocessing`` spawn, so the user's own script is never re-run inside it; and since the
kernel closes napari's end of the socket when napari's process ends for any reason, the child
notices and exits by itself (:func:`napari_sandseg.engine_server.serve`).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generator

from .engine_requests import CANCEL, ITEM, REQUESTS, RESULT, RUN, SET
from .errors import Cancelled, SandsegError

#: How often the waiting worker thread looks at the cancel flag and the child's messages.
POLL_S = 0.05


class EngineStopped(SandsegError):
    """The engine process ended (killed, out of memory, or napari is closing) during a job."""


class RemoteTraceback(Exception):
    """The engine-side traceback of an unexpected error, chained to the error re-raised here."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


class CancelFlag(threading.Event):
    """A cancel request that can also abandon the job.

    ``set()`` asks the engine to stop at its next batch and the caller still waits for the
    job's result (training returns its best weights). :meth:`abandon` (the owner is closing)
    also stops waiting: :meth:`EngineProcess.run` raises :class:`~napari_sandseg.errors.Cancelled`
    at once, and the engine finishes stopping on its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = False

    def abandon(self) -> None:
        """Cancel and stop waiting for the job."""
        self.abandoned = True
        self.set()


class EngineProcess:
    """Runs the engine's jobs (:data:`napari_sandseg.engine_server.JOBS`) one at a time in a child process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._sock: socket.socket | None = None
        self._busy = threading.Lock()  # one job in the child at a time
        self._sending = threading.Lock()  # the worker thread and the main thread both send
        self._ids = itertools.count(1)
        self._job: int | None = None  # the running job's id
        self._closing = False  # set by shutdown(): a job cut off then was stopped, not lost

    @property
    def pid(self) -> int | None:
        """The engine process's PID, None before it started or after it ended."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _ensure(self) -> Connection:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        assert self._conn is not None
        return self._conn

    def _start(self) -> None:
        self._closing = False
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The child imports napari_sandseg from where this process found it (a source checkout
        # on sys.path works too), never from the user's current folder first.
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "napari_sandseg._engine_main", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True,
            )
        finally:
            theirs.close()
        self._sock = ours
        self._conn = Connection(os.dup(ours.fileno()))
        threading.Thread(target=self._proc.wait, name="sandseg engine reaper", daemon=True).start()

    def run(self, request: Any, *, cancel: threading.Event) -> Generator[Any, None, Any]:
        """Run the job of ``request``'s type in the child; yield its progress messages; return its result.

        Parameters
        ----------
        request : DeviceRequest, LoadRequest, TrainRequest, PredictRequest or PredictFileRequest
            One of :data:`napari_sandseg.engine_requests.REQUESTS`; its type picks the job.
        cancel : threading.Event
            The calling worker's cancel flag; when set, the child is asked to stop. A
            :class:`CancelFlag` that was abandoned also ends the wait at once.

        Raises
        ------
        TypeError
            ``request`` is not a request type (a programming error, refused before the engine starts).
        SandsegError
            Whatever the engine raised for the user to fix (it pickles across);
            :class:`EngineStopped` when the engine process ended during the job.
        """
        if type(request) not in REQUESTS:
            raise TypeError(f"not an engine request: {type(request).__name__} (expected one of "
                            f"{', '.join(t.__name__ for t in REQUESTS)})")
        name = request.job
        with self._busy:
            job_id = next(self._ids)
            try:
                conn = self._ensure()
                self._send(conn, (RUN, job_id, request))
            except OSError:  # the child died since the last job: start a new one
                self._drop()
                conn = self._ensure()
                self._send(conn, (RUN, job_id, request))
            self._job = job_id
            try:
                return (yield from self._listen(conn, job_id, name, cancel))
            finally:
                self._job = None

    def _send(self, conn: Connection, message: tuple) -> None:
        with self._sending:
            conn.send(message)

    def set_control(self, key: str, value: Any) -> None:
        """Tell the running job a new setting (``JobControl.values``); nothing when idle."""
        job, conn = self._job, self._conn
        if job is None or conn is None:
            return
        try:
            self._send(conn, (SET, job, key, value))
        except OSError:
            pass  # the engine is gone; the worker waiting on it reports that

    def _listen(self, conn: Connection, job_id: int, name: str, cancel: threading.Event) -> Generator[Any, None, Any]:
        """Forward job ``job_id``'s items until its result or error arrives."""
        asked_to_stop = False
        while True:
            if cancel.is_set() and not asked_to_stop:
                asked_to_stop = True
                try:
                    self._send(conn, (CANCEL, job_id))
                except OSError:
                    pass  # the child is gone; the next poll says so
            if getattr(cancel, "abandoned", False):
                raise Cancelled("stopped: napari-sandseg is closing")
            try:
                if not conn.poll(POLL_S):
                    continue
                kind, got_id, payload = conn.recv()
            except (EOFError, OSError) as exc:
                code = self._proc.poll() if self._proc is not None else None
                self._drop()
                if self._closing:
                    raise Cancelled(f"'{name}' stopped: napari-sandseg is closing") from exc
                raise EngineStopped(
                    f"the engine process ended during '{name}' (exit code {code}); "
                    "if it ran out of memory, try a smaller batch size or tile size"
                ) from exc
            if got_id != job_id:
                continue  # left over from an earlier job that was abandoned
            if kind == ITEM:
                yield payload
            elif kind == RESULT:
                return payload
            else:
                error, trace = payload
                if not isinstance(error, SandsegError):
                    error.__cause__ = RemoteTraceback(trace)
                raise error

    def _drop(self) -> None:
        """Forget the child's connection (it died or is being shut down)."""
        for closable in (self._conn, self._sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass
        self._conn = self._sock = None
        self._proc = None

    def shutdown(self) -> None:
        """End the engine process without waiting for it.

        Shutting napari's end of the socket down is the signal: the child reads the end of
        the connection, cancels a running job, gives it :data:`napari_sandseg.engine_server.EXIT_GRACE_S` seconds
        to stop (training keeps its best checkpoint) and exits. A worker thread still waiting
        on the socket wakes up and ends too.
        """
        if self._sock is None:
            return
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._busy.acquire(blocking=False):  # no worker is using the connection: close it
            try:
                self._drop()
            finally:
                self._busy.release()

