"""Progress of long operator commands: a Rich bar on a terminal, plain lines elsewhere.

``prequal-ops outbox replay`` and ``purge``, ``dlq list`` and ``dlq redrive`` can take
minutes. On a terminal they show a Rich progress bar (count, rate, ETA) on stderr; when
stderr is not a terminal (a log, CI) or with ``--json``, a plain line every
:data:`PLAIN_EVERY_S` seconds and one at the end, so a log still shows how far along.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Seconds between two plain progress lines.
PLAIN_EVERY_S = 2.0


class Update(Protocol):
    """Told how many are done so far (a running total), and the total once it is known."""

    def __call__(self, done: int, total: int | None = None) -> None:
        """Record progress."""


class _RateColumn(ProgressColumn):
    """Items per second, as Rich measures them."""

    def render(self, task: Task) -> Text:
        """The task's speed, e.g. ``250/s``."""
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:,.0f}/s")


@contextmanager
def progress(
    description: str, total: int | None, *, plain: bool, stream: TextIO | None = None
) -> Iterator[Update]:
    """Report the progress of ``total`` steps of ``description`` while the block runs.

    ``plain`` forces plain lines (``--json``); otherwise a Rich bar when ``stream``
    (default stderr) is a terminal.
    """
    out = stream or sys.stderr
    if plain or not out.isatty():
        yield from _plain(description, total, out)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=out), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.update(task, completed=done)

        yield update


def _plain(description: str, expected: int | None, out: TextIO) -> Iterator[Update]:
    started = time.monotonic()
    total_of = [expected]
    printed_at = [started]
    done_so_far = [0]

    def line(done: int) -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = done / elapsed
        total = total_of[0]
        of = "" if total is None else f"/{total}"
        eta = ""
        if total is not None and rate > 0 and done < total:
            eta = f", ETA {(total - done) / rate:.0f} s"
        return f"{description}: {done}{of} ({rate:,.0f}/s{eta})"

    def update(done: int, total: int | None = None) -> None:
        if total is not None:
            total_of[0] = total
        done_so_far[0] = done
        if time.monotonic() - printed_at[0] >= PLAIN_EVERY_S:
            printed_at[0] = time.monotonic()
            print(line(done), file=out, flush=True)

    yield update
    print(line(done_so_far[0]), file=out, flush=True)
