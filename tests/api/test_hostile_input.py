"""Odd and hostile HTTP input: never a 5xx, never a leaked PAN, standard HTTP semantics.

Each case is the smallest input found to fail before; the test holds its whole kind.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import psycopg
import pytest
import structlog
from fastapi import FastAPI

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.middleware import install_observability
from runtime.problems import install_error_handlers
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import api_client

AMOUNT_FIELDS = ("monthly_income_inr", "loan_amount_inr")


def _applications(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM applications").fetchone()
    return int(row[0]) if row else 0


def _fields(response: httpx.Response) -> set[str]:
    return {error["field"] for error in response.json().get("errors", [])}


def _post_raw(client: httpx.AsyncClient, raw: str, **headers: str) -> Any:
    return client.post(
        "/applications",
        content=raw.encode(),
        headers={"Content-Type": "application/json", **headers},
    )


# --------------------------------------------------------------- 1. storable or refused


@pytest.mark.parametrize("key", [None, "nul-in-name"], ids=["no key", "with a key"])
async def test_a_nul_character_in_the_name_is_a_422_naming_it_not_a_500(
    client: httpx.AsyncClient, db: psycopg.Connection, key: str | None
) -> None:
    raw = (
        '{"pan_number":"QWERT1234Z","applicant_name":"Testa\\u0000Qaverma",'
        '"monthly_income_inr":"80000.00","loan_amount_inr":"500000.00","loan_type":"PERSONAL"}'
    )
    headers = {"Idempotency-Key": key} if key else {}

    response = await _post_raw(client, raw, **headers)

    assert response.status_code == 422
    assert _fields(response) == {"applicant_name"}
    assert _applications(db) == 0


async def test_a_lone_surrogate_in_the_name_is_a_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    body = json.dumps(valid_body(applicant_name="Ravi \ud800 Kumar"))

    response = await _post_raw(client, body)

    assert response.status_code == 422
    assert _fields(response) == {"applicant_name"}


async def test_other_control_characters_are_stored_as_sent(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    response = await client.post(
        "/applications", json=valid_body(applicant_name="Ravi\tKumar\x1b\x7f")
    )

    assert response.status_code == 202
    row = db.execute("SELECT applicant_name FROM applications").fetchone()
    assert row == ("Ravi\tKumar\x1b\x7f",)


# ------------------------------------------------------------------ 2. one amount grammar


@pytest.mark.parametrize("field", AMOUNT_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "75_000",
        "_7_5_0_0_0_",
        " 75000",
        "75000 ",
        "+75000",
        "7.5e4",
        "1,000",
        "NaN",
        "",
        "\u0667\u0665",  # Arabic-Indic digits: Decimal() reads them, the grammar does not
    ],
)
async def test_an_amount_string_outside_the_decimal_grammar_is_a_422_naming_the_field(
    client: httpx.AsyncClient, db: psycopg.Connection, field: str, value: str
) -> None:
    response = await client.post("/applications", json=valid_body(**{field: value}))

    assert response.status_code == 422, value
    assert _fields(response) == {field}
    assert _applications(db) == 0


@pytest.mark.parametrize("field", AMOUNT_FIELDS)
async def test_a_json_integer_of_5000_digits_is_a_422_naming_the_field(
    client: httpx.AsyncClient, field: str
) -> None:
    body = json.dumps(valid_body(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {"9" * 5000}')

    response = await _post_raw(client, body)

    assert response.status_code == 422
    assert _fields(response) == {field}


@pytest.mark.parametrize("field", AMOUNT_FIELDS)
@pytest.mark.parametrize(
    ("number", "stored"),
    [("75000", "75000.00"), ("75000.5", "75000.50"), ("7.5e4", "75000.00"), ("0.01", "0.01")],
)
async def test_an_amount_as_a_json_number_is_read_exactly(
    client: httpx.AsyncClient, db: psycopg.Connection, field: str, number: str, stored: str
) -> None:
    body = json.dumps(valid_body(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {number}')

    response = await _post_raw(client, body)

    assert response.status_code == 202, response.text
    row = db.execute(f"SELECT {field}::text FROM applications").fetchone()
    assert row == (stored,)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_a_non_json_number_literal_is_a_422_malformed_body(
    client: httpx.AsyncClient, literal: str
) -> None:
    body = json.dumps(valid_body(monthly_income_inr=0)).replace(
        '"monthly_income_inr": 0', f'"monthly_income_inr": {literal}'
    )

    response = await _post_raw(client, body)

    assert response.status_code == 422
    assert _fields(response) == {"body"}


# ---------------------------------------------------------------------------- 3. HEAD


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json", "/docs"])
async def test_head_answers_like_get_without_the_body_on_the_command_api(
    client: httpx.AsyncClient, path: str
) -> None:
    get = await client.get(path)
    head = await client.head(path)

    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_head_answers_like_get_on_the_status_resource_404_included(
    client: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    accepted = (await client.post("/applications", json=valid_body())).json()
    known = f"/applications/{accepted['application_id']}/status"
    unknown = "/applications/00000000-0000-4000-8000-000000000000/status"

    for path, status in ((known, 200), (unknown, 404), ("/health", 200)):
        head = await query.head(path)
        assert head.status_code == status, path
        assert head.content == b""


async def test_head_is_refused_where_get_is_with_the_same_405(client: httpx.AsyncClient) -> None:
    response = await client.head("/applications")

    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


# ------------------------------------------------------------------ 4. Content-Encoding


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", True), ("gzip", False), ("br", False), ("deflate", False)],
    ids=["gzip body", "plain body labelled gzip", "plain body labelled br", "deflate"],
)
async def test_a_content_coded_body_is_a_415_naming_identity_and_nothing_is_stored(
    client: httpx.AsyncClient, db: psycopg.Connection, coding: str, compress: bool
) -> None:
    raw = json.dumps(valid_body()).encode()
    response = await client.post(
        "/applications",
        content=gzip.compress(raw) if compress else raw,
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )

    assert response.status_code == 415
    assert response.headers["accept-encoding"] == "identity"
    assert response.headers["content-type"] == "application/problem+json"
    assert _applications(db) == 0


async def test_an_identity_content_encoding_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/applications", json=valid_body(), headers={"Content-Encoding": "identity"}
    )

    assert response.status_code == 202


# ------------------------------------------------------------------------ 5. no caching


async def test_no_answer_of_either_api_may_be_stored_by_a_cache(
    client: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    accepted = await client.post("/applications", json=valid_body())
    invalid = await client.post("/applications", json=valid_body(pan_number="x"))
    status = await query.get(f"/applications/{accepted.json()['application_id']}/status")
    missing = await query.get("/applications/00000000-0000-4000-8000-000000000000/status")
    not_uuid = await query.get("/applications/nope/status")

    for response in (accepted, invalid, status, missing, not_uuid):
        assert response.headers["cache-control"] == "no-store", response.request.url


# --------------------------------------------------------------- 6. no host-derived redirect


@pytest.mark.parametrize(
    ("method", "path", "app"),
    [
        ("GET", "/applications/00000000-0000-4000-8000-000000000000/status/", "query"),
        ("POST", "/applications/", "command"),
        ("GET", "/health/", "command"),
    ],
)
async def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_requests_host(
    settings: Settings, method: str, path: str, app: str
) -> None:
    application: FastAPI = (create_query_app if app == "query" else create_command_app)(settings)
    async with api_client(application, settings) as c:
        response = await c.request(
            method,
            path,
            json=valid_body() if method == "POST" else None,
            headers={"Host": "attacker.example", "X-Forwarded-Proto": "https"},
        )

    assert response.status_code == 404
    assert "location" not in response.headers


# ----------------------------------------------------------------- 7. PANs in any case


@pytest.mark.parametrize("pan", ["qwert1234z", "QwErT1234z", "QWERT1234Z"])
async def test_a_pan_in_any_case_in_the_path_is_masked_in_the_problem(
    query: httpx.AsyncClient, pan: str
) -> None:
    response = await query.get(f"/applications/{pan}/status")

    assert response.status_code == 422
    assert pan not in response.text
    assert f"{pan[:5]}***{pan[8]}{pan[9]}" in response.json()["instance"]


async def test_a_lowercase_pan_in_the_body_is_masked_in_the_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/applications", json=valid_body(pan_number="abcde1234f"))

    assert response.status_code == 422
    assert "abcde1234f" not in response.text


# --------------------------------------------------------- a 500 logs no request values


async def test_an_unexpected_error_is_logged_by_class_and_place_never_with_its_message() -> None:
    app = FastAPI()
    install_observability(app, "test")
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("parameters: ('ABCDE1234F', 'Rajesh Kumar', 75000)")

    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api",
        ) as c:
            response = await c.get("/boom")

    assert response.status_code == 500
    failed = next(line for line in logs if line["event"] == "request.failed")
    assert failed["error_type"] == "builtins.ValueError"
    assert any("boom" in frame for frame in failed["raised_at"])
    assert "Rajesh" not in repr(logs)
    assert "Rajesh" not in response.text
