"""``prequal-ops dlq``: read dead letters, and redrive them so that each is applied once."""

from __future__ import annotations

import json
import uuid

import psycopg
from confluent_kafka import Consumer, TopicPartition

from decision_worker.handler import CONSUMER_NAME
from decision_worker.main import build_consumer
from ops.dlq import DeadLetter, read_dead_letters
from runtime.kafka import ensure_topics, watermarks
from runtime.settings import Settings
from schema.events import CreditReportEvent
from tests.support.events import credit_report_event
from tests.support.kafka import consume, count_at_least, produce, produce_events
from tests.support.outbox import running
from tests.support.processes import run_ops, wait_until


def _dead_letter_a_report_for_a_missing_application(settings: Settings) -> CreditReportEvent:
    """Produce a report for an application that does not exist; wait until it is dead."""
    report = credit_report_event(uuid.uuid4(), 790)
    produce_events(settings, settings.topic_credit_reports, [report])
    consume(settings, settings.topic_dlq, until=count_at_least(1))
    return report


def _insert_application_with_id(db: psycopg.Connection, application_id: uuid.UUID) -> None:
    db.execute(
        "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
        " loan_amount_inr, loan_type, status, created_at, updated_at)"
        " VALUES (%s, 'KLMNO1234P', 'Test Applicant', 75000, 500000, 'PERSONAL', 'PENDING',"
        " now(), now())",
        (application_id,),
    )


def _one(db: psycopg.Connection, query: str, *params: object) -> object:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _decided_rows(db: psycopg.Connection) -> object:
    return _one(db, "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided'")


def _high_watermarks(settings: Settings, topic: str) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "watermarks"}
    )
    try:
        return [
            watermarks(consumer, TopicPartition(topic, p), 10)[1]
            for p in range(settings.topic_partitions)
        ]
    finally:
        consumer.close()


