"""Figures that repeat: a measurement taken in several interleaved rounds, as median and spread.

A single run on a shared 2-core machine swings widely (issue 17 saw the same sweep
sustain 1,000 POST/s one day and 750 the next), so every figure that decides a target
is taken in ``ROUNDS`` rounds, interleaved with the runs it is compared against, and
quoted as its median with the spread (min to max). A target is met only if the median
meets it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Rounds of each measurement that decides a target (issue 17: at least three).
ROUNDS = 3


@dataclass(frozen=True)
class Spread:
    """The median of some rounds' figures and their range."""

    median: float
    low: float
    high: float
    rounds: int

    def format(self, digits: int = 0, unit: str = "") -> str:
        """``"1,000 (750 to 1,250)"``: the median, then min to max when the rounds differ."""
        median = f"{self.median:,.{digits}f}{unit}"
        if self.rounds < 2 or self.low == self.high:
            return median
        return f"{median} ({self.low:,.{digits}f} to {self.high:,.{digits}f})"

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready dict."""
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": self.rounds}


def spread(values: Iterable[float]) -> Spread:
    """Median and min to max of ``values``; raises ValueError when there are none."""
    found = sorted(values)
    if not found:
        raise ValueError("no rounds to summarise")
    return Spread(statistics.median(found), found[0], found[-1], len(found))


def interleaved(rounds: int, sides: Sequence[str]) -> list[tuple[int, str]]:
    """``(round, side)`` in the order to run them: every side once per round, rounds in turn.

    Running A, B, A, B, A, B rather than A, A, A, B, B, B means that a slow spell of the
    shared machine lands on both sides of a comparison, not on one.
    """
    return [(number, side) for number in range(1, rounds + 1) for side in sides]
