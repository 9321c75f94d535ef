"""Process lifecycle helpers shared by the long-running loops."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a loop can finish its batch and exit cleanly."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class Backoff:
    """Exponential backoff between failed attempts: ``first`` doubling up to ``cap`` seconds."""

    def __init__(self, first: float = 0.2, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self._current = first

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self._current
        self._current = min(self._current * 2, self._cap)
        return delay

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._current = self._first
