"""Idempotency-Key: a retry gets the first answer; a different body or a key in flight do not."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx
import psycopg

from tests.api.conftest import valid_body
from tests.support.auth import TEST_CLIENT

KEY = {"Idempotency-Key": "order-42-attempt"}


async def test_a_retried_post_returns_the_first_answer_and_creates_nothing_new(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    first = await client.post("/applications", json=valid_body(), headers=KEY)
    second = await client.post("/applications", json=valid_body(), headers=KEY)

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


async def test_the_same_amounts_written_differently_are_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/applications", json=valid_body(), headers=KEY)
    second = await client.post(
        "/applications",
        json=valid_body(monthly_income_inr="75000", loan_amount_inr="500000.0"),
        headers=KEY,
    )

    assert second.json() == first.json()


async def test_the_same_key_with_a_different_body_is_a_422_naming_the_key(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    await client.post("/applications", json=valid_body(), headers=KEY)

    response = await client.post(
        "/applications", json=valid_body(loan_amount_inr=999.00), headers=KEY
    )

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "Idempotency-Key"
    assert error["location"] == "header"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (1,)


async def test_a_key_still_in_flight_is_a_409_with_retry_after(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    # The first request's transaction holds the key's lock until it ends; hold it here.
    lock_id = int.from_bytes(
        hashlib.sha256(f"{TEST_CLIENT}\x1f{KEY['Idempotency-Key']}".encode()).digest()[:8],
        "big",
        signed=True,
    )
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
        response = await client.post("/applications", json=valid_body(), headers=KEY)

    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == 409
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)


async def test_an_expired_key_creates_a_new_application(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    first = await client.post("/applications", json=valid_body(), headers=KEY)
    db.execute("UPDATE idempotency_keys SET expires_at = now() - %s", (timedelta(seconds=1),))

    second = await client.post("/applications", json=valid_body(), headers=KEY)

    assert second.status_code == 202
    assert second.json()["application_id"] != first.json()["application_id"]
    assert "idempotent-replayed" not in second.headers
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (2,)
    assert db.execute("SELECT application_id::text FROM idempotency_keys").fetchone() == (
        second.json()["application_id"],
    )


async def test_a_key_expires_after_the_configured_time(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    await client.post("/applications", json=valid_body(), headers=KEY)

    lifetime = db.execute("SELECT expires_at - created_at FROM idempotency_keys").fetchone()

    assert lifetime == (timedelta(hours=24),)
