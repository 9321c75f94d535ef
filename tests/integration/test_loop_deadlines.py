"""The loops' database calls end by a client-side deadline; the loop heals by itself.

The database is made to stop answering from the inside: a statement waits on a lock the
test holds. The server is up and the connection open, so no server-side timeout below
the statement timeout and no TCP mechanism would end the wait; only the client's
deadline does (:class:`runtime.db.BoundedConnection`).
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY

from decision_worker.main import build_consumer
from runtime.db import DeadlinePassed, connect, create_engine
from runtime.settings import Settings
from tests.support.db import table_locked
from tests.support.events import credit_report_event, insert_application
from tests.support.kafka import produce_events
from tests.support.outbox import running
from tests.support.processes import wait_until

DEADLINE_S = 1.0


def test_a_call_the_database_does_not_answer_fails_at_the_deadline_and_closes_the_connection(
    settings: Settings,
) -> None:
    with (
        table_locked(settings, "applications"),
        connect(settings, "tests", deadline_s=DEADLINE_S) as conn,
    ):
        started = time.monotonic()
        with pytest.raises(DeadlinePassed):
            conn.execute("SELECT count(*) FROM applications")
        elapsed = time.monotonic() - started

        assert conn.closed, "a connection cut mid-exchange must never be reused"
        assert DEADLINE_S <= elapsed < DEADLINE_S + 1.0


def test_a_call_that_passes_its_own_timeout_keeps_it(settings: Settings) -> None:
    with connect(settings, "tests", autocommit=True, deadline_s=DEADLINE_S) as conn:
        conn.execute("LISTEN prequal_test_channel")
        # Longer than the deadline: notifies() bounds itself, and an idle wait is no stall.
        notified = list(conn.notifies(timeout=DEADLINE_S * 1.5, stop_after=1))

        assert notified == []
        assert not conn.closed


def _decided(db: psycopg.Connection, application_id: uuid.UUID) -> int:
    row = db.execute(
        "SELECT count(*) FROM outbox WHERE type = 'LoanApplicationDecided' AND aggregateid = %s",
        (str(application_id),),
    ).fetchone()
    return int(row[0]) if row else 0


def _retries() -> float:
    value = REGISTRY.get_sample_value(
        "prequal_consumer_retries_total", {"consumer": "decision-worker"}
    )
    return value or 0.0


@pytest.mark.timeout(120)
def test_the_decision_worker_abandons_a_stalled_call_retries_and_decides_once(
    settings: Settings, db: psycopg.Connection
) -> None:
    fast = settings.model_copy(update={"loop_db_deadline_s": DEADLINE_S})
    application_id = insert_application(db)
    retries_before = _retries()

    with running(build_consumer(fast).run):
        with table_locked(settings, "applications"):
            produce_events(
                fast, fast.topic_credit_reports, [credit_report_event(application_id, 790)]
            )
            wait_until(lambda: _retries() >= retries_before + 2, 30)
            assert _decided(db, application_id) == 0
        wait_until(lambda: _decided(db, application_id) == 1, 30)
        time.sleep(1.0)  # a second effect would show up now, if there were one

    assert _decided(db, application_id) == 1


async def test_every_connection_asks_the_kernel_to_notice_a_silent_peer_in_seconds(
    settings: Settings,
) -> None:
    wanted = {
        "keepalives": "1",
        "keepalives_idle": str(settings.pg_keepalives_idle_s),
        "keepalives_interval": "2",
        "keepalives_count": "3",
        "tcp_user_timeout": str(settings.pg_tcp_user_timeout_ms),
    }
    with connect(settings, "tests") as loop_conn:
        loop_parameters = loop_conn.info.get_parameters()
    engine = create_engine(settings, "tests")
    try:
        async with engine.connect() as api_conn:
            raw = (await api_conn.get_raw_connection()).driver_connection
            assert raw is not None
            api_parameters = raw.info.get_parameters()
    finally:
        await engine.dispose()

    for parameters in (loop_parameters, api_parameters):
        assert {name: parameters.get(name) for name in wanted} == wanted
