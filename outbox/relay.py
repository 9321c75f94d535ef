"""The polling relay: move committed outbox rows to Kafka, none skipped, none lost.

It claims unpublished rows (``published_at IS NULL``) in ``seq`` order with
``FOR UPDATE SKIP LOCKED``, produces them with an idempotent acks=all producer, waits
for every delivery report, and only then marks them published, in the same transaction.
A row whose transaction commits late is still unpublished when it becomes visible, so
no cursor can overtake it. A failed batch is rolled back and retried: rows are published
at least once, and consumers deduplicate by event id.

One relay is active at a time: it holds a session-level advisory lock on its control
connection, which also LISTENs for the outbox trigger's notifications. Standbys retry
the lock; if the active relay dies, its connection closes and the lock is freed.

Each published batch is traced (:func:`relay_trace`): the row's ``traceparent`` is the
parent of the message's ``send`` span, whose context the Kafka header carries on.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import SpanKind

from messaging.headers import Headers, event_headers
from messaging.tracing import SYSTEM, BatchTrace, MessageSpec, message_attributes
from outbox.metrics import (
    RELAY_BATCH_SECONDS,
    RELAY_FAILURES,
    RELAY_PUBLISH_LATENCY,
    RELAY_PUBLISHED,
)
from runtime.db import connect
from runtime.kafka import ensure_topics, producer_config
from runtime.logging import get_logger
from runtime.process import Backoff
from runtime.settings import Settings
from runtime.tracing import tracing_enabled

#: Advisory lock key held by the active relay ("prequal relay" in ASCII, truncated).
RELAY_LOCK_ID = 0x7072657175616C72
NOTIFY_CHANNEL = "prequal_outbox"

_CLAIM = """
    SELECT id, topic, aggregateid, payload::text AS payload, event_id, type,
           correlation_id, causation_id, traceparent,
           extract(epoch FROM occurred_at)::float8 AS occurred_epoch,
           replay_of IS NOT NULL AS replayed
      FROM outbox
     WHERE published_at IS NULL AND seq <= %s
     ORDER BY seq
     LIMIT %s
       FOR UPDATE SKIP LOCKED
"""
MAX_SEQ = 2**63 - 1
_MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)"

_log = get_logger(__name__)


def acquire_leadership(
    control: psycopg.Connection, stop: threading.Event, instance: str, retry_s: float
) -> bool:
    """Take the relay's advisory lock on ``control``, waiting as a standby while it is held.

    Whoever holds it is the one active relay (polling or CDC confirmer); it is released
    when that connection closes, however the process ends.
    """
    announced = False
    while not stop.is_set():
        row = control.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_ID,)).fetchone()
        if row and row[0]:
            _log.info("relay.active", instance=instance)
            return True
        if not announced:
            _log.info("relay.standby", instance=instance)
            announced = True
        stop.wait(retry_s)
    return False


class DeliveryFailed(Exception):
    """Kafka did not acknowledge every message of a batch; the batch is retried."""


DeliveryCallback = Callable[[Any, Any], None]


class ProducerLike(Protocol):
    """The part of confluent-kafka's Producer the relay uses (a fake implements it in tests)."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one message."""

    def poll(self, timeout: float) -> int:
        """Serve delivery callbacks."""

    def flush(self, timeout: float) -> int:
        """Wait for every queued message; return how many are still queued."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed outbox row, as the relay needs it."""

    id: Any
    topic: str
    aggregateid: str
    payload: str
    event_id: Any
    type: str
    correlation_id: str | None
    causation_id: str | None
    traceparent: str | None
    occurred_epoch: float = 0.0
    replayed: bool = False

    def headers(self, traceparent: str | None = None) -> Headers:
        """Kafka headers: the event's identity and tracing, identical for both relays.

        ``traceparent`` replaces the row's own (the relay's send span continues it).
        """
        return event_headers(
            self.event_id,
            self.type,
            self.correlation_id,
            self.causation_id,
            traceparent or self.traceparent,
            outbox_row_id=self.id,
        )


def relay_trace(rows: Sequence[OutboxRow], start_time: int | None = None) -> BatchTrace:
    """The spans of one published batch (:mod:`messaging.tracing`).

    ``outbox-relay batch`` (PRODUCER; from ``start_time``, the claim, in nanoseconds since
    the epoch) holds the database calls; per row a ``send <topic>`` span, the child of the
    row's ``traceparent`` (the API's or the decision worker's span), ended by the row's
    delivery report: its context is the message's ``traceparent`` header.
    """
    traced = tracing_enabled()
    messages = [
        MessageSpec(
            f"send {row.topic}",
            SpanKind.PRODUCER,
            row.traceparent,
            (
                message_attributes(
                    "send", row.topic, key=row.aggregateid, message_id=str(row.event_id)
                )
                if traced
                else {}
            ),
        )
        for row in rows
    ]
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    return BatchTrace("outbox-relay batch", SpanKind.PRODUCER, attributes, messages, start_time)


