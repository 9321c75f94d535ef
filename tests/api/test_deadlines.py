"""A database that stops answering is a 503 within the deadline, never a hang.

The database is made to stop answering from the inside, the way a stuck server looks to
a client: a statement waits on a lock the test holds (the server is up, the connection
open, no answer comes), or a commit waits in a deferred trigger. Every answer must come
within the deadline plus the documented margin (:data:`MARGIN_S`), say truthfully whether
the application may have been stored, and leave the API working once the database
answers again, with no restart.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import serving
from tests.support.db import table_locked
from tests.support.processes import wait_until

DEADLINE_S = 0.5
#: The documented margin (README, docs/operations.md): a deadline's answer is on its way
#: within this much after the deadline. Generous here: this is CI on two shared cores.
MARGIN_S = 0.5
COMMIT_LOCK = 4242


def _fast(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={"db_deadline_s": DEADLINE_S, "health_deadline_s": DEADLINE_S, **overrides}
    )


@contextmanager
def _commits_held(settings: Settings) -> Iterator[None]:
    """Every commit storing an application waits (a deferred trigger) until the block ends."""
    with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as setup:
        setup.execute("""
            CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock(%s); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER test_hold_commit AFTER INSERT ON applications
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_hold_commit();
            """.replace("%s", str(COMMIT_LOCK)))
        try:
            with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (COMMIT_LOCK,))
                yield
        finally:
            setup.execute("DROP TRIGGER test_hold_commit ON applications")
            setup.execute("DROP FUNCTION test_hold_commit()")


async def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


def _applications(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM applications").fetchone()
    return int(row[0]) if row else 0


def _no_backend_waits(db: psycopg.Connection) -> bool:
    """Whether every cut connection's server process has noticed and gone."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'command-api'"
        " AND (wait_event_type = 'Lock' OR state = 'active')"
    ).fetchone()
    return row is not None and row[0] == 0


async def test_a_status_read_the_database_does_not_answer_is_a_503_within_the_deadline(
    settings: Settings,
) -> None:
    async with serving(create_query_app(_fast(settings)), settings) as api:
        unknown = "00000000-0000-4000-8000-000000000001"
        with table_locked(settings, "application_status"):
            response, elapsed = await _timed(api.get(f"/applications/{unknown}/status"))

            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.headers["content-type"] == "application/problem+json"
            assert elapsed < DEADLINE_S + MARGIN_S

        # No restart: the cut connection was discarded, a new one answers.
        after = await api.get(f"/applications/{unknown}/status")
        assert after.status_code == 404


async def test_a_submit_whose_statement_was_sent_but_not_answered_says_the_outcome_is_unknown(
    settings: Settings, db: psycopg.Connection
) -> None:
    async with serving(create_command_app(_fast(settings)), settings) as api:
        with table_locked(settings, "applications"):
            response, elapsed = await _timed(api.post("/applications", json=valid_body()))

            assert response.status_code == 503
            assert response.json()["outcome"] == "unknown"
            assert "same Idempotency-Key" in response.json()["detail"]
            assert elapsed < DEADLINE_S + MARGIN_S

        # The statement was its own commit: once the lock goes, it is applied. "Unknown"
        # was the truth, and that is why a client must retry with the same key.
        wait_until(lambda: _applications(db) == 1, 10)
        after = await api.post("/applications", json=valid_body())
        assert after.status_code == 202, after.text


async def test_a_submit_whose_application_was_never_sent_is_not_stored_and_says_so(
    settings: Settings, db: psycopg.Connection
) -> None:
    # The database stops answering the request's first call (its rate-limit token), so
    # the deadline passes before the application was ever sent.
    headers = {"Idempotency-Key": "never-sent"}
    async with serving(create_command_app(_fast(settings)), settings) as api:
        with table_locked(settings, "client_rate_limits"):
            response, elapsed = await _timed(
                api.post("/applications", json=valid_body(), headers=headers)
            )

            assert response.status_code == 503
            assert response.json()["outcome"] == "not_stored"
            assert elapsed < DEADLINE_S + MARGIN_S

        wait_until(lambda: _no_backend_waits(db), 10)
        assert _applications(db) == 0

        retry = await api.post("/applications", json=valid_body(), headers=headers)
        assert retry.status_code == 202
        assert "idempotent-replayed" not in retry.headers
        assert _applications(db) == 1


async def test_an_idempotent_submit_cut_during_its_commit_is_unknown_and_its_retry_is_the_same(
    settings: Settings, db: psycopg.Connection
) -> None:
    headers = {"Idempotency-Key": "cut-during-commit"}
    async with serving(create_command_app(_fast(settings)), settings) as api:
        with _commits_held(settings):
            response, elapsed = await _timed(
                api.post("/applications", json=valid_body(), headers=headers)
            )

            assert response.status_code == 503
            assert response.json()["outcome"] == "unknown"
            assert elapsed < DEADLINE_S + MARGIN_S

        wait_until(lambda: _applications(db) == 1, 10)
        retry = await api.post("/applications", json=valid_body(), headers=headers)

        assert retry.status_code == 202
        assert retry.headers["idempotent-replayed"] == "true"
        assert _applications(db) == 1, "the retry with the same key created nothing new"


async def test_the_circuit_breaker_opens_after_consecutive_deadline_failures_and_closes_again(
    settings: Settings,
) -> None:
    fast = _fast(settings, db_breaker_threshold=2, db_breaker_open_s=1.0)
    unknown = "00000000-0000-4000-8000-000000000002"
    async with serving(create_query_app(fast), settings) as api:
        with table_locked(settings, "application_status"):
            for _ in range(2):
                assert (await api.get(f"/applications/{unknown}/status")).status_code == 503

            failed_fast, elapsed = await _timed(api.get(f"/applications/{unknown}/status"))
            health = await api.get("/health")

            assert failed_fast.status_code == 503
            # Answered without waiting for the database at all.
            assert elapsed < DEADLINE_S
            assert health.json()["circuit_breaker"] == "opened"

        # Half-open after db_breaker_open_s: the next request tries the database again,
        # and its success closes the breaker.
        deadline = time.monotonic() + 10
        while (await api.get(f"/applications/{unknown}/status")).status_code != 404:
            assert time.monotonic() < deadline, "the breaker never closed again"
            await asyncio.sleep(0.2)
        assert (await api.get("/health")).json()["circuit_breaker"] == "closed"


async def test_health_answers_503_within_its_deadline_when_the_database_never_answers(
    settings: Settings,
) -> None:
    with _silent_server() as port:
        app = create_command_app(_fast(settings, pg_port=port))
        async with serving(app, settings) as api:
            response, elapsed = await _timed(api.get("/health"))

    assert response.status_code == 503
    assert "database" in response.json()["detail"]
    assert elapsed < DEADLINE_S + MARGIN_S


@contextmanager
def _silent_server() -> Iterator[int]:
    """A listener that accepts connections and never says a word (a frozen server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
