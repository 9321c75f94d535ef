"""The credit worker on the real broker: consume, score, produce, exactly once within Kafka."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from credit_worker.single_node import SingleNodeRecovery
from credit_worker.worker import CreditWorker
from runtime.kafka import (
    UnreadablePositions,
    consumer_config,
    ensure_topics,
    producer_config,
    visible_positions,
)
from runtime.settings import Settings
from schema.events import EventType, derived_event_id
from tests.support.events import submitted_event
from tests.support.kafka import consume, count_at_least, has_events, produce, produce_events
from tests.support.outbox import running
from tests.support.processes import Process, free_port


def test_a_standard_application_gets_a_report_with_a_score_in_range(settings: Settings) -> None:
    event = submitted_event(pan="KLMNO1234P")
    produce_events(settings, settings.topic_submitted, [event])

    with running(CreditWorker(settings).run):
        [report] = consume(settings, settings.topic_credit_reports, until=count_at_least(1))

    body = json.loads(report.value)
    assert 300 <= body["data"]["cibil_score"] <= 900
    assert body["event_type"] == "CreditReportGenerated"
    assert report.key == str(event.aggregate_id)
    assert report.headers["event_id"] == str(
        derived_event_id(EventType.CREDIT_REPORT_GENERATED, event.event_id)
    )
    assert report.headers["causation_id"] == str(event.event_id)
    assert report.headers["correlation_id"] == event.correlation_id
    assert body["data"]["monthly_income_inr"] == "75000.00"


def test_pan_abcde1234f_scores_exactly_790_and_fghij5678k_exactly_610(settings: Settings) -> None:
    good = submitted_event(pan="ABCDE1234F")
    poor = submitted_event(pan="FGHIJ5678K")
    produce_events(settings, settings.topic_submitted, [good, poor])

    with running(CreditWorker(settings).run):
        reports = consume(settings, settings.topic_credit_reports, until=count_at_least(2))

    scores = {
        json.loads(r.value)["aggregate_id"]: json.loads(r.value)["data"]["cibil_score"]
        for r in reports
    }
    assert scores == {str(good.aggregate_id): 790, str(poor.aggregate_id): 610}


def test_the_same_event_delivered_twice_yields_the_identical_report_id_and_score(
    settings: Settings,
) -> None:
    event = submitted_event()
    produce_events(settings, settings.topic_submitted, [event, event])

    with running(CreditWorker(settings).run):
        reports = consume(settings, settings.topic_credit_reports, until=count_at_least(2))

    bodies = [json.loads(r.value) for r in reports]
    assert bodies[0]["event_id"] == bodies[1]["event_id"]
    assert bodies[0]["data"]["cibil_score"] == bodies[1]["data"]["cibil_score"]


def test_a_poison_message_is_dead_lettered_in_the_same_transaction_and_the_rest_flows(
    settings: Settings,
) -> None:
    produce(settings, settings.topic_submitted, [("k", b'{"event_type": "Mystery"}', [])])
    valid = submitted_event()
    produce_events(settings, settings.topic_submitted, [valid])

    with running(CreditWorker(settings).run):
        [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))
        [report] = consume(settings, settings.topic_credit_reports, until=count_at_least(1))

    assert dead.value == b'{"event_type": "Mystery"}'
    assert dead.headers["dlq_consumer"] == "credit-worker"
    assert dead.headers["dlq_source_topic"] == settings.topic_submitted
    assert "not an event envelope" in dead.headers["dlq_reason"]
    assert report.key == str(valid.aggregate_id)


def test_every_application_of_a_batch_gets_its_own_committed_report(settings: Settings) -> None:
    events = [submitted_event() for _ in range(30)]
    produce_events(settings, settings.topic_submitted, events)

    with running(CreditWorker(settings).run):
        committed = consume(
            settings,
            settings.topic_credit_reports,
            until=count_at_least(30),
            isolation="read_committed",
        )

    assert sorted(r.key or "" for r in committed) == sorted(str(e.aggregate_id) for e in events)


def test_the_worker_killed_mid_batch_and_restarted_reports_each_application_exactly_once(
    settings: Settings, spawn: Callable[[str, Settings], Process]
) -> None:
    small = settings.model_copy(
        update={"consumer_batch_size": 25, "credit_worker_metrics_port": free_port()}
    )
    events = [submitted_event() for _ in range(2000)]
    produce_events(small, small.topic_submitted, events)
    expected = {
        str(derived_event_id(EventType.CREDIT_REPORT_GENERATED, e.event_id)) for e in events
    }

    first = spawn("credit-worker", small)
    consume(small, small.topic_credit_reports, until=count_at_least(200), timeout_s=60)
    first.kill()
    second = spawn("credit-worker", small)
    reports = consume(small, small.topic_credit_reports, until=has_events(expected), timeout_s=120)

    counts = Counter(r.headers["event_id"] for r in reports)
    assert set(counts) == expected
    # read_committed: the killed worker's open transaction was aborted when its
    # successor (same transactional.id) started, so no report is visible twice.
    assert max(counts.values()) == 1
    assert second.popen.poll() is None
    assert uuid.UUID(next(iter(counts)))


def test_a_group_offset_rewound_behind_the_workers_own_commits_reports_nothing_twice(
    settings: Settings,
) -> None:
    # What the group coordinator was seen to do after a broker restart: answer with
    # offsets from before the worker's last transactions, whose reports were visible.
    first = [submitted_event() for _ in range(12)]
    produce_events(settings, settings.topic_submitted, first)
    worker = CreditWorker(settings, SingleNodeRecovery(settings))
    with running(worker.run):
        consume(settings, settings.topic_credit_reports, until=count_at_least(12))
    _rewind_group(settings, settings.group_credit_worker, settings.topic_submitted)

    later = [submitted_event() for _ in range(5)]
    produce_events(settings, settings.topic_submitted, later)
    expected = {
        str(derived_event_id(EventType.CREDIT_REPORT_GENERATED, e.event_id))
        for e in [*first, *later]
    }
    with running(worker.run):  # the same process: it remembers what it committed
        consume(settings, settings.topic_credit_reports, until=has_events(expected))
        # Reading on for a while gives a batch replayed from the rewound offsets, had
        # they been used, time to show up as an 18th report.
        reports = consume(
            settings, settings.topic_credit_reports, until=count_at_least(18), timeout_s=5
        )

    counts = Counter(r.headers["event_id"] for r in reports)
    assert set(counts) == expected
    assert max(counts.values()) == 1


def _rewind_group(settings: Settings, group: str, topic: str) -> None:
    """Commit offset 0 on every partition of ``topic`` for ``group`` (which has no members)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.commit(
            offsets=[TopicPartition(topic, p, 0) for p in partitions], asynchronous=False
        )
    finally:
        consumer.close()


