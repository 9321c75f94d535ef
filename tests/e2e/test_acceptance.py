"""SPEC.md acceptance stories 1 and 2, through HTTP to real processes and a real broker."""

from __future__ import annotations

import json

import httpx
import psycopg

from tests.api.conftest import valid_body
from tests.e2e.conftest import RunningSystem
from tests.support.auth import bearer
from tests.support.kafka import consume, has_events


def test_story_1_a_valid_application_is_accepted_stored_and_published(
    system: RunningSystem, db: psycopg.Connection
) -> None:
    response = httpx.post(
        f"{system.command_url}/applications",
        json=valid_body(),
        headers=bearer(system.settings),
        timeout=10,
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    application_id = body["application_id"]
    row = db.execute(
        "SELECT status, pan_number FROM applications WHERE id = %s", (application_id,)
    ).fetchone()
    assert row == ("PENDING", "ABCDE1234F")
    [event_id] = [str(r[0]) for r in db.execute("SELECT event_id FROM outbox")]
    [message] = [
        m
        for m in consume(
            system.settings, system.settings.topic_submitted, until=has_events({event_id})
        )
        if m.headers["event_id"] == event_id
    ]
    assert message.key == application_id
    event = json.loads(message.value)
    assert event["event_type"] == "LoanApplicationSubmitted"
    assert event["data"] == {
        "application_id": application_id,
        "pan_number": "ABCDE1234F",
        "applicant_name": "Rajesh Kumar",
        "monthly_income_inr": "75000.00",
        "loan_amount_inr": "500000.00",
        "loan_type": "PERSONAL",
        "submitted_at": event["data"]["submitted_at"],
        "client_id": "tests",
    }
    assert message.headers["correlation_id"] == response.headers["x-correlation-id"]


def test_story_2_an_application_without_pan_is_refused_with_a_clear_message(
    system: RunningSystem, db: psycopg.Connection
) -> None:
    body = valid_body()
    del body["pan_number"]

    response = httpx.post(
        f"{system.command_url}/applications",
        json=body,
        headers=bearer(system.settings),
        timeout=10,
    )

    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "pan_number"
    assert problem["errors"][0]["message"] == "pan_number is required"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)


def test_the_logs_show_the_pan_masked_and_never_in_full(
    system: RunningSystem,
) -> None:
    httpx.post(
        f"{system.command_url}/applications",
        json=valid_body(),
        headers=bearer(system.settings),
        timeout=10,
    )
    system.relay.wait_for_log("relay.published")

    logs = system.command_api.log() + system.relay.log()
    assert "ABCDE1234F" not in logs
    assert "ABCDE***4F" in logs
