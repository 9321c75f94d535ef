"""The reliable consume loop: each event's effect applied exactly once in PostgreSQL.

For every batch, one database transaction records the batch's event ids in the inbox
in one statement (``ON CONFLICT DO NOTHING RETURNING``) and hands the handler only the
new ones, which it applies as a set. A redelivered event is an inbox hit, never a second
effect. Only after the commit are the Kafka offsets committed: a crash anywhere means
redelivery.

A message that can never succeed (undecodable, refused by the handler or by the
database) goes to the dead-letter topic *before* the commit, and the batch is applied
without it: no savepoint per message. Which message it was is found by bisecting the
batch, in rolled-back probe transactions, only when a batch fails that way.

A transient failure (the database or the broker not answering) rolls the batch back
and retries it with backoff, without skipping a message or losing the partition's place.

Each attempt at a batch is traced (:mod:`messaging.tracing`): a batch span holding the
database calls, and one span per message continuing the trace its ``traceparent`` began.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from messaging.dead_letter import dead_letter_headers
from messaging.metrics import CONSUMED, HANDLE_SECONDS, RETRIES, LagReporter
from messaging.tracing import ConsumedBatch
from runtime.db import connect
from runtime.health import database_check
from runtime.kafka import (
    consumer_config,
    ensure_topics,
    kafka_check,
    next_batch,
    next_offsets,
    producer_config,
)
from runtime.logging import get_logger
from runtime.observability import ObservabilityServer
from runtime.process import Backoff, loop_liveness, stop_on_signals
from runtime.settings import Settings
from schema.events import Envelope, UndecodableEvent, decode_event

_log = get_logger(__name__)

Handler = Callable[[psycopg.Connection, Sequence[Envelope[Any]]], None]
"""Applies new events, as a set, inside the caller's transaction; never commits.

Raises :class:`PermanentFailure` (or lets a ``psycopg`` data error through) when one of
them can never succeed.
"""


class PermanentFailure(Exception):
    """The message can never succeed as it is; it goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientFailure(Exception):
    """A dependency did not answer; the whole batch is retried later."""


_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, TransientFailure)


