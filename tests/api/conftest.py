"""The command API in-process, over HTTP semantics, on the real migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from command_api.app import create_app
from query_api.app import create_app as create_query_app
from runtime.settings import Settings
from tests.support.auth import serving


def valid_body(**overrides: Any) -> dict[str, Any]:
    """A valid application, with some fields replaced."""
    body: dict[str, Any] = {
        "pan_number": "ABCDE1234F",
        "applicant_name": "Rajesh Kumar",
        "monthly_income_inr": 75000.00,
        "loan_amount_inr": 500000.00,
        "loan_type": "PERSONAL",
    }
    body.update(overrides)
    return body


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh command API app."""
    async with serving(create_app(settings), settings, "http://command") as c:
        yield c


@pytest.fixture
async def query(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh query API app."""
    async with serving(create_query_app(settings), settings, "http://query") as c:
        yield c
