"""A PAN never comes back unmasked in a problem body, and never reaches a metrics label."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from query_api.app import create_app as create_query_app
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import api_client

PAN = "QWERT6543Y"
MASKED = "QWERT***3Y"
ANY_PAN = re.compile(r"[A-Z]{5}[0-9]{4}[A-Z]")


def _texts(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


# Bodies that are refused (422) while a valid-format PAN, or something close to one,
# sits somewhere in them.
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("valid PAN, bad amount", valid_body(pan_number=PAN, loan_amount_inr=-1)),
    ("valid PAN, bad loan type", valid_body(pan_number=PAN, loan_type=PAN)),
    ("PAN as the name, name too long", valid_body(applicant_name=PAN + "x" * 300)),
    ("PAN as an unknown field's name", valid_body(**{PAN: "x"})),
    ("PAN as an unknown field's value", valid_body(pan=PAN)),
    ("PAN with a trailing letter", valid_body(pan_number=PAN + "Z")),
    ("PAN in lowercase", valid_body(pan_number=PAN.lower())),
    ("PAN as an amount", valid_body(monthly_income_inr=PAN)),
    ("PAN where an object goes", {"pan_number": [PAN]}),
]


@pytest.mark.parametrize(("case", "body"), REFUSED, ids=[c for c, _ in REFUSED])
async def test_a_refused_body_never_echoes_a_pan(
    client: httpx.AsyncClient, case: str, body: dict[str, Any]
) -> None:
    response = await client.post("/applications", json=body)

    assert response.status_code == 422, case
    problem = response.json()
    # The validation handler renders field paths and messages only, never the input.
    assert all("input" not in error for error in problem["errors"]), case
    assert PAN not in response.text, case
    assert PAN.lower() not in response.text, case
    assert not [t for t in _texts(problem) if ANY_PAN.fullmatch(t)], case


async def test_a_pan_that_is_only_a_field_name_is_named_masked(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/applications", json=valid_body(**{PAN: "x"}))

    assert [e["field"] for e in response.json()["errors"]] == [MASKED]


async def test_malformed_json_around_a_pan_does_not_echo_it(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/applications",
        content=f'{{"pan_number": "{PAN}", oops'.encode(),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert PAN not in response.text


async def test_a_pan_in_the_path_is_masked_in_the_problem(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    unknown = await client.get(f"/applications/{PAN}")
    async with api_client(create_query_app(settings), settings, "http://q") as query:
        not_a_uuid = await query.get(f"/applications/{PAN}/status")

    assert unknown.status_code == 404
    assert not_a_uuid.status_code == 422
    for response in (unknown, not_a_uuid):
        assert PAN not in response.text
        assert MASKED in response.json()["instance"]


async def test_metrics_after_posts_with_pans_contain_no_pan(client: httpx.AsyncClient) -> None:
    pans = ["ZXCVB1234N", "POIUY9876T"]
    for pan in pans:
        assert (await client.post("/applications", json=valid_body(pan_number=pan))).is_success
        await client.post("/applications", json=valid_body(pan_number=pan, loan_type="X"))
        await client.get(f"/applications/{pan}")
        await client.get(f"/{pan}")
        # Any token is a method to HTTP: it must not become a label value.
        await client.request(pan, "/applications")

    text = (await client.get("/metrics")).text

    assert "prequal_http_requests_total" in text
    for pan in pans:
        assert pan not in text
        assert pan[:5] not in text
    assert not ANY_PAN.search(text)
    assert 'method="OTHER"' in text
