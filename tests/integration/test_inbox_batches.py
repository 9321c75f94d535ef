"""The consume loop applies a batch as a set, on the real database and dead-letter topic.

One inbox INSERT for the batch, one set-based effect for the new events; a message that
can never succeed is found by bisecting the batch and dead-lettered, and the rest of the
batch is applied without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import Message

from decision_worker.main import build_consumer as decision_worker
from messaging.consumer import InboxConsumer, TransientFailure
from query_api.projector_main import build_consumer as projector
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.events import ApplicationStatus, Envelope
from tests.support.events import (
    credit_report_event,
    decided_event,
    insert_application,
    submitted_event,
)
from tests.support.kafka import consume, count_at_least


def _batch(topic: str, events: Sequence[Envelope[Any]]) -> list[Message]:
    return [
        Message(
            topic=topic,
            partition=0,
            offset=offset,
            key=str(event.aggregate_id).encode(),
            value=event.model_dump_json().encode(),
            headers=[("event_id", str(event.event_id).encode())],
        )
        for offset, event in enumerate(events)
    ]


def _handle(loop: InboxConsumer, batch: list[Message]) -> dict[str, int]:
    """``loop.handle_batch``, retried on a transient failure as the running loop does.

    A broker that has just started may not yet take the dead letters (its coordinator
    still loading): the loop rolls the batch back and retries it.
    """
    for _ in range(5):
        try:
            return dict(loop.handle_batch(batch))
        except TransientFailure:
            continue
    return dict(loop.handle_batch(batch))


def _count(db: psycopg.Connection, sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_with_a_duplicate_and_a_poison_applies_the_rest_once_and_parks_the_poison(
    settings: Settings, db: psycopg.Connection
) -> None:
    ensure_topics(settings, [settings.topic_credit_reports, settings.topic_dlq])
    apps = [insert_application(db) for _ in range(5)]
    reports = [credit_report_event(app, 790) for app in apps]
    missing = uuid.uuid4()
    events = [*reports[:3], credit_report_event(missing, 700), *reports[3:], reports[0]]

    outcomes = _handle(decision_worker(settings), _batch(settings.topic_credit_reports, events))

    assert outcomes == {"applied": 5, "duplicate": 1, "dead_lettered": 1}
    assert _count(db, "SELECT count(*) FROM applications WHERE status = 'PRE_APPROVED'") == 5
    assert _count(db, "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided'") == 5
    # The poison's inbox row went with its rolled-back attempt: a redrive applies it.
    assert _count(db, "SELECT count(*) FROM inbox") == 5
    [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))
    assert dead.headers["dlq_reason"] == f"application {missing} does not exist"
    assert dead.headers["dlq_source_offset"] == "3"


def test_a_batch_delivered_again_is_all_duplicates_and_changes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    apps = [insert_application(db) for _ in range(3)]
    batch = _batch(settings.topic_credit_reports, [credit_report_event(a, 610) for a in apps])
    worker = decision_worker(settings)

    assert _handle(worker, batch) == {"applied": 3}
    assert _handle(worker, batch) == {"duplicate": 3}
    assert _count(db, "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided'") == 3


def test_two_reports_for_one_application_in_one_batch_decide_it_once_by_the_first(
    settings: Settings, db: psycopg.Connection
) -> None:
    app = insert_application(db)
    batch = _batch(
        settings.topic_credit_reports,
        [credit_report_event(app, 790), credit_report_event(app, 610)],
    )

    assert _handle(decision_worker(settings), batch) == {"applied": 2}
    assert db.execute("SELECT status, cibil_score FROM applications").fetchall() == [
        ("PRE_APPROVED", 790)
    ]
    assert _count(db, "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided'") == 1


def test_a_database_refusal_in_a_set_is_traced_to_its_message_and_only_that_one_is_parked(
    settings: Settings, db: psycopg.Connection
) -> None:
    ensure_topics(settings, [settings.topic_submitted, settings.topic_dlq])
    events = [submitted_event() for _ in range(8)]
    poison = events[5].event_id
    applied: list[uuid.UUID] = []

    def handler(conn: psycopg.Connection, batch: Sequence[Envelope[Any]]) -> None:
        for event in batch:
            if event.event_id == poison:
                conn.execute("SELECT 1 / 0")  # the database refuses this one's effect
        applied.extend(event.event_id for event in batch)

    loop = InboxConsumer(
        settings, "test-consumer", "test-group", [settings.topic_submitted], handler
    )

    outcomes = _handle(loop, _batch(settings.topic_submitted, events))

    assert outcomes == {"applied": 7, "dead_lettered": 1}
    # The committed attempt applied exactly the seven others; probes were rolled back.
    assert applied[-7:] == [e.event_id for e in events if e.event_id != poison]
    assert _count(db, "SELECT count(*) FROM inbox") == 7
    [dead] = consume(settings, settings.topic_dlq, until=count_at_least(1))
    assert dead.headers["dlq_reason"] == "database refused the effect: division by zero"
    assert dead.headers["event_id"] == str(poison)


def test_the_projector_keeps_the_newest_state_whatever_the_order_within_a_batch(
    settings: Settings, db: psycopg.Connection
) -> None:
    first, second = submitted_event(), submitted_event()
    batch = _batch(
        settings.topic_submitted,
        [
            first,
            decided_event(first, ApplicationStatus.REJECTED, 610),
            decided_event(second, ApplicationStatus.PRE_APPROVED, 790),
            second,  # late: must not move the decided application back to PENDING
        ],
    )

    assert _handle(projector(settings), batch) == {"applied": 4}
    assert sorted(
        db.execute("SELECT status, cibil_score, version FROM application_status").fetchall()
    ) == [("PRE_APPROVED", 790, 2), ("REJECTED", 610, 2)]
