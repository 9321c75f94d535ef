"""Arrange outbox rows the way the services write them, and run a relay in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.types.json import Jsonb

from outbox.append import OutboxMessage
from outbox.relay import PollingRelay
from runtime.settings import Settings
from tests.support.events import submitted_event


def submitted_message(settings: Settings, correlation_id: str = "corr-test") -> OutboxMessage:
    """A LoanApplicationSubmitted event for a new application id, bound for its topic."""
    return OutboxMessage(submitted_event(correlation_id=correlation_id), settings.topic_submitted)


def insert_outbox(conn: psycopg.Connection, message: OutboxMessage) -> str:
    """INSERT one outbox row in ``conn``'s current transaction; return its event id."""
    row = message.row()
    row["payload"] = Jsonb(row["payload"])
    columns = ", ".join(row)
    placeholders = ", ".join(f"%({name})s" for name in row)
    conn.execute(f"INSERT INTO outbox ({columns}) VALUES ({placeholders})", row)
    return str(row["event_id"])


def insert_many(settings: Settings, count: int) -> list[str]:
    """Commit ``count`` outbox rows in one transaction; return their event ids."""
    with psycopg.connect(settings.psycopg_conninfo) as conn, conn.transaction():
        return [insert_outbox(conn, submitted_message(settings)) for _ in range(count)]


class LoopThread:
    """A ``run(stop)`` loop (relay, worker) running in a background thread of the test."""

    def __init__(self, run: Callable[[threading.Event], None]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop as SIGTERM would, and wait for it."""
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the loop did not stop within 30 s"


class RelayThread(LoopThread):
    """A polling relay running in a background thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.relay = PollingRelay(settings)
        super().__init__(self.relay.run)


@contextmanager
def running(run: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run a loop in a background thread for the duration of the block."""
    loop = LoopThread(run)
    try:
        yield
    finally:
        loop.stop()


@contextmanager
def relay_thread(settings: Settings) -> Iterator[PollingRelay]:
    """Run a polling relay in a background thread for the duration of the block."""
    running = RelayThread(settings)
    try:
        yield running.relay
    finally:
        running.stop()
