"""Every validation rule of SPEC.md answers 422 naming the bad field, and stores nothing."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import valid_body

MISSING = object()


def _without(field: str) -> dict[str, Any]:
    body = valid_body()
    del body[field]
    return body


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing PAN", _without("pan_number"), "pan_number"),
    ("missing name", _without("applicant_name"), "applicant_name"),
    ("missing income", _without("monthly_income_inr"), "monthly_income_inr"),
    ("missing amount", _without("loan_amount_inr"), "loan_amount_inr"),
    ("missing loan type", _without("loan_type"), "loan_type"),
    ("lowercase PAN", valid_body(pan_number="abcde1234f"), "pan_number"),
    ("11-character PAN", valid_body(pan_number="ABCDE1234FG"), "pan_number"),
    ("9-character PAN", valid_body(pan_number="ABCD1234F"), "pan_number"),
    ("PAN with digits where letters go", valid_body(pan_number="1BCDE1234F"), "pan_number"),
    ("zero income", valid_body(monthly_income_inr=0), "monthly_income_inr"),
    ("negative income", valid_body(monthly_income_inr=-1), "monthly_income_inr"),
    ("zero amount", valid_body(loan_amount_inr=0), "loan_amount_inr"),
    ("negative amount", valid_body(loan_amount_inr=-500000.00), "loan_amount_inr"),
    ("income with 3 decimals", valid_body(monthly_income_inr=75000.005), "monthly_income_inr"),
    ("amount with 3 decimals", valid_body(loan_amount_inr="100.001"), "loan_amount_inr"),
    ("amount beyond NUMERIC(12,2)", valid_body(loan_amount_inr=10_000_000_000), "loan_amount_inr"),
    ("income as a boolean", valid_body(monthly_income_inr=True), "monthly_income_inr"),
    ("income as text", valid_body(monthly_income_inr="a lot"), "monthly_income_inr"),
    ("unknown loan type", valid_body(loan_type="CAR"), "loan_type"),
    ("lowercase loan type", valid_body(loan_type="personal"), "loan_type"),
    ("empty name", valid_body(applicant_name=""), "applicant_name"),
    ("blank name", valid_body(applicant_name="   "), "applicant_name"),
    ("256-character name", valid_body(applicant_name="x" * 256), "applicant_name"),
    ("unknown extra field", valid_body(loan_tenure=48), "loan_tenure"),
]


@pytest.mark.parametrize(("case", "body", "field"), CASES, ids=[c[0] for c in CASES])
async def test_an_invalid_application_is_refused_with_422_naming_the_field(
    client: httpx.AsyncClient, db: psycopg.Connection, case: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/applications", json=body)

    assert response.status_code == 422, case
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["title"] == "Validation failed"
    assert [e["field"] for e in problem["errors"]] == [field]
    assert field in problem["detail"]
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


async def test_a_missing_pan_says_that_the_pan_is_required(client: httpx.AsyncClient) -> None:
    response = await client.post("/applications", json=_without("pan_number"))

    assert response.json()["errors"] == [
        {
            "field": "pan_number",
            "location": "body",
            "message": "pan_number is required",
            "code": "missing",
        }
    ]


async def test_every_bad_field_is_named_at_once(client: httpx.AsyncClient) -> None:
    body = valid_body(pan_number="bad", loan_type="BOAT", monthly_income_inr=-5)

    response = await client.post("/applications", json=body)

    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"pan_number", "loan_type", "monthly_income_inr"}


async def test_malformed_json_is_a_422_about_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/applications",
        content=b'{"pan_number": "ABCDE1234F",',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body"
    assert error["code"] == "json_invalid"
    assert error["message"].startswith("Malformed JSON")


async def test_a_body_that_is_not_an_object_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/applications", json=["ABCDE1234F"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["location"] == "body"


async def test_an_empty_idempotency_key_is_a_422_naming_the_header(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/applications", json=valid_body(), headers={"Idempotency-Key": "has space"}
    )

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["location"]) == ("Idempotency-Key", "header")


async def test_amounts_given_as_decimal_strings_are_accepted_exactly(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = valid_body(monthly_income_inr="9999999999.99", loan_amount_inr="0.01")

    response = await client.post("/applications", json=body)

    assert response.status_code == 202
    row = db.execute("SELECT monthly_income_inr::text, loan_amount_inr::text FROM applications")
    assert row.fetchone() == ("9999999999.99", "0.01")
