"""Prometheus series of the relay, registered only in the processes that relay.

The consume loops' series are in :mod:`messaging.metrics`: a worker never imports this
module, so it does not export the relay's series as zeros.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

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


class OutboxGauges:
    """``prequal_outbox_pending`` and ``…_oldest_pending_age_seconds``, read at scrape time.

    Read from the database when Prometheus scrapes the relay, so they are true whichever
    relay publishes and whoever inserts, and cost nothing between scrapes.
    """

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read
        self._cache: tuple[float, tuple[int, float]] = (0.0, (0, 0.0))
        Gauge("prequal_outbox_pending", "Outbox rows not yet published.").set_function(
            lambda: float(self._values()[0])
        )
        Gauge(
            "prequal_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
        ).set_function(lambda: self._values()[1])

    def _values(self) -> tuple[int, float]:
        # One query serves both gauges of a scrape.
        at, values = self._cache
        if time.monotonic() - at > 1.0:
            try:
                values = self._read()
            except Exception:
                values = (-1, -1.0)
            self._cache = (time.monotonic(), values)
        return values
