"""Run engine generators in napari thread workers, cancellably, without touching layers.

A :class:`Job` wraps one generator function: it starts it in a napari ``thread_worker``,
forwards what it yields and returns to handlers that run on the main thread, and turns a
:class:`~napari_sandseg.errors.SandsegError` raised by the engine into a napari notification
(no traceback). Anything else is a bug and reaches napari's error reporting unchanged.

Cancelling never aborts the generator from outside: it sets a cancel flag the engine checks at
the next batch, so training still returns its result with the best weights, and the worker
always finishes by itself. Closing (napari calls ``worker.quit()`` on registered workers, and
waits for them) abandons the job instead: the worker stops waiting at once and the engine
process finishes stopping on its own, so closing never blocks the window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.compat import isalive

from ..engine_process import CancelFlag
from ..errors import Cancelled, SandsegError

#: How long closing a widget waits for its worker thread (abandoning a job ends it within a
#: poll of the engine, 50 ms); the window must never block longer than a second.
SHUTDOWN_TIMEOUT_S = 1.0


@dataclass
class JobFailed:
    """Returned by a job whose engine call raised a user-fixable :class:`SandsegError`."""

    error: SandsegError


class CancelOnQuitWorker(GeneratorWorker):
    """A generator worker whose ``quit()`` abandons the engine job instead of aborting it.

    napari calls ``quit()`` on running workers when its window closes, then waits for them.
    Aborting would leave the generator suspended inside the engine call; abandoning the job
    makes that call return within one poll, while the engine process stops the job at its next
    batch by itself (training keeps its best checkpoint).
    """

    cancel_event: CancelFlag

    def quit(self) -> None:  # noqa: D102 - documented on the class
        cancel = getattr(self, "cancel_event", None)
        if cancel is not None:
            cancel.abandon()
        else:
            super().quit()


def _guarded(func: Callable[..., Generator], done: threading.Event) -> Callable[..., Generator]:
    """Wrap a generator function: SandsegError -> JobFailed, and always signal ``done``."""

    def run(*args: Any, **kwargs: Any) -> Generator:
        try:
            return (yield from func(*args, **kwargs))
        except SandsegError as exc:
            return JobFailed(exc)
        finally:
            done.set()

    run.__name__ = getattr(func, "__name__", "sandseg job")
    return run


class Job:
    """One long-running engine call in a thread worker.

    Parameters
    ----------
    func : generator function
        Called in the worker thread as ``func(*args, cancel=<threading.Event>, **kwargs)``.
        It must not touch napari layers or Qt widgets; it yields progress objects and returns
        its result.
    on_yield, on_return : callable, optional
        Main-thread handlers for yielded values and the return value (not called when the
        job failed with a SandsegError; that is shown as a notification instead).
    on_finish : callable, optional
        Main-thread handler called last, whatever happened (re-enable buttons here).
    owner : QObject, optional
        The widget the handlers belong to; once Qt has deleted it they are not called.
    """

    def __init__(
        self,
        func: Callable[..., Generator],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        owner: Any = None,
        **kwargs: Any,
    ) -> None:
        self.cancel_event = CancelFlag()
        self.done = threading.Event()
        self._alive = True  # False once the owner is gone: handlers then do nothing
        # The Qt widget the handlers belong to: when napari closes, progress already queued for
        # it can arrive after Qt deleted it, and before its shutdown silenced the handlers.
        self._owner = owner
        self._on_yield, self._on_return, self._on_finish = on_yield, on_return, on_finish
        self.worker = create_worker(
            _guarded(func, self.done),
            *args,
            cancel=self.cancel_event,
            _worker_class=CancelOnQuitWorker,
            _start_thread=False,
            **kwargs,
        )
        self.worker.cancel_event = self.cancel_event
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.finished.connect(self._finished)

    def start(self) -> "Job":
        """Start the worker thread; returns self."""
        self.worker.start()
        return self

    @property
    def running(self) -> bool:
        """True until the job's generator has finished."""
        return not self.done.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next checkpoint (the next batch)."""
        self.cancel_event.set()

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Cancel, wait for the worker to stop and silence the handlers (owner is closing).

        Returns
        -------
        bool
            True if the job had stopped within ``timeout`` seconds.
        """
        self._alive = False
        self.cancel_event.abandon()
        return self.done.wait(timeout)

    def _live(self) -> bool:
        """Whether the handlers may run: not shut down, and the owner widget not deleted by Qt."""
        return self._alive and (self._owner is None or isalive(self._owner) is not False)

    def _yielded(self, value: Any) -> None:
        if self._live() and self._on_yield is not None:
            self._on_yield(value)

    def _returned(self, value: Any) -> None:
        if not self._live():
            return
        if isinstance(value, JobFailed):
            notify_error(value.error)
            return
        if self._on_return is not None:
            self._on_return(value)

    def _finished(self) -> None:
        if self._live() and self._on_finish is not None:
            self._on_finish()


def notify_error(error: SandsegError) -> None:
    """Show a user-fixable problem as a napari notification (info for a cancellation)."""
    if isinstance(error, Cancelled):
        show_info(str(error))
    else:
        show_error(str(error))
