"""The Debezium relay against real Kafka Connect: same delivery, same wire, safe hand-over."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY

from outbox.cdc import CdcRelay
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from tests.support.infra import connect_running, local
from tests.support.kafka import Received, consume, count_at_least, event_ids, has_events
from tests.support.outbox import (
    LoopThread,
    insert_many,
    insert_outbox,
    relay_thread,
    submitted_message,
)
from tests.support.processes import wait_until


@pytest.fixture(scope="module")
def cdc(base_settings: Settings) -> Iterator[None]:
    """Kafka Connect with the outbox connector on the test database, for this module."""
    with connect_running(base_settings):
        yield


@pytest.fixture
def cdc_settings(cdc: None, settings: Settings) -> Settings:
    """Per-test settings whose topics exist before any row is routed to them."""
    ensure_topics(settings)
    return settings


def _unpublished(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    return int(row[0]) if row else -1


def test_every_committed_row_is_delivered_with_its_key_and_headers(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    ids = insert_many(cdc_settings, 50)

    messages = consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(set(ids)))

    assert set(event_ids(messages)) == set(ids)
    keys: dict[str, str] = dict(
        db.execute("SELECT event_id::text, aggregateid FROM outbox").fetchall()
    )
    assert all(m.key == keys[m.headers["event_id"]] for m in messages)


def test_rows_committed_out_of_seq_order_are_all_delivered(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    with psycopg.connect(cdc_settings.psycopg_conninfo) as conn_a:
        with conn_a.transaction():
            event_a = insert_outbox(conn_a, submitted_message(cdc_settings))
            [event_b] = insert_many(cdc_settings, 1)
            consume(cdc_settings, cdc_settings.topic_submitted, until=has_events({event_b}))
        messages = consume(
            cdc_settings, cdc_settings.topic_submitted, until=has_events({event_a, event_b})
        )

    assert {event_a, event_b} <= set(event_ids(messages))
    seqs: dict[str, int] = dict(db.execute("SELECT event_id::text, seq FROM outbox").fetchall())
    assert seqs[event_a] < seqs[event_b]


def test_a_rolled_back_transaction_produces_nothing(cdc_settings: Settings) -> None:
    with (
        psycopg.connect(cdc_settings.psycopg_conninfo) as conn,
        conn.transaction(force_rollback=True),
    ):
        rolled_back = insert_outbox(conn, submitted_message(cdc_settings))
    [committed] = insert_many(cdc_settings, 1)

    messages = consume(
        cdc_settings, cdc_settings.topic_submitted, until=count_at_least(2), timeout_s=5
    )

    assert event_ids(messages) == [committed]
    assert rolled_back not in event_ids(messages)


def test_connect_stopped_and_restarted_mid_stream_loses_nothing(
    cdc_settings: Settings,
) -> None:
    before = insert_many(cdc_settings, 100)
    consume(cdc_settings, cdc_settings.topic_submitted, until=count_at_least(1))
    local("down", "connect", settings=cdc_settings)
    during = insert_many(cdc_settings, 100)  # written while nothing streams
    local("up", "connect", settings=cdc_settings)
    after = insert_many(cdc_settings, 100)

    expected = set(before + during + after)
    messages = consume(
        cdc_settings, cdc_settings.topic_submitted, until=has_events(expected), timeout_s=60
    )

    assert set(event_ids(messages)) == expected  # duplicates allowed, nothing missing


def _by_event(messages: list[Received]) -> dict[str, Received]:
    return {m.headers["event_id"]: m for m in messages}


def test_either_relay_sends_the_same_key_partition_headers_and_envelope(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    [event_id] = insert_many(cdc_settings, 1)
    [via_cdc] = consume(cdc_settings, cdc_settings.topic_submitted, until=count_at_least(1))
    # Nothing confirmed the row, so the polling relay publishes it too.
    with relay_thread(cdc_settings):
        wait_until(lambda: _unpublished(db) == 0, 15)
    messages = consume(cdc_settings, cdc_settings.topic_submitted, until=count_at_least(2))

    [via_polling] = [m for m in messages if m is not messages[0]]
    assert via_cdc.headers["event_id"] == via_polling.headers["event_id"] == event_id
    assert via_cdc.key == via_polling.key
    assert via_cdc.partition == via_polling.partition
    assert json.loads(via_cdc.value) == json.loads(via_polling.value)
    present = {k: v for k, v in via_cdc.headers.items() if v}
    assert present == {k: v for k, v in via_polling.headers.items() if v}


def test_a_replayed_row_is_delivered_with_its_original_event_id(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    [event_id] = insert_many(cdc_settings, 1)
    db.execute(
        "INSERT INTO outbox (event_id, aggregatetype, aggregateid, type, topic, payload,"
        " correlation_id, causation_id, replay_of)"
        " SELECT event_id, aggregatetype, aggregateid, type, topic, payload, correlation_id,"
        "        causation_id, id FROM outbox WHERE event_id = %s",
        (event_id,),
    )

    messages = consume(cdc_settings, cdc_settings.topic_submitted, until=count_at_least(2))

    assert event_ids(messages) == [event_id, event_id]
    row_ids = {m.headers["outbox_row_id"] for m in messages}
    assert len(row_ids) == 2  # two rows, one event


def test_the_confirmer_marks_cdc_delivered_rows_published(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    observed = "prequal_relay_publish_latency_seconds_count"
    before = REGISTRY.get_sample_value(observed) or 0.0
    loop = LoopThread(CdcRelay(cdc_settings).run)
    try:
        # Steady state: rows committed during the hand-over may be sent by both (by design).
        handed_over = "SELECT count(*) FROM relay_handover WHERE completed_at IS NOT NULL"
        wait_until(lambda: db.execute(handed_over).fetchone() == (1,), 30)
        ids = insert_many(cdc_settings, 30)
        wait_until(lambda: _unpublished(db) == 0, 30)
    finally:
        loop.stop()
    assert (REGISTRY.get_sample_value(observed) or 0.0) - before == 30
    messages = consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(set(ids)))
    # The confirmer only marks, it never re-publishes.
    assert max(Counter(event_ids(messages)).values()) == 1


def test_switching_from_polling_to_debezium_publishes_what_polling_left_behind(
    base_settings: Settings, settings: Settings, db: psycopg.Connection
) -> None:
    ensure_topics(settings)
    local("down", "connect", settings=settings)
    local("drop-slot", settings=settings)  # as if CDC had never run
    left_behind = insert_many(settings, 20)  # committed before the slot exists

    local("up", "connect", settings=settings)  # Debezium takes over from here
    loop = LoopThread(CdcRelay(settings).run)
    try:
        streamed = insert_many(settings, 20)
        wait_until(lambda: _unpublished(db) == 0, 60)
    finally:
        loop.stop()

    expected = set(left_behind + streamed)
    messages = consume(settings, settings.topic_submitted, until=has_events(expected))
    assert set(event_ids(messages)) == expected
    handover = db.execute("SELECT completed_at IS NOT NULL FROM relay_handover").fetchone()
    assert handover == (True,)


def test_switching_from_debezium_to_polling_loses_nothing(
    cdc_settings: Settings, db: psycopg.Connection
) -> None:
    streamed = insert_many(cdc_settings, 20)
    consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(set(streamed)))
    # The documented switch: stop Connect, drop the slot, start the polling relay.
    local("down", "connect", settings=cdc_settings)
    local("drop-slot", settings=cdc_settings)
    try:
        after = insert_many(cdc_settings, 20)  # nobody streams these
        with relay_thread(cdc_settings):
            wait_until(lambda: _unpublished(db) == 0, 30)
        expected = set(streamed + after)
        messages = consume(cdc_settings, cdc_settings.topic_submitted, until=has_events(expected))
    finally:
        local("up", "connect", settings=cdc_settings)

    counts = Counter(event_ids(messages))
    assert set(counts) == expected
    # Rows Debezium delivered but nobody confirmed are sent again: the hand-over window.
    # Rows written after the switch are sent once.
    assert all(counts[e] == 1 for e in after)
