"""The projector: idempotent and monotonic, whatever order the events arrive in."""

from __future__ import annotations

import uuid

import psycopg

from query_api.projector import CONSUMER_NAME
from query_api.projector_main import build_consumer
from runtime.settings import Settings
from schema.events import ApplicationStatus
from tests.support.events import decided_event, submitted_event
from tests.support.kafka import consume, count_at_least, produce_events
from tests.support.outbox import running
from tests.support.processes import wait_until


def _row(db: psycopg.Connection, application_id: uuid.UUID) -> tuple[object, ...] | None:
    return db.execute(
        "SELECT status, cibil_score, version, decided_at IS NOT NULL"
        " FROM application_status WHERE application_id = %s",
        (application_id,),
    ).fetchone()


def test_a_submitted_then_decided_application_is_projected_as_decided(
    settings: Settings, db: psycopg.Connection
) -> None:
    submitted = submitted_event()
    produce_events(settings, settings.topic_submitted, [submitted])
    produce_events(
        settings,
        settings.topic_decisions,
        [decided_event(submitted, ApplicationStatus.PRE_APPROVED, 790)],
    )

    with running(build_consumer(settings).run):
        wait_until(
            lambda: _row(db, submitted.aggregate_id)
            == (ApplicationStatus.PRE_APPROVED, 790, 2, True),
            30,
        )


def test_a_late_submitted_event_never_moves_a_decided_application_back_to_pending(
    settings: Settings, db: psycopg.Connection
) -> None:
    submitted = submitted_event()
    produce_events(
        settings,
        settings.topic_decisions,
        [decided_event(submitted, ApplicationStatus.REJECTED, 610)],
    )

    with running(build_consumer(settings).run):
        wait_until(
            lambda: _row(db, submitted.aggregate_id) == (ApplicationStatus.REJECTED, 610, 2, True),
            30,
        )
        produce_events(settings, settings.topic_submitted, [submitted])
        wait_until(lambda: _inbox(db) == 2, 30)

    assert _row(db, submitted.aggregate_id) == (ApplicationStatus.REJECTED, 610, 2, True)


def _inbox(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM inbox WHERE consumer = %s", (CONSUMER_NAME,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_second_decision_for_the_same_application_is_ignored(
    settings: Settings, db: psycopg.Connection
) -> None:
    submitted = submitted_event()
    produce_events(
        settings,
        settings.topic_decisions,
        [
            decided_event(submitted, ApplicationStatus.PRE_APPROVED, 790),
            decided_event(submitted, ApplicationStatus.REJECTED, 610),
        ],
    )

    with running(build_consumer(settings).run):
        wait_until(lambda: _inbox(db) == 2, 30)

    assert _row(db, submitted.aggregate_id) == (ApplicationStatus.PRE_APPROVED, 790, 2, True)


def test_an_event_the_projector_does_not_handle_is_dead_lettered(
    settings: Settings, db: psycopg.Connection
) -> None:
    from tests.support.events import credit_report_event

    report = credit_report_event(uuid.uuid4(), 700)
    produce_events(settings, settings.topic_submitted, [report])

    with running(build_consumer(settings).run):
        [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))

    assert dead.headers["dlq_reason"] == "projector does not handle CreditReportGenerated"
    assert _inbox(db) == 0
