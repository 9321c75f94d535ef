"""The consumer-lag gauge follows librdkafka's statistics, assignment by assignment."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import REGISTRY

from messaging.metrics import LagReporter
from runtime.settings import Settings


def _stats(partitions: dict[str, dict[str, Any]]) -> str:
    return orjson.dumps({"topics": {"t.submitted": {"partitions": partitions}}}).decode()


def _lag(consumer: str, partition: str) -> float | None:
    return REGISTRY.get_sample_value(
        "prequal_consumer_lag",
        {"consumer": consumer, "topic": "t.submitted", "partition": partition},
    )


def test_the_lag_of_each_assigned_partition_is_reported() -> None:
    reporter = LagReporter("unit-lag-a")

    reporter.on_statistics(
        _stats(
            {
                "0": {"fetch_state": "active", "committed_offset": 3, "ls_offset": 10},
                "1": {"fetch_state": "active", "committed_offset": 5, "ls_offset": 5},
            }
        )
    )

    assert _lag("unit-lag-a", "0") == 7
    assert _lag("unit-lag-a", "1") == 0


def test_a_partition_never_committed_lags_by_everything_from_the_log_start() -> None:
    reporter = LagReporter("unit-lag-e")

    reporter.on_statistics(
        _stats(
            {"0": {"committed_offset": -1001, "lo_offset": 4, "ls_offset": 9, "fetch_state": "a"}}
        )
    )

    assert _lag("unit-lag-e", "0") == 5


def test_the_last_stable_offset_bounds_the_lag_when_known_else_the_high_watermark() -> None:
    reporter = LagReporter("unit-lag-f")

    reporter.on_statistics(
        _stats(
            {
                "0": {
                    "fetch_state": "active",
                    "committed_offset": 2,
                    "ls_offset": 6,
                    "hi_offset": 9,
                },
                "1": {
                    "fetch_state": "active",
                    "committed_offset": 2,
                    "ls_offset": -1,
                    "hi_offset": 9,
                },
            }
        )
    )

    assert _lag("unit-lag-f", "0") == 4
    assert _lag("unit-lag-f", "1") == 7


def test_unknown_lag_and_the_internal_partition_are_not_reported() -> None:
    reporter = LagReporter("unit-lag-b")

    reporter.on_statistics(
        _stats(
            {
                "-1": {"fetch_state": "none", "ls_offset": 3},
                "0": {"fetch_state": "active", "committed_offset": -1001, "ls_offset": -1001},
            }
        )
    )

    assert _lag("unit-lag-b", "-1") is None
    assert _lag("unit-lag-b", "0") is None


def test_a_partition_given_away_in_a_rebalance_loses_its_series() -> None:
    reporter = LagReporter("unit-lag-c")
    reporter.on_statistics(
        _stats(
            {
                "0": {"fetch_state": "active", "committed_offset": 0, "ls_offset": 4},
                "1": {"fetch_state": "active", "committed_offset": 0, "ls_offset": 2},
            }
        )
    )

    reporter.on_statistics(
        _stats(
            {
                "0": {"fetch_state": "active", "committed_offset": 3, "ls_offset": 4},
                "1": {"fetch_state": "none", "committed_offset": 0, "ls_offset": 2},
            }
        )
    )

    assert _lag("unit-lag-c", "0") == 1
    assert _lag("unit-lag-c", "1") is None


def test_the_statistics_interval_comes_from_settings() -> None:
    settings = Settings(kafka_statistics_interval_ms=250)
    reporter = LagReporter("unit-lag-d")

    config = reporter.config(settings)

    assert config["statistics.interval.ms"] == 250
    assert config["stats_cb"] == reporter.on_statistics
