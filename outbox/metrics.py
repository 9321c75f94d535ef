"""Prometheus series owned by the messaging core (relay and consume loops)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RELAY_PUBLISHED = Counter(
    "prequal_relay_published_events_total", "Outbox events the relay saw acknowledged by Kafka."
)
RELAY_BATCH_SECONDS = Histogram(
    "prequal_relay_batch_seconds",
    "Time to produce one relay batch and receive every delivery report.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RELAY_FAILURES = Counter(
    "prequal_relay_failed_batches_total", "Relay batches rolled back because Kafka failed."
)
CONSUMED = Counter(
    "prequal_consumer_messages_total",
    "Messages handled by a consumer, by outcome (applied, duplicate, dead_lettered).",
    ["consumer", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "prequal_consumer_batch_seconds",
    "Time to handle one batch of messages, commit included.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "prequal_consumer_retries_total",
    "Batches retried after a transient failure (database or broker unavailable).",
    ["consumer"],
)
