"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any, Generator


def drain(gen: Generator) -> tuple[list[Any], Any]:
    """Run a generator to the end: ``(every yielded item, the returned value)``."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value
