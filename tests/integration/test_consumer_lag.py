"""Consumer lag per partition, from the real broker's watermarks and committed offsets."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Message
from prometheus_client import REGISTRY

from messaging.metrics import LagReporter
from runtime.kafka import consumer_config, next_offsets
from runtime.settings import Settings
from tests.support.events import submitted_event
from tests.support.kafka import produce_events
from tests.support.processes import wait_until


def _total_lag(name: str, topic: str, partitions: int) -> float | None:
    values = [
        REGISTRY.get_sample_value(
            "prequal_consumer_lag", {"consumer": name, "topic": topic, "partition": str(p)}
        )
        for p in range(partitions)
    ]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def test_the_lag_gauge_counts_what_is_not_committed_and_falls_to_zero_after_commit(
    settings: Settings,
) -> None:
    topic = settings.topic_submitted
    produce_events(settings, topic, [submitted_event() for _ in range(10)])
    name = f"lag-{uuid.uuid4().hex[:8]}"
    fast = settings.model_copy(update={"kafka_statistics_interval_ms": 100})
    consumer = Consumer(consumer_config(fast, f"{name}-group", **LagReporter(name).config(fast)))
    consumer.subscribe([topic])
    received: list[Message] = []
    try:

        def read_all() -> bool:
            received.extend(m for m in consumer.consume(10, timeout=0.2) if m.error() is None)
            return len(received) >= 10

        wait_until(read_all, 30)
        consumer.commit(offsets=next_offsets(received[:4]), asynchronous=False)

        def lag_is(expected: int) -> bool:
            consumer.consume(1, timeout=0.1)  # serves the statistics callback
            return _total_lag(name, topic, settings.topic_partitions) == expected

        # Offsets committed for the first four messages of their partitions; the rest
        # of those partitions, and every message of the untouched ones, is lag.
        committed = sum(o.offset for o in next_offsets(received[:4]))
        wait_until(lambda: lag_is(10 - committed), 30)

        consumer.commit(offsets=next_offsets(received), asynchronous=False)
        wait_until(lambda: lag_is(0), 30)
    finally:
        consumer.close()
