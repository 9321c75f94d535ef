"""The decision worker on the real broker and database: once, in order, whatever happens."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import psycopg
from prometheus_client import REGISTRY

from decision_worker.handler import CONSUMER_NAME
from decision_worker.main import build_consumer
from runtime.settings import Settings
from tests.support.events import credit_report_event, insert_application
from tests.support.infra import local
from tests.support.kafka import consume, count_at_least, produce, produce_events
from tests.support.outbox import running
from tests.support.processes import Process, free_port, wait_until


def _status(db: psycopg.Connection, application_id: uuid.UUID) -> tuple[str, int | None]:
    row = db.execute(
        "SELECT status, cibil_score FROM applications WHERE id = %s", (application_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def _decided_rows(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided'").fetchone()
    assert row is not None
    return int(row[0])


def test_reports_790_610_and_750_with_low_income_are_decided_as_the_spec_says(
    settings: Settings, db: psycopg.Connection
) -> None:
    approved = insert_application(db, income="75000.00", amount="500000.00")
    rejected = insert_application(db)
    review = insert_application(db, income="10000.00", amount="500000.00")
    produce_events(
        settings,
        settings.topic_credit_reports,
        [
            credit_report_event(approved, 790, income="75000.00", amount="500000.00"),
            credit_report_event(rejected, 610),
            credit_report_event(review, 750, income="10000.00", amount="500000.00"),
        ],
    )

    with running(build_consumer(settings).run):
        wait_until(lambda: _decided_rows(db) == 3, 30)

    assert _status(db, approved) == ("PRE_APPROVED", 790)
    assert _status(db, rejected) == ("REJECTED", 610)
    assert _status(db, review) == ("MANUAL_REVIEW", 750)


def test_the_decided_event_names_its_cause_and_carries_the_correlation_id(
    settings: Settings, db: psycopg.Connection
) -> None:
    application_id = insert_application(db)
    report = credit_report_event(application_id, 790)
    produce_events(settings, settings.topic_credit_reports, [report])

    with running(build_consumer(settings).run):
        wait_until(lambda: _decided_rows(db) == 1, 30)

    payload, causation, correlation = db.execute(
        "SELECT payload, causation_id, correlation_id FROM outbox"
    ).fetchone() or (None, None, None)
    assert causation == str(report.event_id)
    assert correlation == report.correlation_id
    assert payload["data"]["status"] == "PRE_APPROVED"
    assert payload["data"]["cibil_score"] == 790
    assert payload["aggregate_id"] == str(application_id)


def test_the_same_report_delivered_twice_has_one_effect(
    settings: Settings, db: psycopg.Connection
) -> None:
    application_id = insert_application(db)
    report = credit_report_event(application_id, 790)
    produce_events(settings, settings.topic_credit_reports, [report, report])

    with running(build_consumer(settings).run):
        wait_until(lambda: _inbox(db) == 1 and _decided_rows(db) == 1, 30)
        marker = insert_application(db)
        produce_events(settings, settings.topic_credit_reports, [credit_report_event(marker, 790)])
        wait_until(lambda: _decided_rows(db) == 2, 30)

    assert _decided_rows(db) == 2
    assert _inbox(db) == 2


def _inbox(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM inbox").fetchone()
    assert row is not None
    return int(row[0])


def test_a_decided_application_never_changes_whatever_arrives_later(
    settings: Settings, db: psycopg.Connection
) -> None:
    application_id = insert_application(db)
    produce_events(
        settings, settings.topic_credit_reports, [credit_report_event(application_id, 790)]
    )
    with running(build_consumer(settings).run):
        wait_until(lambda: _decided_rows(db) == 1, 30)
        produce_events(
            settings, settings.topic_credit_reports, [credit_report_event(application_id, 610)]
        )
        wait_until(lambda: _inbox(db) == 2, 30)

    assert _status(db, application_id) == ("PRE_APPROVED", 790)
    assert _decided_rows(db) == 1


def test_a_poison_message_goes_to_the_dlq_with_its_reason_and_the_next_one_is_processed(
    settings: Settings, db: psycopg.Connection
) -> None:
    application_id = insert_application(db)
    produce(
        settings,
        settings.topic_credit_reports,
        [(str(application_id), b"{not json", [("event_id", b"poison-1")])],
    )
    produce_events(
        settings, settings.topic_credit_reports, [credit_report_event(application_id, 790)]
    )

    with running(build_consumer(settings).run):
        wait_until(lambda: _decided_rows(db) == 1, 30)
        [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))

    assert dead.value == b"{not json"
    assert dead.key == str(application_id)
    assert dead.headers["event_id"] == "poison-1"
    assert dead.headers["dlq_source_topic"] == settings.topic_credit_reports
    assert dead.headers["dlq_consumer"] == CONSUMER_NAME
    assert dead.headers["dlq_source_offset"] == "0"
    assert dead.headers["dlq_reason"].startswith("not an event envelope")


def test_a_report_for_a_missing_application_is_dead_lettered_naming_the_reason(
    settings: Settings, db: psycopg.Connection
) -> None:
    missing = uuid.uuid4()
    produce_events(settings, settings.topic_credit_reports, [credit_report_event(missing, 790)])

    with running(build_consumer(settings).run):
        [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))

    assert dead.headers["dlq_reason"] == f"application {missing} does not exist"
    assert json.loads(dead.value)["data"]["application_id"] == str(missing)
    assert _inbox(db) == 0


def test_with_the_database_stopped_the_report_is_retried_and_applied_once_after_it_returns(
    settings: Settings, db: psycopg.Connection
) -> None:
    application_id = insert_application(db)
    retries_before = _retries()
    with running(build_consumer(settings).run):
        local("down", "postgres")
        try:
            produce_events(
                settings, settings.topic_credit_reports, [credit_report_event(application_id, 790)]
            )
            time.sleep(3)  # several failed attempts against the stopped server
        finally:
            local("up", "postgres")
        with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as fresh:
            wait_until(lambda: _decided_rows(fresh) == 1, 60)
            assert _status(fresh, application_id) == ("PRE_APPROVED", 790)
            assert _inbox(fresh) == 1
    assert _retries() > retries_before


def _retries() -> float:
    value = REGISTRY.get_sample_value("prequal_consumer_retries_total", {"consumer": CONSUMER_NAME})
    return value or 0.0


def test_the_worker_killed_mid_batch_and_restarted_decides_each_application_once(
    settings: Settings, spawn: Callable[[str, Settings], Process]
) -> None:
    small = settings.model_copy(
        update={"consumer_batch_size": 20, "decision_worker_metrics_port": free_port()}
    )
    with psycopg.connect(small.psycopg_conninfo, autocommit=True) as db:
        ids = [insert_application(db) for _ in range(1500)]
        produce_events(
            small, small.topic_credit_reports, [credit_report_event(i, 790) for i in ids]
        )

        first = spawn("decision-worker", small)
        wait_until(lambda: _decided_rows(db) >= 100, 60, first.describe)
        first.kill()
        assert _decided_rows(db) < 1500, "the kill must land mid-stream"

        second = spawn("decision-worker", small)
        wait_until(lambda: _decided_rows(db) == 1500, 90, second.describe)

        duplicates = db.execute("SELECT count(*) - count(DISTINCT event_id) FROM outbox").fetchone()
        assert duplicates == (0,)
        pending = db.execute("SELECT count(*) FROM applications WHERE status = 'PENDING'")
        assert pending.fetchone() == (0,)
        assert _inbox(db) == 1500