class PollingRelay:
    """Publishes the outbox to Kafka; call :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        producer_factory: Callable[[], ProducerLike] | None = None,
    ) -> None:
        self._settings = settings
        self._producer_factory = producer_factory or (lambda: Producer(producer_config(settings)))
        self._producer: ProducerLike | None = None
        self._topics_ready = False
        self.instance = f"outbox-relay:{socket.gethostname()}:{os.getpid()}"

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, surviving database and broker outages."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                with connect(self._settings, self.instance, autocommit=True) as control:
                    if not self._acquire_leadership(control, stop):
                        continue
                    # Polling is active: a later switch to CDC is a new hand-over.
                    control.execute("DELETE FROM relay_handover")
                    control.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    with connect(self._settings, self.instance) as work:
                        self._lead(control, work, stop, backoff)
            except psycopg.OperationalError as error:
                _log.warning("relay.database_unavailable", error=str(error).strip())
                stop.wait(backoff.next())
        self._close_producer()
        _log.info("relay.stopped", instance=self.instance)

    def _acquire_leadership(self, control: psycopg.Connection, stop: threading.Event) -> bool:
        return acquire_leadership(
            control, stop, self.instance, self._settings.relay_standby_retry_s
        )

    def _lead(
        self,
        control: psycopg.Connection,
        work: psycopg.Connection,
        stop: threading.Event,
        backoff: Backoff,
    ) -> None:
        while not stop.is_set():
            try:
                self.drain(work, stop)
                backoff.reset()
            except (DeliveryFailed, KafkaException) as error:
                RELAY_FAILURES.inc()
                _log.warning("relay.kafka_unavailable", error=str(error))
                stop.wait(backoff.next())
                continue
            self._wait_for_commit(control, stop)

    def _wait_for_commit(self, control: psycopg.Connection, stop: threading.Event) -> None:
        """Sleep until a commit notifies us, the poll interval passes, or we are stopped."""
        deadline = time.monotonic() + self._settings.relay_poll_interval_s
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices keep SIGTERM responsive even with a long fallback interval.
            for _ in control.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return

    def drain(
        self,
        work: psycopg.Connection,
        stop: threading.Event | None = None,
        up_to_seq: int = MAX_SEQ,
    ) -> int:
        """Publish batches until no unpublished row (up to ``up_to_seq``) is left."""
        total = 0
        while stop is None or not stop.is_set():
            published = self.publish_batch(work, up_to_seq)
            total += published
            if published < self._settings.relay_batch_size:
                break
        return total

    def publish_batch(self, work: psycopg.Connection, up_to_seq: int = MAX_SEQ) -> int:
        """Claim, produce and mark one batch in one transaction; return its size."""
        self._ensure_topics()
        claimed_at = time.time_ns()
        # The spans close after the transaction: the batch span covers its commit.
        with ExitStack() as traced, work.transaction():
            with work.cursor(row_factory=psycopg.rows.class_row(OutboxRow)) as cur:
                claim = (up_to_seq, self._settings.relay_batch_size)
                rows = cur.execute(_CLAIM, claim).fetchall()
            if not rows:
                # An idle poll is no span: the claim's database span has no parent and
                # is not sampled (runtime.tracing), and no batch span was started.
                return 0
            spans = traced.enter_context(relay_trace(rows, start_time=claimed_at))
            started = time.perf_counter()
            self._produce(rows, spans)
            elapsed = time.perf_counter() - started
            work.execute(_MARK_PUBLISHED, ([row.id for row in rows],))
        RELAY_BATCH_SECONDS.observe(elapsed)
        RELAY_PUBLISHED.inc(len(rows))
        _log.info("relay.published", count=len(rows), produce_ms=round(elapsed * 1000, 1))
        return len(rows)

    # --- Kafka --------------------------------------------------------------------------

    def _ensure_topics(self) -> None:
        if not self._topics_ready:
            ensure_topics(self._settings, timeout_s=5.0)
            self._topics_ready = True

    def _produce(self, rows: Sequence[OutboxRow], spans: BatchTrace | None = None) -> None:
        if spans is None:
            with relay_trace(rows) as own:
                self._produce(rows, own)
            return
        producer = self._current_producer()
        failures: list[KafkaError] = []

        def delivery_report(index: int, row: OutboxRow) -> DeliveryCallback:
            def on_delivery(error: KafkaError | None, message: Message) -> None:
                if error is not None:
                    failures.append(error)
                    spans.end_message(index, f"not delivered: {error.name()}")
                    return
                where = (
                    {
                        "messaging.destination.partition.id": str(message.partition()),
                        "messaging.kafka.offset": message.offset() or 0,
                    }
                    if message is not None and spans.span(index) is not None
                    else None
                )
                spans.end_message(index, attributes=where)
                if not row.replayed:
                    # A replayed copy keeps its original's occurred_at: not a latency.
                    RELAY_PUBLISH_LATENCY.observe(max(0.0, time.time() - row.occurred_epoch))

            return on_delivery

        for index, row in enumerate(rows):
            while True:
                try:
                    producer.produce(
                        row.topic,
                        value=row.payload.encode(),
                        key=row.aggregateid.encode(),
                        headers=row.headers(spans.traceparent(index)),
                        on_delivery=delivery_report(index, row),
                    )
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports to make room.
                    producer.poll(0.1)
        timeout_s = self._settings.relay_delivery_timeout_ms / 1000 + 5
        remaining = producer.flush(timeout_s)
        if failures or remaining:
            if any(error.fatal() for error in failures):
                self._close_producer()
            first = failures[0].str() if failures else f"{remaining} messages unacknowledged"
            raise DeliveryFailed(
                f"{len(failures) or remaining} of {len(rows)} not delivered: {first}"
            )

    def _current_producer(self) -> ProducerLike:
        if self._producer is None:
            self._producer = self._producer_factory()
        return self._producer

    def _close_producer(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
