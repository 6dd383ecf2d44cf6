"""A dependency-free text progress bar for the CLI (stderr, redrawn in place)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Draw ``label [#####.....] 42% detail`` on one terminal line.

    Redraws at most every ``min_interval`` seconds so a fast loop costs nothing; on a stream that
    is not a terminal it prints nothing until :meth:`close`, which writes the final state once.
    """

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30, min_interval: float = 0.2):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._last_draw = 0.0
        self._line = ""
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, fraction: float, detail: str = "") -> None:
        """Set the bar to ``fraction`` (0..1) with a short ``detail`` text."""
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(round(fraction * self.width))
        self._line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}% {detail}"
        now = time.monotonic()
        if self._interactive and now - self._last_draw >= self.min_interval:
            self.stream.write("\r" + self._line.ljust(100)[:160])
            self.stream.flush()
            self._last_draw = now

    def close(self) -> None:
        """Finish the line (print the final state once)."""
        if self._line:
            prefix = "\r" if self._interactive else ""
            self.stream.write(prefix + self._line + "\n")
            self.stream.flush()