class InboxConsumer:
    """Consumes ``topics`` and applies each event once with ``handler``."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
    ) -> None:
        self.name = name
        self._settings = settings
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._conn: psycopg.Connection | None = None
        self._dlq: Producer | None = None
        self.assigned: list[TopicPartition] = []

    # --- lifecycle ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch, commit and leave the group."""
        ensure_topics(self._settings, [*self._topics, self._settings.topic_dlq])
        lag = LagReporter(self.name).config(self._settings)
        consumer = Consumer(consumer_config(self._settings, self._group_id, **lag))
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        _log.info("consumer.started", consumer=self.name, topics=self._topics)
        try:
            while not stop.is_set():
                messages = next_batch(
                    consumer,
                    self._settings.consumer_batch_size,
                    linger_s=self._settings.consumer_batch_linger_ms / 1000,
                )
                batch = [m for m in messages if self._usable(m)]
                if batch:
                    self._process(consumer, batch, stop)
        finally:
            consumer.close()
            if self._dlq is not None:
                self._dlq.flush(5)
            if self._conn is not None:
                self._conn.close()
            _log.info("consumer.stopped", consumer=self.name)

    def require_assignment(self) -> None:
        """Health check: raise unless the group gave this consumer partitions."""
        if not self.assigned:
            raise TransientFailure(f"{self.name} has no partitions assigned")

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        _log.info(
            "consumer.assigned",
            consumer=self.name,
            partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = []
        _log.info("consumer.revoked", consumer=self.name, count=len(partitions))

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        _log.warning("consumer.kafka_error", consumer=self.name, error=str(error))
        return False

    # --- one batch ------------------------------------------------------------------------

    def _process(self, consumer: Consumer, batch: list[Message], stop: threading.Event) -> None:
        backoff = Backoff()
        while True:
            started = time.perf_counter()
            try:
                outcomes = self.handle_batch(batch)
            except _TRANSIENT as error:
                RETRIES.labels(self.name).inc()
                _log.warning(
                    "consumer.retrying",
                    consumer=self.name,
                    error=str(error).strip(),
                    messages=len(batch),
                )
                self._reset_connection()
                if stop.is_set():
                    return  # uncommitted: the group redelivers the batch to whoever is next
                stop.wait(backoff.next())
                continue
            HANDLE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            for outcome, count in outcomes.items():
                CONSUMED.labels(self.name, outcome).inc(count)
            self._commit_offsets(consumer, batch)
            return

    def handle_batch(self, batch: Sequence[Message]) -> Tally[str]:
        """Apply ``batch`` in one transaction; dead-letter what can never succeed.

        Traced as a :class:`~messaging.tracing.ConsumedBatch`: the handler finds each
        event's ``traceparent`` with :func:`messaging.tracing.event_traceparent`.
        Returns how many messages were applied, duplicates or dead-lettered. Raises a
        transient error (``psycopg.OperationalError``, :class:`TransientFailure`) when a
        dependency did not answer: nothing of the batch is then committed.
        """
        with ConsumedBatch(self.name, self._group_id, batch) as spans:
            conn = self._connection()
            decoded, dead = _decode(batch)
            spans.name_events([(message, event.event_id) for message, event in decoded])
            while True:
                try:
                    with conn.transaction():
                        applied, duplicates = self._apply(conn, [event for _, event in decoded])
                        if dead:
                            self._dead_letter(dead)
                except _TRANSIENT:
                    raise
                except (PermanentFailure, psycopg.Error) as error:
                    index, reason = self._first_poison(conn, decoded, _reason(error))
                    dead.append((decoded.pop(index)[0], reason))
                    continue
                for message, _ in dead:
                    spans.dead_lettered(message)
                outcomes = Tally(applied=applied, duplicate=duplicates, dead_lettered=len(dead))
                spans.set_attributes({f"prequal.{name}": n for name, n in outcomes.items()})
                return +outcomes  # only the outcomes that happened

    def _apply(self, conn: psycopg.Connection, events: list[Envelope[Any]]) -> tuple[int, int]:
        """Record ``events`` in the inbox and apply the new ones: (applied, duplicates)."""
        if not events:
            return 0, 0
        recorded = {
            row[0]
            for row in conn.execute(
                "INSERT INTO inbox (consumer, event_id) SELECT %s, unnest(%s::uuid[])"
                " ON CONFLICT DO NOTHING RETURNING event_id",
                (self.name, [event.event_id for event in events]),
            )
        }
        # The first of each event id is new; a copy later in the same batch is a duplicate.
        fresh = []
        for event in events:
            if event.event_id in recorded:
                recorded.discard(event.event_id)
                fresh.append(event)
        if fresh:
            self._handler(conn, fresh)
        return len(fresh), len(events) - len(fresh)

    def _first_poison(
        self, conn: psycopg.Connection, decoded: list[tuple[Message, Envelope[Any]]], reason: str
    ) -> tuple[int, str]:
        """The index of the first message whose prefix of the batch fails, and why.

        The whole batch failed with ``reason``; the prefixes are tried in transactions
        that are always rolled back (binary search: log2 of the batch size probes).
        """
        low, high = 1, len(decoded)  # decoded[:high] is known to fail
        while low < high:
            middle = (low + high) // 2
            failure = self._fails(conn, [event for _, event in decoded[:middle]])
            if failure is None:
                low = middle + 1
            else:
                high, reason = middle, failure
        return high - 1, reason

    def _fails(self, conn: psycopg.Connection, events: list[Envelope[Any]]) -> str | None:
        """Why applying ``events`` fails for a reason of their own, or None; never commits."""
        try:
            with conn.transaction(force_rollback=True):
                self._apply(conn, events)
        except _TRANSIENT:
            raise
        except (PermanentFailure, psycopg.Error) as error:
            return _reason(error)
        return None

    def _dead_letter(self, dead: list[tuple[Message, str]]) -> None:
        if self._dlq is None:
            self._dlq = Producer(producer_config(self._settings))
        failures: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for message, reason in dead:
            _log.warning(
                "consumer.dead_lettered",
                consumer=self.name,
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                reason=reason,
            )
            self._dlq.produce(
                self._settings.topic_dlq,
                value=message.value(),
                key=message.key(),
                headers=dead_letter_headers(message, self.name, reason),
                on_delivery=on_delivery,
            )
        remaining = self._dlq.flush(self._settings.relay_delivery_timeout_ms / 1000 + 5)
        if failures or remaining:
            raise TransientFailure(f"dead-letter topic unavailable: {failures or remaining}")

    def _commit_offsets(self, consumer: Consumer, batch: Sequence[Message]) -> None:
        try:
            consumer.commit(offsets=next_offsets(batch), asynchronous=False)
        except KafkaException as error:
            # The effects are committed; after a rebalance the new owner redelivers and
            # the inbox turns each redelivery into a no-op. Retrying here cannot help.
            _log.warning("consumer.offset_commit_failed", consumer=self.name, error=str(error))

    # --- database connection --------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._settings, self.name)
        return self._conn

    def _reset_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _decode(
    batch: Sequence[Message],
) -> tuple[list[tuple[Message, Envelope[Any]]], list[tuple[Message, str]]]:
    """The batch's events, and the messages that are no event at all with the reason."""
    decoded: list[tuple[Message, Envelope[Any]]] = []
    dead: list[tuple[Message, str]] = []
    for message in batch:
        try:
            decoded.append((message, decode_event(message.value())))
        except UndecodableEvent as error:
            dead.append((message, str(error)))
    return decoded, dead


def _reason(error: Exception) -> str:
    """Why a message can never succeed, for the dead-letter headers (no SQL parameters)."""
    if isinstance(error, PermanentFailure):
        return error.reason
    if isinstance(error, psycopg.Error):
        # A constraint or data error is a property of the message: retrying cannot help.
        return f"database refused the effect: {error.diag.message_primary or type(error).__name__}"
    return str(error)


def run_consumer_process(loop: InboxConsumer, settings: Settings, metrics_port: int) -> None:
    """Run ``loop`` until SIGTERM/SIGINT with ``/health`` and ``/metrics`` on ``metrics_port``.

    Healthy means: partitions assigned, the database and the broker answering.
    """
    stop = stop_on_signals()
    server = ObservabilityServer(
        settings.http_host,
        metrics_port,
        {
            "consumer": loop.require_assignment,
            "database": database_check(settings),
            "kafka": kafka_check(settings),
        },
        settings.health_deadline_s,
        loop_liveness(stop, settings.liveness_stale_s),
    ).start()
    try:
        loop.run(stop)
    finally:
        server.stop()
