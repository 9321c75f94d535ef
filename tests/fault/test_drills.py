"""Outage drills on the whole system: real processes, real servers stopped and started.

Each drill asserts that nothing accepted is lost and nothing is applied twice, and
prints what it measured (the command path's latencies while a server was down).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from ops.dlq import read_dead_letters
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.events import EventType, derived_event_id
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.events import credit_report_event
from tests.support.infra import local
from tests.support.kafka import consume, event_ids, produce, produce_events
from tests.support.pipeline import Pipeline, start_pipeline
from tests.support.processes import run_ops, wait_until

BODY = {
    "pan_number": "ABCDE1234F",
    "applicant_name": "Drill Applicant",
    "monthly_income_inr": "75000.00",
    "loan_amount_inr": "500000.00",
    "loan_type": "PERSONAL",
}


@pytest.fixture
def pipeline(settings: Settings, spawn: Spawn) -> Pipeline:
    """The six processes on the polling relay."""
    return start_pipeline(settings, spawn)


def _percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def ms(q: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f} ms"

    return f"p50={ms(0.5)} p95={ms(0.95)} max={ordered[-1] * 1000:.1f} ms"


def _counts(db: psycopg.Connection) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT count(*) FILTER (WHERE status = 'PENDING'),"
        "       count(*) FILTER (WHERE status <> 'PENDING'),"
        "       (SELECT count(*) - count(DISTINCT aggregateid) FROM outbox"
        "         WHERE type = 'LoanApplicationDecided' AND replay_of IS NULL)"
        "  FROM applications"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def _post_many(url: str, count: int, headers: dict[str, str]) -> list[tuple[int, float]]:
    limits = httpx.Limits(max_connections=30)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as http:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            response = await http.post(f"{url}/applications", json=BODY)
            return response.status_code, time.perf_counter() - started

        return await asyncio.gather(*[one() for _ in range(count)])


def test_with_kafka_stopped_300_posts_are_accepted_and_all_decided_once_it_returns(
    pipeline: Pipeline, db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    local("down", "kafka")
    try:
        results = asyncio.run(_post_many(pipeline.command, 300, bearer(pipeline.settings)))
    finally:
        local("up", "kafka")

    statuses = [status for status, _ in results]
    with capsys.disabled():  # the drill's measurement belongs in the CI log
        print(
            f"\n  300 POSTs at once while Kafka was down: {_percentiles([t for _, t in results])}"
        )
    assert statuses == [202] * 300
    wait_until(lambda: _counts(db)[0] == 0, 180, lambda: str(_counts(db)))
    pending, decided, duplicate_decisions = _counts(db)
    assert (pending, decided, duplicate_decisions) == (0, 300, 0)


async def _post_for(
    url: str, seconds: float, rate: float, headers: dict[str, str], retry_503: bool = False
) -> list[dict[str, Any]]:
    """POST at ``rate`` for ``seconds``; each request's final answer.

    With ``retry_503`` a request behaves as the README tells a client to: it carries an
    Idempotency-Key, and a 503 is retried with the same key after its Retry-After.
    """
    outcomes: list[dict[str, Any]] = []
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:

        async def post(key: str | None) -> httpx.Response:
            extra = {"Idempotency-Key": key} if key else {}
            response = await http.post(f"{url}/applications", json=BODY, headers=extra)
            for _ in range(5 if key else 0):
                if response.status_code != 503:
                    break
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                response = await http.post(f"{url}/applications", json=BODY, headers=extra)
            return response

        async def one(index: int) -> None:
            started = time.perf_counter()
            try:
                response = await post(f"drill-{run}-{index}" if retry_503 else None)
                outcomes.append(
                    {
                        "status": response.status_code,
                        "type": response.headers.get("content-type"),
                        "id": response.json().get("application_id"),
                        "started": started,
                        "seconds": time.perf_counter() - started,
                    }
                )
            except httpx.TransportError as error:
                outcomes.append(
                    {
                        "status": 0,
                        "error": str(error),
                        "started": started,
                        "seconds": time.perf_counter() - started,
                    }
                )

        tasks = []
        begin = time.perf_counter()
        for i in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return outcomes


def test_postgresql_restarted_under_load_gives_quick_503s_and_loses_no_accepted_application(
    pipeline: Pipeline, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    back: list[float] = []

    async def drill() -> list[dict[str, Any]]:
        load = asyncio.create_task(
            _post_for(pipeline.command, seconds=11, rate=40, headers=bearer(pipeline.settings))
        )
        await asyncio.sleep(2)
        await asyncio.to_thread(local, "down", "postgres")
        await asyncio.sleep(3)
        await asyncio.to_thread(local, "up", "postgres")
        back.append(time.perf_counter())
        return await load

    outcomes = asyncio.run(drill())
    # Once the database is back, the circuit breaker lets requests through again after
    # at most its open time (plus one deadline for a half-open probe caught mid-restart).
    settled = back[0] + settings.db_breaker_open_s + settings.db_deadline_s
    after = [o for o in outcomes if o["started"] > settled]

    accepted = [o["id"] for o in outcomes if o["status"] == 202]
    refused = [o for o in outcomes if o["status"] == 503]
    print(
        f"\nduring the PostgreSQL restart: {len(accepted)} accepted, {len(refused)} refused "
        f"with 503; {_percentiles([o['seconds'] for o in outcomes])}"
    )
    assert {o["status"] for o in outcomes} <= {202, 503}
    assert refused, "the drill must hit the outage"
    assert all(o["type"] == "application/problem+json" for o in refused)
    assert max(o["seconds"] for o in outcomes) < 10  # never hangs a client
    assert after, "the load must go on after the database is back"
    assert all(o["status"] == 202 for o in after)  # recovered without a restart
    with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as db:
        wait_until(lambda: _counts(db)[0] == 0, 120, lambda: str(_counts(db)))
        stored = {str(r[0]) for r in db.execute("SELECT id FROM applications")}
        assert set(accepted) <= stored
        assert _counts(db)[2] == 0


def _recreate(settings: Settings, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(30)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30)
    ensure_topics(settings, [topic])


def test_after_topic_data_is_lost_a_replay_decides_the_rest_and_leaves_the_decided_alone(
    pipeline: Pipeline, db: psycopg.Connection, spawn: Spawn
) -> None:
    since = datetime.now(UTC).isoformat()
    asyncio.run(_post_many(pipeline.command, 20, bearer(pipeline.settings)))
    wait_until(lambda: _counts(db) == (0, 20, 0), 60, lambda: str(_counts(db)))
    decided_before: dict[str, datetime] = dict(
        db.execute("SELECT id::text, updated_at FROM applications").fetchall()
    )

    pipeline.processes["credit-worker"].terminate()
    asyncio.run(_post_many(pipeline.command, 10, bearer(pipeline.settings)))
    wait_until(
        lambda: db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        == (0,),
        30,
    )
    _recreate(pipeline.settings, pipeline.settings.topic_submitted)  # the data is gone
    # Through the fixture, so that the restarted worker is stopped at teardown too.
    restarted = spawn("credit-worker", pipeline.settings)
    time.sleep(3)
    assert _counts(db)[0] == 10, "the lost events leave 10 applications pending"

    replay = run_ops(pipeline.settings, "outbox", "replay", "--since", since, "--yes", "--json")

    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: _counts(db)[0] == 0, 90, restarted.describe)
    assert _counts(db) == (0, 30, 0)
    after: dict[str, datetime] = dict(
        db.execute("SELECT id::text, updated_at FROM applications").fetchall()
    )
    assert all(after[i] == at for i, at in decided_before.items())


def test_the_relay_and_each_worker_killed_mid_stream_and_restarted_decide_everything_once(
    pipeline: Pipeline, db: psycopg.Connection, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    killed: list[str] = []

    async def drill() -> list[dict[str, Any]]:
        # Three restarts under coverage on two cores may push a request past its deadline:
        # the client retries its 503 with the same key, as the README says to.
        load = asyncio.create_task(
            _post_for(
                pipeline.command,
                seconds=9,
                rate=50,
                headers=bearer(pipeline.settings),
                retry_503=True,
            )
        )
        for name in ("outbox-relay", "credit-worker", "decision-worker"):
            await asyncio.sleep(1.5)
            # At 50 POST/s each of them has a batch in hand most of the time.
            await asyncio.to_thread(pipeline.processes[name].kill)
            killed.append(name)
            await asyncio.sleep(0.5)
            pipeline.processes[name] = await asyncio.to_thread(spawn, name, pipeline.settings)
        return await load

    outcomes = asyncio.run(drill())

    accepted = [o["id"] for o in outcomes if o["status"] == 202]
    assert len(accepted) == len(outcomes) == 450
    wait_until(
        lambda: _counts(db)[0] == 0,
        120,
        lambda: str(_counts(db)) + "".join(p.describe() for p in pipeline.processes.values()),
    )
    assert _counts(db) == (0, 450, 0)
    projected = "SELECT count(*) FROM application_status WHERE status <> 'PENDING'"
    wait_until(lambda: db.execute(projected).fetchone() == (450,), 60)
    # Each credit report committed once per submitted message, whatever the killed worker
    # had in flight. The relay publishes at least once: a batch it had sent when it was
    # killed goes out again, and each copy of a submitted event gets its report (same id);
    # the decision worker's inbox applies one. What the credit worker's transactions must
    # never do is commit a report twice for one message it consumed.
    submitted = Counter(
        event_ids(
            consume(
                pipeline.settings,
                pipeline.settings.topic_submitted,
                until=lambda got: len(set(event_ids(got))) >= 450,
                timeout_s=60,
            )
        )
    )
    reports = consume(
        pipeline.settings,
        pipeline.settings.topic_credit_reports,
        until=lambda got: len(set(event_ids(got))) >= 450,
        timeout_s=60,
    )
    per_report = Counter(event_ids(reports))
    expected = {
        str(derived_event_id(EventType.CREDIT_REPORT_GENERATED, uuid.UUID(event_id))): copies
        for event_id, copies in submitted.items()
    }
    assert per_report == expected, {
        k: (v, expected.get(k)) for k, v in per_report.items() if v != expected.get(k)
    }
    with capsys.disabled():
        print(f"\n  killed with SIGKILL and restarted under 50 POST/s: {', '.join(killed)}")


def _inbox_hits(pipeline: Pipeline, consumer: str) -> float:
    text = httpx.get(pipeline.metrics_url(consumer), timeout=10).text
    prefix = f'prequal_consumer_messages_total{{consumer="{consumer}",outcome="duplicate"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_a_poison_message_in_each_input_topic_is_parked_and_a_fixed_one_redrives_once(
    pipeline: Pipeline, db: psycopg.Connection
) -> None:
    settings = pipeline.settings
    orphan = credit_report_event(uuid.uuid4(), 790)  # its application row is missing
    garbage = b"{not an event"
    produce(settings, settings.topic_submitted, [("poison-1", garbage, [])])
    produce_events(settings, settings.topic_credit_reports, [orphan])
    produce(settings, settings.topic_decisions, [("poison-2", garbage, [])])
    asyncio.run(_post_many(pipeline.command, 30, bearer(pipeline.settings)))

    wait_until(lambda: _counts(db) == (0, 30, 0), 60, lambda: str(_counts(db)))
    wait_until(lambda: len(read_dead_letters(settings)) == 4, 30)
    parked = sorted((d.consumer, d.source_topic) for d in read_dead_letters(settings))
    assert parked == sorted(
        [
            ("credit-worker", settings.topic_submitted),
            ("query-projector", settings.topic_submitted),
            ("decision-worker", settings.topic_credit_reports),
            ("query-projector", settings.topic_decisions),
        ]
    )

    # The fix: the application the report belongs to is restored.
    db.execute(
        "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
        " loan_amount_inr, loan_type, status, created_at, updated_at)"
        " VALUES (%s, 'KLMNO1234P', 'Restored Applicant', 75000, 500000, 'PERSONAL',"
        " 'PENDING', now(), now())",
        (orphan.data.application_id,),
    )
    for _ in range(2):
        redrive = run_ops(settings, "dlq", "redrive", "--consumer", "decision-worker", "--yes")
        assert redrive.returncode == 0, redrive.stderr
        wait_until(lambda: _counts(db) == (0, 31, 0), 30, lambda: str(_counts(db)))
    # Both copies were consumed: the second one found the event in the inbox.
    wait_until(lambda: _inbox_hits(pipeline, "decision-worker") >= 1, 30)

    status = "SELECT status, cibil_score FROM applications WHERE id = %s"
    assert db.execute(status, (orphan.data.application_id,)).fetchone() == ("PRE_APPROVED", 790)
    decided = db.execute(
        "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided' AND aggregateid = %s",
        (str(orphan.data.application_id),),
    ).fetchone()
    assert decided == (1,)
    assert len(read_dead_letters(settings)) == 4  # the redriven letters were not parked again
