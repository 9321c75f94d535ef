"""Read back what really reached the Kafka broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from messaging.headers import Headers, event_headers
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.events import Envelope


@dataclass(frozen=True)
class Received:
    """One message read from a topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str]


def consume(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[Received]], bool],
    timeout_s: float = 30.0,
    isolation: str = "read_committed",
) -> list[Received]:
    """Read ``topic`` from the beginning until ``until(messages)`` holds or time runs out."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    received: list[Received] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(received):
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise RuntimeError(str(error))
            key = message.key()
            received.append(
                Received(
                    topic=message.topic() or topic,
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    key=key.decode() if isinstance(key, bytes) else None,
                    value=message.value() or b"",
                    headers=_headers(message.headers()),
                )
            )
    finally:
        consumer.close()
    return received


def _headers(raw: object) -> dict[str, str]:
    pairs = raw.items() if isinstance(raw, dict) else (raw or [])
    return {
        str(k): v.decode() if isinstance(v, bytes) else str(v or "")
        for k, v in pairs  # type: ignore[attr-defined]
    }


def count_at_least(n: int) -> Callable[[list[Received]], bool]:
    """Stop once ``n`` messages were read."""
    return lambda messages: len(messages) >= n


def has_events(expected: set[str]) -> Callable[[list[Received]], bool]:
    """Stop once every event id in ``expected`` was read (duplicates may come too)."""
    return lambda messages: expected <= set(event_ids(messages))


def event_ids(messages: list[Received]) -> list[str]:
    """The event ids (from the headers) of ``messages``, in the order read."""
    return [m.headers["event_id"] for m in messages]


def produce(settings: Settings, topic: str, values: Sequence[tuple[str, bytes, Headers]]) -> None:
    """Put raw (key, value, headers) messages on ``topic`` and wait until they are acknowledged."""
    ensure_topics(settings, [topic])
    # Idempotent: a retried request must not put a message on the topic twice, or a test
    # counting what a worker made of the input would blame the worker for it.
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    for key, value, headers in values:
        producer.produce(topic, value=value, key=key.encode(), headers=headers)
    assert producer.flush(15) == 0, "test messages were not acknowledged"


def produce_events(settings: Settings, topic: str, events: Sequence[Envelope[Any]]) -> None:
    """Put events on ``topic`` exactly as the relay would: key, envelope value, headers."""
    produce(
        settings,
        topic,
        [
            (
                str(e.aggregate_id),
                e.model_dump_json().encode(),
                [
                    (k, v)
                    for k, v in event_headers(
                        e.event_id, e.event_type.value, e.correlation_id, e.causation_id, None
                    )
                    if isinstance(v, bytes)
                ],
            )
            for e in events
        ],
    )


def isolated_topics(settings: Settings) -> Settings:
    """A copy of ``settings`` whose topics no other test uses."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    return settings.model_copy(
        update={
            "topic_submitted": prefix + "loan_applications_submitted",
            "topic_credit_reports": prefix + "credit_reports_generated",
            "topic_decisions": prefix + "loan_application_decisions",
            "topic_dlq": prefix + "loan_processing_dlq",
            "group_credit_worker": prefix + "credit-worker",
            "group_decision_worker": prefix + "decision-worker",
            "group_projector": prefix + "query-projector",
            "group_confirmer": prefix + "outbox-confirmer",
            "instance_id": prefix + "0",
        }
    )
