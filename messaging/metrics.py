"""Prometheus series of the consume loops and the credit worker (the relay's: outbox.metrics)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from runtime.settings import Settings

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
    "Batches, or a transaction's commit, retried after a transient failure (server unavailable).",
    ["consumer"],
)


CONSUMER_LAG = Gauge(
    "prequal_consumer_lag",
    "Messages on an assigned partition after the consumer's committed offset.",
    ["consumer", "topic", "partition"],
)


class LagReporter:
    """Keeps ``prequal_consumer_lag`` true from librdkafka's periodic statistics.

    librdkafka already tracks, per assigned partition, the high watermark against the
    committed offset; its statistics callback hands us that JSON every
    ``kafka_statistics_interval_ms``. Partitions no longer assigned lose their series, so
    a rebalance does not leave stale lag behind on a consumer that gave a partition away.
    """

    def __init__(self, consumer: str) -> None:
        self._consumer = consumer
        self._reported: set[tuple[str, str]] = set()

    def config(self, settings: Settings) -> dict[str, Any]:
        """Consumer configuration entries that turn the statistics on and route them here."""
        return {
            "statistics.interval.ms": settings.kafka_statistics_interval_ms,
            "stats_cb": self.on_statistics,
        }

    def on_statistics(self, raw: str) -> None:
        """The ``stats_cb`` of librdkafka: set the lag of every assigned partition."""
        stats = orjson.loads(raw)
        current: set[tuple[str, str]] = set()
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, p in topic_stats.get("partitions", {}).items():
                # -1 is librdkafka's internal "unassigned" partition.
                if partition == "-1" or p.get("fetch_state", "none") == "none":
                    continue
                lag = partition_lag(p)
                if lag is None:
                    continue
                current.add((topic, partition))
                CONSUMER_LAG.labels(self._consumer, topic, partition).set(lag)
        for topic, partition in self._reported - current:
            CONSUMER_LAG.remove(self._consumer, topic, partition)
        self._reported = current


def partition_lag(p: dict[str, Any]) -> int | None:
    """Messages after the committed offset, from one partition's librdkafka statistics.

    librdkafka's own ``consumer_lag`` is -1 until the group has committed on the
    partition; a group that never committed starts at the log start (we reset to
    earliest), so its whole retained log is lag. ``ls_offset`` (last stable offset) is
    the end a read_committed consumer can reach. None: no watermark fetched yet.
    """
    end = int(p.get("ls_offset", -1))
    if end < 0:
        end = int(p.get("hi_offset", -1))
    if end < 0:
        return None
    committed = int(p.get("committed_offset", -1001))
    start = committed if committed >= 0 else max(int(p.get("lo_offset", 0)), 0)
    return max(0, end - start)
