"""A valid POST stores the application, its event and its projection row in one commit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from runtime.settings import Settings
from tests.api.conftest import valid_body


async def test_a_valid_application_is_accepted_with_its_id_pending_and_location(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post("/applications", json=valid_body())

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    application_id = uuid.UUID(body["application_id"])
    assert response.headers["location"] == (
        f"{settings.query_api_base_url}/applications/{application_id}/status"
    )


async def test_the_application_its_event_and_its_projection_row_are_all_stored(
    client: httpx.AsyncClient, db: psycopg.Connection, settings: Settings
) -> None:
    response = await client.post(
        "/applications", json=valid_body(), headers={"X-Correlation-ID": "corr-123"}
    )
    application_id = response.json()["application_id"]

    app = db.execute(
        "SELECT pan_number, applicant_name, monthly_income_inr::text, loan_amount_inr::text,"
        " loan_type, status, cibil_score FROM applications WHERE id = %s",
        (application_id,),
    ).fetchone()
    assert app == (
        "ABCDE1234F",
        "Rajesh Kumar",
        "75000.00",
        "500000.00",
        "PERSONAL",
        "PENDING",
        None,
    )
    projection = db.execute(
        "SELECT status, cibil_score, version FROM application_status WHERE application_id = %s",
        (application_id,),
    ).fetchone()
    assert projection == ("PENDING", None, 1)
    [outbox] = db.execute(
        "SELECT aggregatetype, aggregateid, type, topic, payload, correlation_id,"
        " causation_id, published_at, event_id::text, xmin::text FROM outbox"
    ).fetchall()
    assert outbox[:4] == (
        "application",
        application_id,
        "LoanApplicationSubmitted",
        settings.topic_submitted,
    )
    envelope = outbox[4]
    assert envelope["event_id"] == outbox[8]
    assert envelope["event_type"] == "LoanApplicationSubmitted"
    assert envelope["schema_version"] == 1
    assert envelope["aggregate_id"] == application_id
    assert envelope["correlation_id"] == "corr-123"
    assert envelope["data"]["pan_number"] == "ABCDE1234F"
    assert envelope["data"]["monthly_income_inr"] == "75000.00"
    assert envelope["data"]["loan_amount_inr"] == "500000.00"
    assert outbox[5:8] == ("corr-123", "corr-123", None)
    # One commit: the three rows were written by the same transaction.
    app_xmin = db.execute("SELECT xmin::text FROM applications").fetchone()
    status_xmin = db.execute("SELECT xmin::text FROM application_status").fetchone()
    assert app_xmin == status_xmin == (outbox[9],)


async def test_the_correlation_id_is_generated_when_absent_and_returned(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    response = await client.post("/applications", json=valid_body())

    generated = response.headers["x-correlation-id"]
    assert uuid.UUID(generated)
    assert db.execute("SELECT correlation_id FROM outbox").fetchone() == (generated,)


async def test_an_unsafe_correlation_id_is_replaced_not_echoed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/applications", json=valid_body(), headers={"X-Correlation-ID": "bad id\twith tabs"}
    )

    assert response.headers["x-correlation-id"] != "bad id\twith tabs"
    assert uuid.UUID(response.headers["x-correlation-id"])


@pytest.fixture
def outbox_insert_fails(db: psycopg.Connection) -> Iterator[None]:
    """A real failure after the application insert: a trigger that raises on the outbox."""
    db.execute("""
        CREATE FUNCTION test_fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'outbox insert refused by test trigger'; END $$
    """)
    db.execute("""
        CREATE TRIGGER test_fail_outbox BEFORE INSERT ON outbox
        FOR EACH ROW EXECUTE FUNCTION test_fail_outbox()
    """)
    yield
    db.execute("DROP TRIGGER test_fail_outbox ON outbox")
    db.execute("DROP FUNCTION test_fail_outbox()")


@pytest.mark.usefixtures("outbox_insert_fails")
@pytest.mark.parametrize("key", [None, "key-1"], ids=["one-statement path", "idempotent path"])
async def test_a_failure_after_the_application_insert_leaves_no_row_at_all(
    client: httpx.AsyncClient, db: psycopg.Connection, key: str | None
) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.post("/applications", json=valid_body(), headers=headers)

    assert response.status_code == 500
    for table in ("applications", "outbox", "application_status", "idempotency_keys"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


@pytest.mark.usefixtures("outbox_insert_fails")
async def test_a_500_is_a_problem_without_stack_trace_or_sql(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/applications", json=valid_body(), headers={"X-Correlation-ID": "corr-500"}
    )

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-correlation-id"] == "corr-500"
    problem = response.json()
    assert problem["title"] == "Internal server error"
    assert problem["correlation_id"] == "corr-500"
    text = json.dumps(problem).lower()
    for leak in ("traceback", "insert", "outbox", "trigger", "psycopg", "sqlalchemy"):
        assert leak not in text


def _stored(db: psycopg.Connection, application_id: str) -> list[object]:
    application = db.execute(
        "SELECT pan_number, applicant_name, monthly_income_inr, loan_amount_inr, loan_type,"
        " status, cibil_score, created_at = updated_at FROM applications WHERE id = %s",
        (application_id,),
    ).fetchone()
    projection = db.execute(
        "SELECT status, cibil_score, version, decided_at, submitted_at = updated_at"
        " FROM application_status WHERE application_id = %s",
        (application_id,),
    ).fetchone()
    event = db.execute(
        "SELECT aggregatetype, type, topic, correlation_id, causation_id, traceparent,"
        " published_at, replay_of, payload - 'event_id' - 'occurred_at' - 'aggregate_id'"
        " #- '{data,application_id}' #- '{data,submitted_at}'"
        " FROM outbox WHERE aggregateid = %s",
        (application_id,),
    ).fetchone()
    return [application, projection, event]


async def test_the_one_statement_and_the_idempotent_paths_store_the_same_rows(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    same = {"X-Correlation-ID": "corr-same"}
    plain = await client.post("/applications", json=valid_body(), headers=same)
    keyed = await client.post(
        "/applications", json=valid_body(), headers={**same, "Idempotency-Key": "k-same"}
    )

    assert plain.status_code == keyed.status_code == 202
    rows_plain = _stored(db, plain.json()["application_id"])
    rows_keyed = _stored(db, keyed.json()["application_id"])
    assert None not in rows_plain
    assert rows_plain == rows_keyed