def test_aborting_what_the_worker_left_open_adds_nothing_a_reader_sees(
    settings: Settings,
) -> None:
    event = submitted_event()
    produce_events(settings, settings.topic_submitted, [event])
    recovery = SingleNodeRecovery(settings)
    worker = CreditWorker(settings, recovery)
    with running(worker.run):
        [report] = consume(settings, settings.topic_credit_reports, until=count_at_least(1))

    group = Consumer(consumer_config(settings, settings.group_credit_worker))
    producer = worker.new_producer()
    producer.init_transactions(10)
    before = _group_offsets(settings, group)
    try:
        recovery.close_left_open(
            group, producer, {(settings.topic_credit_reports, report.partition)}
        )
        assert _group_offsets(settings, group) == before
    finally:
        group.close()

    everything = consume(
        settings,
        settings.topic_credit_reports,
        until=count_at_least(2),
        isolation="read_uncommitted",
    )
    assert [r.headers.get("prequal_fence") is not None for r in everything] == [False, True]
    committed = consume(
        settings, settings.topic_credit_reports, until=count_at_least(2), timeout_s=3
    )
    assert [r.headers["event_id"] for r in committed] == [report.headers["event_id"]]
    position = (settings.topic_credit_reports, report.partition, report.offset)
    assert visible_positions(settings, [position], timeout_s=10) == {position}


def test_a_transaction_another_producer_left_open_is_not_guessed_past(
    settings: Settings,
) -> None:
    ensure_topics(settings, [settings.topic_submitted, settings.topic_credit_reports])
    other = Producer(producer_config(settings, **{"transactional.id": f"t-{uuid.uuid4()}"}))
    other.init_transactions(10)
    other.begin_transaction()
    other.produce(settings.topic_credit_reports, value=b"open", partition=0)
    other.flush(10)
    quick = settings.model_copy(update={"kafka_transaction_timeout_ms": 2_000})
    recovery = SingleNodeRecovery(quick)
    # This process remembers reporting input 0 to the record the other one holds open,
    # and the group (new) has no offset: the output topic must decide, and cannot.
    recovery.committed(
        [(quick.topic_submitted, 0, 0)],
        [TopicPartition(quick.topic_submitted, 0, 1)],
        {(quick.topic_submitted, 0, 0): (quick.topic_credit_reports, 0, 0)},
    )
    group = Consumer(consumer_config(quick, f"g-{uuid.uuid4()}"))
    producer = CreditWorker(quick).new_producer()
    producer.init_transactions(10)
    try:
        with pytest.raises(UnreadablePositions):
            recovery.resume_positions(group, producer, [TopicPartition(quick.topic_submitted, 0)])
    finally:
        other.abort_transaction(10)
        group.close()


def _group_offsets(settings: Settings, group: Consumer) -> list[tuple[int, int]]:
    partitions = [
        TopicPartition(settings.topic_submitted, p) for p in range(settings.topic_partitions)
    ]
    return [(p.partition, p.offset) for p in group.committed(partitions, timeout=10)]
