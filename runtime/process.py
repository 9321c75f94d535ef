"""Process lifecycle helpers shared by the long-running loops."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from tenacity import RetryCallState, Retrying, wait_exponential_jitter


class StopSignal(threading.Event):
    """Set by SIGTERM or SIGINT; every time a loop consults it also counts as a sign of life.

    Every loop checks its stop event once per iteration (``while not stop.is_set()``) and
    sleeps on it between retries (``stop.wait(…)``), so the last consultation tells how
    long ago the loop last ran, without a heartbeat call in every loop. Liveness
    (:func:`loop_liveness`) is built on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_seen = time.monotonic()

    def is_set(self) -> bool:
        """Whether stopping was asked for; records a sign of life."""
        self.last_seen = time.monotonic()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout``; a loop sleeping between retries is alive."""
        self.last_seen = time.monotonic()
        try:
            return super().wait(timeout)
        finally:
            self.last_seen = time.monotonic()


class LoopStalled(RuntimeError):
    """The loop has not run for longer than the liveness threshold."""


def loop_liveness(stop: StopSignal, stale_after_s: float) -> Callable[[], None]:
    """A liveness check: raise :class:`LoopStalled` if ``stop`` was not consulted lately.

    A loop waiting out a database or broker outage is alive (it sleeps on ``stop``); only
    one stuck past every deadline, or dead, is not, and then a restart is what helps.
    """

    def check() -> None:
        quiet = time.monotonic() - stop.last_seen
        if quiet > stale_after_s:
            raise LoopStalled(f"the loop has not run for {quiet:.0f} s")

    return check


def stop_on_signals() -> StopSignal:
    """An event set by SIGTERM or SIGINT, so a loop can finish its batch and exit cleanly."""
    stop = StopSignal()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class Backoff:
    """Exponential backoff with jitter between failed attempts (tenacity's policy).

    The ``n``-th delay is ``first × 2^(n−1)`` plus a random ``0..first`` seconds, at most
    ``cap``: after an outage every process retries, and without the jitter they would
    all retry in lockstep. The loops sleep on their stop event for the delay, so a stop
    ends the wait at once.
    """

    def __init__(self, first: float = 0.2, cap: float = 5.0) -> None:
        self._wait = wait_exponential_jitter(multiplier=first, max=cap, jitter=first)
        # tenacity's wait strategies read only the attempt number of the call state.
        self._state = RetryCallState(Retrying(), None, (), {})

    def next(self) -> float:
        """The delay before the next attempt, in seconds; the one after it is longer."""
        delay = float(self._wait(self._state))
        self._state.attempt_number += 1
        return delay

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._state.attempt_number = 1
