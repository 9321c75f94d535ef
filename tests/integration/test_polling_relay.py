"""The polling relay against the real broker: every committed row, once, none skipped."""

from __future__ import annotations

import json
from collections import Counter

import psycopg
from prometheus_client import REGISTRY

from runtime.settings import Settings
from tests.support.kafka import consume, count_at_least, event_ids
from tests.support.outbox import (
    RelayThread,
    insert_many,
    insert_outbox,
    relay_thread,
    submitted_message,
)
from tests.support.processes import wait_until


def _unpublished(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert row is not None
    return int(row[0])


def test_every_committed_row_reaches_the_topic_once_with_its_key_and_headers(
    settings: Settings, db: psycopg.Connection
) -> None:
    ids = insert_many(settings, 250)

    with relay_thread(settings):
        messages = consume(settings, settings.topic_submitted, until=count_at_least(250))
        wait_until(lambda: _unpublished(db) == 0, 10)

    assert Counter(event_ids(messages)) == Counter(ids)
    rows = {
        str(r[0]): r[1:]
        for r in db.execute("SELECT event_id, aggregateid, correlation_id, type FROM outbox")
    }
    for message in messages:
        aggregate_id, correlation_id, event_type = rows[message.headers["event_id"]]
        assert message.key == aggregate_id
        assert message.headers["correlation_id"] == correlation_id
        assert message.headers["event_type"] == event_type
        envelope = json.loads(message.value)
        assert envelope["event_id"] == message.headers["event_id"]
        assert envelope["aggregate_id"] == aggregate_id


def test_a_row_committed_late_with_a_lower_seq_is_still_delivered(
    settings: Settings, db: psycopg.Connection
) -> None:
    with relay_thread(settings), psycopg.connect(settings.psycopg_conninfo) as conn_a:
        with conn_a.transaction():
            event_a = insert_outbox(conn_a, submitted_message(settings))  # lower seq, open
            [event_b] = insert_many(settings, 1)  # higher seq, committed first
            first = consume(settings, settings.topic_submitted, until=count_at_least(1))
            assert event_ids(first) == [event_b]
        # Transaction A commits now, after B was published.
        messages = consume(settings, settings.topic_submitted, until=count_at_least(2))

    assert sorted(event_ids(messages)) == sorted([event_a, event_b])
    seqs: dict[str, int] = dict(db.execute("SELECT event_id::text, seq FROM outbox").fetchall())
    assert seqs[event_a] < seqs[event_b]


def test_a_rolled_back_row_never_appears(settings: Settings, db: psycopg.Connection) -> None:
    with (
        psycopg.connect(settings.psycopg_conninfo) as conn,
        conn.transaction(force_rollback=True),
    ):
        rolled_back = insert_outbox(conn, submitted_message(settings))
    [committed] = insert_many(settings, 1)

    with relay_thread(settings):
        wait_until(lambda: _unpublished(db) == 0, 10)
        messages = consume(settings, settings.topic_submitted, until=count_at_least(2), timeout_s=3)

    assert event_ids(messages) == [committed]
    assert rolled_back not in event_ids(messages)


def test_the_relay_wakes_on_commit_without_waiting_for_the_poll_interval(
    settings: Settings, db: psycopg.Connection
) -> None:
    slow_poll = settings.model_copy(update={"relay_poll_interval_s": 60.0})
    with relay_thread(slow_poll):
        wait_until(lambda: "prequal_outbox" in _listeners(db), 10)
        ids = insert_many(slow_poll, 3)
        # Far below the 60 s fallback poll: only the NOTIFY can have woken it.
        wait_until(lambda: _unpublished(db) == 0, 10)

    assert len(ids) == 3


def _listeners(db: psycopg.Connection) -> str:
    rows = db.execute("SELECT pg_listening_channels()").fetchall()
    rows += db.execute(
        "SELECT query FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay:%%'"
    ).fetchall()
    return " ".join(str(r[0]) for r in rows)


def test_only_one_relay_is_active_and_a_standby_takes_over_when_it_stops(
    settings: Settings, db: psycopg.Connection
) -> None:
    first = RelayThread(settings)
    wait_until(lambda: _lock_holders(db) == 1, 10)
    second = RelayThread(settings)
    try:
        insert_many(settings, 5)
        wait_until(lambda: _unpublished(db) == 0, 10)
        assert _lock_holders(db) == 1

        first.stop()
        ids = insert_many(settings, 5)

        wait_until(lambda: _unpublished(db) == 0, 10)
        messages = consume(settings, settings.topic_submitted, until=count_at_least(10))
        assert set(ids) <= set(event_ids(messages))
        assert _lock_holders(db) == 1
    finally:
        first.stop()
        second.stop()
    wait_until(lambda: _lock_holders(db) == 0, 10)


def _lock_holders(db: psycopg.Connection) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        (0x7072657175616C72,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _latency_count() -> float:
    return REGISTRY.get_sample_value("prequal_relay_publish_latency_seconds_count") or 0.0


def test_commit_to_ack_latency_is_observed_for_each_event_but_not_for_replayed_copies(
    settings: Settings, db: psycopg.Connection
) -> None:
    ids = insert_many(settings, 20)
    db.execute(
        "INSERT INTO outbox (event_id, aggregatetype, aggregateid, type, topic, payload,"
        " occurred_at, replay_of)"
        " SELECT event_id, aggregatetype, aggregateid, type, topic, payload,"
        "        occurred_at - interval '1 hour', id"
        "   FROM outbox WHERE event_id = %s",
        (ids[0],),
    )
    before = _latency_count()

    with relay_thread(settings):
        wait_until(lambda: _unpublished(db) == 0, 10)

    # 21 rows published, 20 observed: the copy is an hour "old" and must not count.
    assert _latency_count() - before == 20
