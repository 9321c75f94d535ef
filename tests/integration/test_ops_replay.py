"""``prequal-ops outbox replay``: originals re-emitted through the outbox, audited, bounded."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ops.replay import ReplayCriteria, UnboundedReplay, plan_replay, replay
from outbox.append import OutboxMessage
from runtime.settings import Settings
from schema.events import ApplicationStatus
from tests.support.events import decided_event, submitted_event
from tests.support.kafka import Received, consume
from tests.support.outbox import insert_many, insert_outbox, relay_thread
from tests.support.processes import run_ops, wait_until

_COPIED = (
    "event_id, aggregatetype, aggregateid, type, topic, payload, correlation_id,"
    " causation_id, traceparent"
)


def _seqs(db: psycopg.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT seq FROM outbox ORDER BY seq").fetchall()]


def _replays(db: psycopg.Connection) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute(
            "SELECT r.id, r.replay_of, r.event_id, r.published_at, r.seq, o.seq AS original_seq"
            "  FROM outbox r JOIN outbox o ON o.id = r.replay_of ORDER BY r.seq"
        ).fetchall()


def _replay(db: psycopg.Connection, criteria: ReplayCriteria, **options: Any) -> int:
    return replay(db, plan_replay(db, criteria), "tester", **options).rows_emitted


def _count(db: psycopg.Connection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _pending(db: psycopg.Connection) -> int:
    return _count(db, "outbox WHERE published_at IS NULL")


def test_a_seq_range_replays_those_originals_as_new_unpublished_rows_with_the_same_event_ids(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 5)
    db.execute("UPDATE outbox SET published_at = now()")
    seqs = _seqs(db)

    emitted = _replay(db, ReplayCriteria(from_seq=seqs[1], to_seq=seqs[3]))

    assert emitted == 3
    replays = _replays(db)
    assert [r["original_seq"] for r in replays] == seqs[1:4]
    assert all(r["published_at"] is None for r in replays)
    assert all(r["seq"] > seqs[-1] for r in replays)
    copies = db.execute(
        f"SELECT {_COPIED} FROM outbox WHERE replay_of IS NOT NULL"
        f" EXCEPT SELECT {_COPIED} FROM outbox WHERE replay_of IS NULL"
    ).fetchall()
    assert copies == [], "every copied column equals the original's"


def test_a_time_range_replays_the_events_that_occurred_in_it(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 4)
    two_hours_ago = db.execute(
        "UPDATE outbox SET occurred_at = now() - interval '2 hours'"
        " WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT 2) RETURNING event_id"
    ).fetchall()
    now = datetime.now(UTC)

    emitted = _replay(
        db, ReplayCriteria(since=now - timedelta(hours=3), until=now - timedelta(hours=1))
    )

    assert emitted == 2
    assert {r["event_id"] for r in _replays(db)} == {row[0] for row in two_hours_ago}


def test_an_aggregate_id_replays_only_that_applications_events(
    settings: Settings, db: psycopg.Connection
) -> None:
    submitted = submitted_event()
    with db.transaction():
        insert_outbox(db, OutboxMessage(submitted, settings.topic_submitted))
        decided = decided_event(submitted, ApplicationStatus.PRE_APPROVED, 790)
        insert_outbox(db, OutboxMessage(decided, settings.topic_decisions))
    insert_many(settings, 3)

    emitted = _replay(db, ReplayCriteria(aggregate_id=str(submitted.aggregate_id)))

    assert emitted == 2
    assert [r["event_id"] for r in _replays(db)] == [submitted.event_id, decided.event_id]


def test_a_type_replays_only_events_of_that_type(
    settings: Settings, db: psycopg.Connection
) -> None:
    submitted = submitted_event()
    decided = decided_event(submitted, ApplicationStatus.REJECTED, 610)
    with db.transaction():
        insert_outbox(db, OutboxMessage(submitted, settings.topic_submitted))
        insert_outbox(db, OutboxMessage(decided, settings.topic_decisions))
    insert_many(settings, 2)

    emitted = _replay(db, ReplayCriteria(event_type="LoanApplicationDecided"))

    assert emitted == 1
    [copy] = _replays(db)
    assert copy["event_id"] == decided.event_id


def test_replays_are_never_replayed_again_only_originals_are(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 3)
    everything = ReplayCriteria(from_seq=1)

    first = _replay(db, everything)
    second = _replay(db, everything)
    only_replay_rows = _replay(db, ReplayCriteria(from_seq=_seqs(db)[3]))

    assert (first, second, only_replay_rows) == (3, 3, 0)
    originals_per_replay = Counter(r["original_seq"] for r in _replays(db))
    assert sorted(originals_per_replay.values()) == [2, 2, 2]


def test_one_audit_row_records_who_the_criteria_and_every_row_emitted_across_batches(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 5)
    criteria = ReplayCriteria(from_seq=1, event_type="LoanApplicationSubmitted")

    result = replay(db, plan_replay(db, criteria), "asha", batch_size=2)

    assert (result.rows_emitted, result.batches) == (5, 3)
    [audit] = db.execute(
        "SELECT id, requested_by, criteria, rows_emitted, requested_at FROM outbox_replays"
    ).fetchall()
    assert audit[0] == result.replay_id
    assert audit[1:4] == ("asha", {"from_seq": 1, "type": "LoanApplicationSubmitted"}, 5)
    assert audit[4] is not None


def test_a_rate_sizes_the_batches_and_sleeps_between_them(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 5)
    slept: list[float] = []

    result = replay(
        db, plan_replay(db, ReplayCriteria(from_seq=1)), "t", rate=2, sleep=slept.append
    )

    assert (result.rows_emitted, result.batches) == (5, 3)
    assert len(slept) == 2
    assert all(0.5 < pause <= 1.0 for pause in slept), slept
    [criteria] = db.execute("SELECT criteria FROM outbox_replays").fetchone() or [None]
    assert criteria == {"from_seq": 1, "rate": 2}


def test_rows_inserted_after_the_plan_are_not_replayed(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 2)
    plan = plan_replay(db, ReplayCriteria(from_seq=1))
    insert_many(settings, 2)

    result = replay(db, plan, "t")

    assert plan.count == result.rows_emitted == 2


def test_criteria_that_select_nothing_or_everything_are_refused() -> None:
    with pytest.raises(UnboundedReplay):
        ReplayCriteria().validate()
    with pytest.raises(ValueError, match="UTC offset"):
        ReplayCriteria(since=datetime(2024, 1, 1)).validate()
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="earlier"):
        ReplayCriteria(since=now, until=now - timedelta(seconds=1)).validate()
    with pytest.raises(ValueError, match="from_seq"):
        ReplayCriteria(from_seq=5, to_seq=4).validate()


def test_the_dry_run_prints_the_count_and_first_rows_and_writes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    event_ids = insert_many(settings, 3)

    result = run_ops(settings, "outbox", "replay", "--from-seq", "1", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["dry_run"] is True
    assert body["count"] == 3
    assert [row["event_id"] for row in body["first"]] == event_ids
    assert set(body["first"][0]) >= {"seq", "event_id", "type", "aggregateid", "topic"}
    assert _count(db, "outbox") == 3
    assert _count(db, "outbox_replays") == 0


def test_without_yes_the_command_asks_and_a_no_changes_nothing(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 2)

    declined = run_ops(settings, "outbox", "replay", "--from-seq", "1", answer="n\n")

    assert declined.returncode == 3
    assert "Replay 2 events? [y/N]" in declined.stderr
    assert _count(db, "outbox") == 2
    assert _count(db, "outbox_replays") == 0


def test_an_unbounded_replay_or_a_bad_timestamp_is_exit_code_2(
    settings: Settings, db: psycopg.Connection
) -> None:
    insert_many(settings, 1)

    unbounded = run_ops(settings, "outbox", "replay", "--yes")
    naive = run_ops(settings, "outbox", "replay", "--since", "2024-05-01T10:00:00", "--yes")

    assert unbounded.returncode == 2
    assert "unbounded" in unbounded.stderr
    assert naive.returncode == 2
    assert "UTC offset" in naive.stderr
    assert _count(db, "outbox") == 1


def _seen_twice(expected: set[str]) -> Any:
    def done(messages: list[Received]) -> bool:
        counts = Counter(m.headers["event_id"] for m in messages)
        return all(counts[event_id] >= 2 for event_id in expected)

    return done


def test_with_a_polling_relay_running_replayed_events_reach_the_topic_with_their_original_ids(
    settings: Settings, db: psycopg.Connection
) -> None:
    event_ids = set(insert_many(settings, 3))
    with relay_thread(settings):
        wait_until(lambda: _pending(db) == 0, 15)

        result = run_ops(
            settings, "outbox", "replay", "--from-seq", "1", "--requested-by", "ops", "--yes"
        )
        assert result.returncode == 0, result.stderr
        assert "Replayed 3 events" in result.stdout

        messages = consume(settings, settings.topic_submitted, until=_seen_twice(event_ids))

    assert Counter(m.headers["event_id"] for m in messages) == dict.fromkeys(event_ids, 2)
    replay_rows = {str(r["id"]): str(r["event_id"]) for r in _replays(db)}
    replayed = [m for m in messages if m.headers["outbox_row_id"] in replay_rows]
    assert {m.headers["event_id"] for m in replayed} == event_ids
    assert all(replay_rows[m.headers["outbox_row_id"]] == m.headers["event_id"] for m in replayed)
    assert all(json.loads(m.value)["event_id"] == m.headers["event_id"] for m in replayed)
    assert db.execute("SELECT requested_by, rows_emitted FROM outbox_replays").fetchall() == [
        ("ops", 3)
    ]
    assert _pending(db) == 0
