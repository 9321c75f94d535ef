"""The reliable consume loop: each event's effect applied exactly once in PostgreSQL.

For every batch: one database transaction records ``(consumer, event_id)`` in the inbox
and runs the handler, message by message (each in a savepoint), so that a duplicate is
recognised and skipped, and a message that can never succeed is set aside without
undoing its neighbours. Those go to the dead-letter topic *before* the commit. Only
after the commit are the Kafka offsets committed: a crash anywhere means redelivery,
and redelivery means an inbox hit, never a second effect.

A transient failure (the database or the broker not answering) rolls the batch back
and retries it with backoff, without skipping a message or losing the partition's place.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from outbox.dead_letter import dead_letter_headers
from outbox.metrics import CONSUMED, HANDLE_SECONDS, RETRIES, LagReporter
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
from runtime.logging import bind_correlation_id, clear_context, get_logger
from runtime.observability import ObservabilityServer
from runtime.process import Backoff, loop_liveness, stop_on_signals
from runtime.settings import Settings
from schema.events import Envelope, UndecodableEvent, decode_event

_log = get_logger(__name__)

Handler = Callable[[psycopg.Connection, Envelope[Any]], None]
"""Applies one event inside the caller's transaction; never commits."""


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

        Returns how many messages were applied, duplicates or dead-lettered.
        """
        outcomes: Tally[str] = Tally()
        dead: list[tuple[Message, str]] = []
        conn = self._connection()
        with conn.transaction():
            for message in batch:
                reason = self._apply(conn, message, outcomes)
                if reason is not None:
                    dead.append((message, reason))
            if dead:
                self._dead_letter(dead)
                outcomes["dead_lettered"] += len(dead)
        return outcomes

    def _apply(
        self, conn: psycopg.Connection, message: Message, outcomes: Tally[str]
    ) -> str | None:
        """Apply one message in a savepoint; the reason it must be dead-lettered, if so."""
        try:
            event = decode_event(message.value())
        except UndecodableEvent as error:
            return str(error)
        clear_context()
        bind_correlation_id(event.correlation_id)
        try:
            with conn.transaction():
                if not self._record(conn, event):
                    outcomes["duplicate"] += 1
                    return None
                self._handler(conn, event)
        except PermanentFailure as failure:
            return failure.reason
        except _TRANSIENT:
            raise
        except psycopg.Error as error:
            # A constraint or data error is a property of this message: retrying cannot help.
            primary = error.diag.message_primary or type(error).__name__
            return f"database refused the effect: {primary}"
        outcomes["applied"] += 1
        return None

    def _record(self, conn: psycopg.Connection, event: Envelope[Any]) -> bool:
        cursor = conn.execute(
            "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (self.name, event.event_id),
        )
        return cursor.rowcount == 1

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
