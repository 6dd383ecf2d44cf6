"""How long napari's event loop goes without running: shared by the event-loop test and benchmark.

A QTimer ticks every ``interval_ms`` on the GUI thread; each gap between ticks, less the time the
GUI thread spent runnable but waiting for a CPU (its run-queue delay, from
``/proc/thread-self/schedstat``), is the time our own process kept the event loop busy.
Subtracting the run-queue delay makes the figure independent of how loaded or CPU-capped the
host is, while a stall caused by the plugin (work or a lock held on the GUI thread, the GIL held
by a relay thread) still counts in full.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

TICK_MS = 20
SCHEDSTAT = Path("/proc/thread-self/schedstat")
#: Upper edges (ms) of the histogram bins of :meth:`GapMeter.distribution`; the last bin is open.
HISTOGRAM_EDGES_MS = (25, 50, 100, 250, 500, 1000)


def run_queue_delay_s() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (0 where unknown)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class GapMeter:
    """Ticks a QTimer on the GUI thread; records each gap and the run-queue delay within it."""

    def __init__(self, interval_ms: int = TICK_MS) -> None:
        self.gaps: list[float] = []
        self.waits: list[float] = []
        self._last: tuple[float, float] | None = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = (time.perf_counter(), run_queue_delay_s())
        if self._last is not None:
            self.gaps.append(now[0] - self._last[0])
            self.waits.append(now[1] - self._last[1])
        self._last = now

    def own_ms(self) -> np.ndarray:
        """Each gap less the CPU wait inside it, in ms (never below 0)."""
        return np.maximum(np.asarray(self.gaps) - np.asarray(self.waits), 0.0) * 1000

    def raw_ms(self) -> np.ndarray:
        """Each gap as measured (CPU waits included), in ms."""
        return np.asarray(self.gaps) * 1000

    def summary(self) -> str:
        """One line: percentiles of our own gaps and of the raw ones."""
        own, raw = self.own_ms(), self.raw_ms()
        return (f"{len(raw)} gaps: p50 {np.percentile(own, 50):.0f} ms, p95 {np.percentile(own, 95):.0f} ms, "
                f"max {own.max():.0f} ms (as measured, CPU waits included: p95 {np.percentile(raw, 95):.0f} ms, "
                f"max {raw.max():.0f} ms; CPU waits {sum(self.waits):.2f} s)")

    def distribution(self) -> dict[str, Any]:
        """Percentiles and a histogram of our own and the raw gaps, plus every gap (ms, 0.1 ms)."""
        def describe(ms: np.ndarray) -> dict[str, Any]:
            counts = np.histogram(ms, bins=(0, *HISTOGRAM_EDGES_MS, np.inf))[0]
            return {
                **{f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 95, 99)},
                "max": round(float(ms.max()), 1),
                "histogram": {f"<{e}" if i < len(HISTOGRAM_EDGES_MS) else f">={HISTOGRAM_EDGES_MS[-1]}": int(c)
                              for i, (e, c) in enumerate(zip((*HISTOGRAM_EDGES_MS, None), counts))},
                "gaps_ms": [round(float(v), 1) for v in ms],
            }
        return {"ticks": len(self.gaps), "tick_ms": self.timer.interval(), "cpu_wait_s": round(sum(self.waits), 3),
                "own": describe(self.own_ms()), "raw": describe(self.raw_ms())}

    def __enter__(self) -> "GapMeter":
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
