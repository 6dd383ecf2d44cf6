"""The engine process: one long-lived child process that runs every TensorFlow call.

napari's thread workers keep Python code off the event loop, but TensorFlow's C++ calls hold
the GIL for up to a second (import, graph tracing, compilation: measured 0.5-1.1 s stalls of a
20 ms timer on 2 cores), so the viewer would still freeze. Here TensorFlow lives in a spawned
child process, started on first use and kept (it caches TensorFlow and the current model).
A thread worker calls :meth:`EngineProcess.run`, a generator that forwards the child's
progress items; cancelling sets a cross-process event the engine checks at the next batch.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generator

from . import _remote

#: How often the waiting worker thread looks at the cancel flag and the child's result.
POLL_S = 0.05


class EngineProcess:
    """Runs :mod:`._remote` jobs one at a time in a spawned child process."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # never fork a process holding Qt and GL state
        self._pool: ProcessPoolExecutor | None = None
        self._events: Any = None
        self._cancel: Any = None
        self._busy = threading.Lock()  # one job in the child at a time: the cancel flag is shared
        self._ids = itertools.count(1)

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._events = self._ctx.Queue()
            self._cancel = self._ctx.Event()
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=self._ctx, initializer=_remote.init, initargs=(self._events, self._cancel)
            )
        return self._pool

    def run(self, name: str, *args: Any, cancel: threading.Event, **kwargs: Any) -> Generator[Any, None, Any]:
        """Run job ``name`` in the child; yield its progress items; return its result.

        Parameters
        ----------
        name : str
            A key of :data:`._remote.JOBS`.
        cancel : threading.Event
            The calling worker's cancel flag; when set, the child is asked to stop.

        Raises
        ------
        SandsegError
            Whatever the engine raised for the user to fix (it pickles across).
        """
        with self._busy:
            pool = self._ensure()
            self._cancel.clear()
            job_id = next(self._ids)
            try:
                future = pool.submit(_remote.run, job_id, name, args, kwargs)
            except BrokenProcessPool:
                self._pool = None  # the child died (killed, out of memory): start a new one
                pool = self._ensure()
                future = pool.submit(_remote.run, job_id, name, args, kwargs)
            while True:
                if cancel.is_set():
                    self._cancel.set()
                try:
                    got_id, item = self._events.get(timeout=POLL_S)
                except queue.Empty:
                    if future.done() and isinstance(future.exception(), BrokenProcessPool):
                        self._pool = None
                        break  # the child died before it could say it was done
                    continue
                if got_id != job_id:
                    continue  # left over from an earlier job that was given up on
                if isinstance(item, str) and item == _remote.DONE:
                    break
                yield item
            return future.result()

    def shutdown(self) -> None:
        """Ask a running job to stop, wait for it, and end the child process."""
        if self._cancel is not None:
            self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
