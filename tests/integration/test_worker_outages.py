"""Workers under a broker outage: stopped mid-stream, nothing lost, nothing doubled."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from credit_worker.worker import CreditWorker
from runtime.settings import Settings
from schema.events import EventType, SubmittedEvent, derived_event_id
from tests.support.events import submitted_event
from tests.support.infra import local
from tests.support.kafka import (
    Received,
    consume,
    count_at_least,
    has_events,
    produce_events,
)
from tests.support.outbox import running


@pytest.mark.timeout(300)
def test_the_credit_worker_survives_a_broker_outage_mid_stream_with_each_report_once(
    settings: Settings,
) -> None:
    # One message per transaction, and enough of them (a transaction takes a few ms) that
    # the outage lands mid-stream even on an idle machine.
    small = settings.model_copy(update={"consumer_batch_size": 1})
    events = [submitted_event() for _ in range(5_000)]
    produce_events(small, small.topic_submitted, events)
    expected = {
        str(derived_event_id(EventType.CREDIT_REPORT_GENERATED, e.event_id)) for e in events
    }

    failed_before = _failed_transactions()
    with running(CreditWorker(small).run):
        consume(small, small.topic_credit_reports, until=count_at_least(20), timeout_s=60)
        local("down", "kafka")
        try:
            # Longer than the transaction timeout (10 s): librdkafka retries a call while
            # the broker is away, so a short outage can be absorbed without a failure (it
            # was, in CI). This one outlasts the call in flight: the worker aborts and
            # backs off, or (a commit) retries the step — both count as retries.
            time.sleep(small.kafka_transaction_timeout_ms / 1000 + 2)
        finally:
            local("up", "kafka")
        reports = consume(
            small, small.topic_credit_reports, until=has_events(expected), timeout_s=120
        )

    counts = Counter(r.headers["event_id"] for r in reports)
    missing = expected - set(counts)
    assert not missing, _explain_missing(small, missing, events)
    doubled = [event_id for event_id, n in counts.items() if n > 1]
    assert not doubled, _explain(small, doubled, reports)
    assert _failed_transactions() > failed_before, "the outage must hit a transaction in flight"


def _failed_transactions() -> float:
    value = REGISTRY.get_sample_value(
        "prequal_consumer_retries_total", {"consumer": "credit-worker"}
    )
    return value or 0.0


def _input_positions(settings: Settings) -> dict[str, tuple[int, int]]:
    inputs = consume(settings, settings.topic_submitted, until=count_at_least(5_000), timeout_s=60)
    return {r.headers["event_id"]: (r.partition, r.offset) for r in inputs}


def _explain_missing(settings: Settings, missing: set[str], events: list[SubmittedEvent]) -> str:
    """Which input (partition, offset) each missing report should have come from."""
    source = _input_positions(settings)
    origin = {
        str(derived_event_id(EventType.CREDIT_REPORT_GENERATED, e.event_id)): source.get(
            str(e.event_id)
        )
        for e in events
    }
    return (
        f"{len(missing)} reports never came, from inputs {sorted(str(origin[m]) for m in missing)}"
    )


def _explain(settings: Settings, doubled: list[str], reports: list[Received]) -> str:
    """Where each doubled report and its source event sit, to tell a worker fault apart."""
    source = _input_positions(settings)
    lines = []
    for event_id in doubled:
        copies = [r for r in reports if r.headers["event_id"] == event_id]
        origin = source.get(copies[0].headers.get("causation_id", ""))
        lines.append(
            f"report {event_id} from input {origin}: "
            f"copies at {[(r.partition, r.offset) for r in copies]}"
        )
    return "reports committed twice:\n" + "\n".join(lines)
