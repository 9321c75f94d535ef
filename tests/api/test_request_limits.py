"""Request bodies are bounded (413) and JSON only (415); CORS only for configured origins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import orjson
import psycopg
import pytest
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Scope

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.limits import RequestLimitsMiddleware, install_request_limits, is_json_media_type
from runtime.middleware import HeadAsGetMiddleware, RequestContextMiddleware, install_observability
from runtime.settings import Settings
from tests.api.conftest import valid_body

ORIGIN = "https://lender.example"


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _padded(size: int) -> bytes:
    """A valid application whose JSON is exactly ``size`` bytes (trailing whitespace)."""
    raw = _json(valid_body())
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


# ---------------------------------------------------------------------------- body size


async def test_the_body_limit_defaults_to_16_kib() -> None:
    assert Settings.model_fields["http_max_body_bytes"].default == 16 * 1024


async def test_a_body_exactly_at_the_limit_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/applications",
        content=_padded(settings.http_max_body_bytes),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 202


async def test_a_declared_content_length_over_the_limit_is_a_413_problem(
    client: httpx.AsyncClient, settings: Settings, db: psycopg.Connection
) -> None:
    response = await client.post(
        "/applications",
        content=_padded(settings.http_max_body_bytes + 1),
        headers={"content-type": "application/json", "x-correlation-id": "big-1"},
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-correlation-id"] == "big-1"
    problem = response.json()
    assert problem["type"] == "urn:prequal:problem:payload-too-large"
    assert problem["status"] == 413
    assert str(settings.http_max_body_bytes) in problem["detail"]
    assert problem["correlation_id"] == "big-1"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)


async def test_a_streamed_body_without_content_length_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, settings: Settings, db: psycopg.Connection
) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            sent.append(1)
            yield b" " * 1024

    response = await client.post(
        "/applications", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    # Refused once the limit is crossed, not after reading everything.
    assert len(sent) <= settings.http_max_body_bytes // 1024 + 1
    assert response.json()["type"] == "urn:prequal:problem:payload-too-large"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)


async def test_a_content_length_that_understates_the_body_does_not_get_past_the_limit(
    settings: Settings,
) -> None:
    """A lying Content-Length: the bytes are counted, not the header believed."""
    app = create_command_app(settings.model_copy(update={"http_max_body_bytes": 100}))
    messages: list[Message] = [
        {"type": "http.request", "body": b" " * 80, "more_body": True},
        {"type": "http.request", "body": b" " * 80, "more_body": False},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/applications",
        "raw_path": b"/applications",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)

    assert sent[0]["status"] == 413


# --------------------------------------------------------------------------- media type


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
    ids=["text", "form", "xml", "none"],
)
async def test_a_body_that_is_not_json_is_a_415_problem(
    client: httpx.AsyncClient, db: psycopg.Connection, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await client.post("/applications", content=_json(valid_body()), headers=headers)

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:prequal:problem:unsupported-media-type"
    assert problem["correlation_id"] == response.headers["x-correlation-id"]
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (0,)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
async def test_json_with_or_without_a_utf8_charset_is_accepted(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await client.post(
        "/applications", content=_json(valid_body()), headers={"content-type": content_type}
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ('application/json; charset="utf-8"', True),
        ("application/json; charset=latin-1", False),
        ("application/json; boundary=x", False),
        ("application/problem+json", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_only_application_json_is_a_json_media_type(
    content_type: str | None, accepted: bool
) -> None:
    assert is_json_media_type(content_type) is accepted


async def test_a_wrong_method_or_route_stays_405_or_404_whatever_the_content_type(
    client: httpx.AsyncClient,
) -> None:
    wrong_method = await client.post("/health", content=b"x", headers={"content-type": "text/x"})
    wrong_route = await client.post("/nowhere", content=b"x", headers={"content-type": "text/x"})

    assert wrong_method.status_code == 405
    assert wrong_route.status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"pan_number": "\xff\xfe"}', "the body is not UTF-8 text"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
    ids=["not-utf8", "deeply-nested"],
)
async def test_json_that_cannot_be_parsed_is_a_422_like_any_malformed_json(
    client: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    response = await client.post(
        "/applications", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "body",
            "location": "body",
            "message": f"Malformed JSON: {reason}",
            "code": "json_invalid",
        }
    ]


# ---------------------------------------------------------------------------- documented


async def test_the_openapi_document_lists_413_and_415_for_the_post_only(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    command = (await client.get("/openapi.json")).json()
    async with _client(create_query_app(settings)) as query_client:
        query = (await query_client.get("/openapi.json")).json()

    post = command["paths"]["/applications"]["post"]["responses"]
    for code in ("413", "415"):
        assert "application/problem+json" in post[code]["content"], code
    for path_item in query["paths"].values():
        for operation in path_item.values():
            assert not {"413", "415"} & set(operation["responses"])


# --------------------------------------------------------------------------------- CORS


async def test_without_configured_origins_no_cors_header_is_sent(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/applications",
        headers={"origin": ORIGIN, "access-control-request-method": "POST"},
    )
    simple = await client.get("/health", headers={"origin": ORIGIN})

    for response in (preflight, simple):
        assert not [h for h in response.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("create_app", [create_command_app, create_query_app])
async def test_a_configured_origin_gets_cors_headers_and_others_do_not(
    settings: Settings, create_app: Any
) -> None:
    app = create_app(
        settings.model_copy(update={"cors_allow_origins": f"{ORIGIN}, https://other.example"})
    )
    async with _client(app) as c:
        allowed = await c.get("/health", headers={"origin": ORIGIN})
        foreign = await c.get("/health", headers={"origin": "https://evil.example"})
        preflight = await c.options(
            "/health",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "GET",
                "access-control-request-headers": "x-correlation-id",
            },
        )

    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-correlation-id" in allowed.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["x-correlation-id"]


async def test_a_refused_body_still_carries_cors_headers_for_an_allowed_origin(
    settings: Settings,
) -> None:
    app = create_command_app(settings.model_copy(update={"cors_allow_origins": ORIGIN}))
    async with _client(app) as c:
        response = await c.post(
            "/applications",
            content=b"pan=ABCDE1234F",
            headers={"origin": ORIGIN, "content-type": "text/plain"},
        )

    assert response.status_code == 415
    assert response.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize("limits_first", [True, False], ids=["limits-first", "context-first"])
def test_the_limits_sit_inside_the_request_context_whatever_the_install_order(
    limits_first: bool,
) -> None:
    app = FastAPI()
    with_cors = Settings(cors_allow_origins=ORIGIN)
    if limits_first:
        install_request_limits(app, with_cors)
        install_observability(app, "test")
    else:
        install_observability(app, "test")
        install_request_limits(app, with_cors)

    # Outermost first.
    assert [cast(object, layer.cls) for layer in app.user_middleware] == [
        RequestContextMiddleware,
        CORSMiddleware,
        RequestLimitsMiddleware,
        HeadAsGetMiddleware,
    ]


def test_without_origins_there_is_no_cors_middleware() -> None:
    app = FastAPI()
    install_request_limits(app, Settings())

    assert [cast(object, layer.cls) for layer in app.user_middleware] == [RequestLimitsMiddleware]
