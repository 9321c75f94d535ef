"""Whatever a client sends, the command API answers without a 5xx and without a full PAN.

Property tests against the real database: arbitrary Unicode (control characters, NUL,
lone surrogates included) in every text field and in the Idempotency-Key, arbitrary JSON
numbers and strings for the amounts. Anything that passes validation must be storable,
so no input may reach the database and fail there.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from command_api.app import create_app
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import api_client

# Every code point, surrogates included (categories are not filtered).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
JSON_NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.decimals(min_value=-(10**15), max_value=10**15, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
AMOUNTS = st.one_of(JSON_NUMBERS, ANY_TEXT, st.booleans(), st.none())
# What a client can put in a header at all: visible ASCII, spaces and obs-text bytes.
HEADER_VALUES = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
)
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FULL_PAN = re.compile(r"[A-Za-z]{5}[0-9]{4}[A-Za-z]")


@pytest.fixture(scope="module")
def app(base_settings: Settings) -> FastAPI:
    """One command API for every example of the module (its pool is reused)."""
    return create_app(base_settings)


@pytest.fixture
async def api(app: FastAPI, base_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's app."""
    async with api_client(app, base_settings) as c:
        yield c


def _body(fields: dict[str, Any]) -> str:
    parts = []
    for name, value in fields.items():
        if isinstance(value, Decimal):
            text = format(value, "f")
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = json.dumps(value, ensure_ascii=True)
        parts.append(f"{json.dumps(name)}: {text}")
    return "{" + ", ".join(parts) + "}"


def _assert_sound(response: httpx.Response, sent: str) -> None:
    assert response.status_code < 500, response.text
    for pan in FULL_PAN.findall(sent):
        assert pan not in response.text, "a PAN the client sent came back unmasked"


@BOUNDED
@given(name=ANY_TEXT, pan=ANY_TEXT, loan_type=ANY_TEXT)
async def test_any_text_in_any_field_is_answered_without_a_5xx(
    api: httpx.AsyncClient, name: str, pan: str, loan_type: str
) -> None:
    body = _body(valid_body(applicant_name=name, pan_number=pan, loan_type=loan_type))

    response = await api.post(
        "/applications", content=body.encode(), headers={"Content-Type": "application/json"}
    )

    _assert_sound(response, body)


@BOUNDED
@given(income=AMOUNTS, amount=AMOUNTS)
async def test_any_json_value_as_an_amount_is_answered_without_a_5xx(
    api: httpx.AsyncClient, income: Any, amount: Any
) -> None:
    body = _body(valid_body(monthly_income_inr=income, loan_amount_inr=amount))

    response = await api.post(
        "/applications", content=body.encode(), headers={"Content-Type": "application/json"}
    )

    _assert_sound(response, body)
    if response.status_code == 202:
        assert Decimal(str(income)) > 0
        assert Decimal(str(amount)) > 0


@BOUNDED
@given(key=HEADER_VALUES, name=ANY_TEXT)
async def test_any_idempotency_key_is_answered_without_a_5xx(
    api: httpx.AsyncClient, key: str, name: str
) -> None:
    body = _body(valid_body(applicant_name=name))

    response = await api.post(
        "/applications",
        content=body.encode(),
        headers={b"Content-Type": b"application/json", b"Idempotency-Key": key.encode("latin-1")},
    )

    _assert_sound(response, body + key)