def _committed(settings: Settings, topic: str, partition: int) -> int:
    """The decision worker group's committed offset (asked without joining the group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": settings.group_decision_worker,
        }
    )
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return position.offset
    finally:
        consumer.close()


def test_list_show_and_a_dry_run_redrive_present_the_dead_letter_and_send_nothing(
    settings: Settings,
) -> None:
    with running(build_consumer(settings).run):
        report = _dead_letter_a_report_for_a_missing_application(settings)
    reason = f"application {report.data.application_id} does not exist"
    before = _high_watermarks(settings, settings.topic_credit_reports)

    listed = run_ops(settings, "dlq", "list", "--json")
    shown = run_ops(settings, "dlq", "show", "0", "--partition", _partition(listed.stdout))
    dry = run_ops(settings, "dlq", "redrive", "--all", "--dry-run", "--json")

    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["total"] == 1
    [letter] = body["dead_letters"]
    assert letter["reason"] == reason
    assert letter["consumer"] == CONSUMER_NAME
    assert letter["source_topic"] == settings.topic_credit_reports
    assert letter["event_id"] == str(report.event_id)
    assert letter["event_type"] == "CreditReportGenerated"
    assert letter["failed_at"]
    assert shown.returncode == 0, shown.stderr
    for text in ("dlq_source_topic", "dlq_source_offset", "dlq_failed_at", reason):
        assert text in shown.stdout
    assert str(report.event_id) in shown.stdout
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["count"] == 1
    assert _high_watermarks(settings, settings.topic_credit_reports) == before


def _partition(list_json: str) -> str:
    return str(json.loads(list_json)["dead_letters"][0]["partition"])


def test_a_redriven_report_is_decided_once_and_a_second_redrive_changes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    with running(build_consumer(settings).run):
        report = _dead_letter_a_report_for_a_missing_application(settings)
        [dead] = read_dead_letters(settings)
        _insert_application_with_id(db, report.data.application_id)

        first = run_ops(
            settings,
            "dlq",
            "redrive",
            "--offset",
            str(dead.offset),
            "--partition",
            str(dead.partition),
            "--yes",
            "--json",
        )
        assert first.returncode == 0, first.stderr
        wait_until(lambda: _decided_rows(db) == 1, 30)

        second = run_ops(settings, "dlq", "redrive", "--consumer", CONSUMER_NAME, "--yes", "--json")
        assert second.returncode == 0, second.stderr
        [again] = json.loads(second.stdout)["redriven"]
        topic, partition = again["topic"], again["partition"]
        wait_until(lambda: _committed(settings, topic, partition) > again["offset"], 30)

    status = "SELECT status, cibil_score FROM applications WHERE id = %s"
    assert db.execute(status, (report.data.application_id,)).fetchone() == ("PRE_APPROVED", 790)
    assert _decided_rows(db) == 1
    assert _one(db, "SELECT count(*) FROM inbox") == 1
    redriven = [
        m
        for m in consume(settings, settings.topic_credit_reports, until=count_at_least(3))
        if "dlq_redriven_from" in m.headers
    ]
    assert [m.headers["dlq_redriven_from"] for m in redriven] == [dead.position] * 2
    assert all(m.headers["event_id"] == str(report.event_id) for m in redriven)
    assert all(m.headers["correlation_id"] == report.correlation_id for m in redriven)
    assert all(not any(h.startswith("dlq_source") for h in m.headers) for m in redriven)
    assert all(m.partition == dead.source_partition for m in redriven)


def test_an_empty_or_missing_dead_letter_topic_has_no_dead_letters(settings: Settings) -> None:
    assert read_dead_letters(settings) == []
    ensure_topics(settings, [settings.topic_dlq])
    assert read_dead_letters(settings) == []

    result = run_ops(settings, "dlq", "list")

    assert result.returncode == 0, result.stderr
    assert "No dead letters" in result.stdout


def test_a_redrive_to_a_source_topic_that_no_longer_exists_says_so_and_sends_nothing(
    settings: Settings,
) -> None:
    gone = f"{settings.topic_credit_reports}_deleted"
    produce(
        settings,
        settings.topic_dlq,
        [
            (
                "k",
                b"{}",
                [
                    ("dlq_source_topic", gone.encode()),
                    ("dlq_source_partition", b"0"),
                    ("dlq_source_offset", b"5"),
                    ("dlq_consumer", b"decision-worker"),
                    ("dlq_reason", b"test"),
                ],
            )
        ],
    )

    result = run_ops(settings, "dlq", "redrive", "--all", "--yes")

    assert result.returncode == 1
    assert f"source topic {gone} does not exist" in result.stderr
    assert "prequal-ops topics create" in result.stderr
    assert "not reachable" not in result.stderr


def test_redrive_needs_exactly_one_selection_exit_code_2(settings: Settings) -> None:
    nothing = run_ops(settings, "dlq", "redrive", "--yes")
    two = run_ops(settings, "dlq", "redrive", "--all", "--offset", "0", "--yes")

    assert (nothing.returncode, two.returncode) == (2, 2)
    assert "choose exactly one" in nothing.stderr


def test_a_redrive_restores_the_original_headers_without_the_dead_letter_ones() -> None:
    letter = DeadLetter(
        partition=1,
        offset=7,
        timestamp_ms=None,
        key=b"k",
        value=b"v",
        headers=[
            ("event_id", b"e-1"),
            ("correlation_id", b"c-1"),
            ("traceparent", None),
            ("dlq_redriven_from", b"0:3"),
            ("dlq_source_topic", b"credit_reports_generated"),
            ("dlq_source_partition", b"2"),
            ("dlq_source_offset", b"41"),
            ("dlq_consumer", b"decision-worker"),
            ("dlq_reason", b"application x does not exist"),
            ("dlq_failed_at", b"2024-05-01T10:00:00+00:00"),
        ],
    )

    assert letter.original_headers() == [
        ("event_id", b"e-1"),
        ("correlation_id", b"c-1"),
        ("traceparent", None),
    ]
    assert (letter.source_topic, letter.source_partition) == ("credit_reports_generated", 2)
    assert letter.position == "1:7"
