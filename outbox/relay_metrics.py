"""Prometheus series of the relay, registered only in the processes that relay.

A separate module from :mod:`outbox.metrics` so that the workers, which import the
consume loop's series, do not export the relay's as zeros.
"""

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
RELAY_PUBLISH_LATENCY = Histogram(
    "prequal_relay_publish_latency_seconds",
    "From an outbox row's commit to Kafka's acknowledgement of its event (replays excluded).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RELAY_FAILURES = Counter(
    "prequal_relay_failed_batches_total", "Relay batches rolled back because Kafka failed."
)
