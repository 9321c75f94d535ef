"""Bearer tokens for the suite, from the development issuer the suite's settings name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from runtime.dev_issuer import issue_token
from runtime.settings import Settings

#: The client every test acts as unless it says otherwise.
TEST_CLIENT = "tests"
ALL_SCOPES = ("applications:write", "applications:read")


def bearer(
    settings: Settings, client: str = TEST_CLIENT, scopes: Iterable[str] = ALL_SCOPES
) -> dict[str, str]:
    """An ``Authorization`` header with a fresh token for ``client``."""
    return {"Authorization": f"Bearer {issue_token(settings, client, scopes)}"}


def api_client(
    app: FastAPI,
    settings: Settings,
    base_url: str = "http://api",
    client: str = TEST_CLIENT,
    **transport: bool,
) -> httpx.AsyncClient:
    """An in-process HTTP client of ``app`` that sends ``client``'s token on every request."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **transport),  # type: ignore[arg-type]
        base_url=base_url,
        headers=bearer(settings, client),
    )


@asynccontextmanager
async def serving(
    app: FastAPI, settings: Settings, base_url: str = "http://api", client: str = TEST_CLIENT
) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` started (its lifespan) and a client of it sending ``client``'s token."""
    async with app.router.lifespan_context(app), api_client(app, settings, base_url, client) as c:
        yield c
