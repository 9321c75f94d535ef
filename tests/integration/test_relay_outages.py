"""The relay under real failures: the broker stopped, the relay process killed."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from command_api.app import create_app
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import api_client
from tests.support.infra import local
from tests.support.kafka import consume, event_ids, has_events
from tests.support.outbox import insert_many, relay_thread
from tests.support.processes import Process, wait_until


def _count(db: psycopg.Connection, where: str = "true") -> int:
    row = db.execute(f"SELECT count(*) FROM outbox WHERE {where}").fetchone()
    assert row is not None
    return int(row[0])


async def test_with_the_broker_stopped_posts_succeed_and_their_events_go_out_when_it_returns(
    settings: Settings, db: psycopg.Connection
) -> None:
    app = create_app(settings)
    with relay_thread(settings):
        insert_many(settings, 1)  # topics exist and the producer is connected first
        wait_until(lambda: _count(db, "published_at IS NULL") == 0, 15)

        local("down", "kafka")
        try:
            async with api_client(app, settings, "http://command") as client:
                statuses = [
                    (await client.post("/applications", json=valid_body())).status_code
                    for _ in range(20)
                ]
            assert statuses == [202] * 20
            assert _count(db, "published_at IS NULL") == 20
        finally:
            local("up", "kafka")

        wait_until(lambda: _count(db, "published_at IS NULL") == 0, 60)
    stored = {str(r[0]) for r in db.execute("SELECT event_id FROM outbox")}
    messages = consume(settings, settings.topic_submitted, until=has_events(stored))
    assert set(event_ids(messages)) == stored


def test_the_relay_killed_mid_stream_and_restarted_loses_nothing(
    settings: Settings, db: psycopg.Connection, spawn: Callable[[str, Settings], Process]
) -> None:
    small_batches = settings.model_copy(update={"relay_batch_size": 10})
    ids = insert_many(small_batches, 3000)

    first = spawn("outbox-relay", small_batches)
    wait_until(lambda: _count(db, "published_at IS NOT NULL") >= 200, 30, first.describe)
    first.kill()
    left = _count(db, "published_at IS NULL")
    assert 0 < left < 3000, "the kill must land mid-stream"

    second = spawn("outbox-relay", small_batches)
    wait_until(lambda: _count(db, "published_at IS NULL") == 0, 60, second.describe)

    messages = consume(small_batches, small_batches.topic_submitted, until=has_events(set(ids)))
    assert set(event_ids(messages)) == set(ids)
