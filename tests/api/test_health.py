"""GET /health: 200 while the database answers, a quick 503 naming it when it does not."""

from __future__ import annotations

import time

import httpx

from command_api.app import create_app
from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.support.auth import api_client
from tests.support.processes import free_port


async def test_health_is_ok_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok"},
        "circuit_breaker": "closed",
    }


def _unreachable(settings: Settings) -> Settings:
    return settings.model_copy(update={"pg_port": free_port()})


async def test_health_is_503_naming_the_database_when_it_does_not_answer(
    settings: Settings,
) -> None:
    app = create_app(_unreachable(settings))
    async with api_client(app, settings) as c:
        response = await c.get("/health")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "database" in response.json()["detail"]


async def test_a_post_while_the_database_is_unreachable_is_a_quick_503(
    settings: Settings,
) -> None:
    app = create_app(_unreachable(settings))
    async with api_client(app, settings) as c:
        started = time.monotonic()
        response = await c.post("/applications", json=valid_body())
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["outcome"] == "not_stored"
    assert "was not stored" in response.json()["detail"]
    # Not a latency claim: it only proves the request does not hang on the dead server.
    assert elapsed < settings.pg_connect_timeout_s + 3


async def test_an_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")

    assert response.status_code == 404
    assert response.json()["type"] == "urn:prequal:problem:not-found"


async def test_a_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/applications")

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_openapi_document_has_an_example_for_every_model(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()

    for name in ("ApplicationRequest", "ApplicationAccepted"):
        assert spec["components"]["schemas"][name]["examples"], name


async def test_livez_stays_200_while_the_database_is_unreachable_and_readyz_says_503(
    settings: Settings,
) -> None:
    app = create_app(_unreachable(settings))
    async with api_client(app, settings) as c:
        livez = await c.get("/livez")
        readyz = await c.get("/readyz")
        head = await c.head("/livez")

    assert livez.status_code == 200
    assert readyz.status_code == 503
    assert "database" in readyz.json()["detail"]
    assert head.status_code == 200
