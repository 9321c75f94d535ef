"""Access control: only known clients submit and read, each its own applications only.

Tokens are real RS256 JWTs from the suite's development issuer, verified through the
same code path as an identity provider's; the bad ones are built the way an attacker
would build them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.dev_issuer import (
    DevelopmentIssuerRefused,
    access_claims,
    development_jwks,
    public_jwk,
    signing_key,
    write_keys,
)
from runtime.settings import Environment, Settings
from tests.api.conftest import valid_body
from tests.support.auth import ALL_SCOPES, TEST_CLIENT, api_client, bearer
from tests.support.processes import free_port


def _claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """A good token's claims with ``overrides``; an override of None removes the claim."""
    claims = {**access_claims(settings, TEST_CLIENT, ALL_SCOPES, ttl_s=300), **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def _signed(settings: Settings, **overrides: Any) -> str:
    key, kid = signing_key(settings)
    return jwt.encode(_claims(settings, **overrides), key, algorithm="RS256", headers={"kid": kid})


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh command API that sends no token of its own."""
    app = create_command_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c,
    ):
        yield c


@pytest.fixture
async def query_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """A fresh query API."""
    app = create_query_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_request_without_a_token_is_a_401_bearer_challenge(
    anonymous: httpx.AsyncClient,
) -> None:
    response = await anonymous.post("/applications", json=valid_body())

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="prequal"'
    assert response.headers["content-type"] == "application/problem+json"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs256_with_public_key(settings: Settings) -> str:
    key, kid = signing_key(settings)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT itself refuses to HMAC with a PEM key; an attacker's library would not.
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
    payload = _b64(_claims(settings))
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _tampered(settings: Settings) -> str:
    header, _payload, signature = _signed(settings).split(".")
    return f"{header}.{_b64(_claims(settings, sub='admin', azp='admin'))}.{signature}"


def _foreign_key_token(settings: Settings) -> str:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(settings), foreign, algorithm="RS256", headers={"kid": "foreign"})


BAD_TOKENS: dict[str, Callable[[Settings], str]] = {
    "expired": lambda s: _signed(s, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "not yet valid": lambda s: _signed(s, nbf=int(time.time()) + 3600),
    "wrong issuer": lambda s: _signed(s, iss="https://evil.example"),
    "wrong audience": lambda s: _signed(s, aud="another-api"),
    "no expiry": lambda s: _signed(s, exp=None),
    "alg none": lambda s: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(s))}.",
    "HS256 keyed with the public key": _hs256_with_public_key,
    "tampered payload": _tampered,
    "not a JWT": lambda _s: "not-a-token",
    "unknown kid": _foreign_key_token,
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_a_bad_token_is_a_401_that_does_not_say_why(
    anonymous: httpx.AsyncClient, settings: Settings, kind: str
) -> None:
    token = BAD_TOKENS[kind](settings)

    response = await anonymous.post("/applications", json=valid_body(), headers=_auth(token))

    assert response.status_code == 401, kind
    assert response.headers["www-authenticate"] == 'Bearer realm="prequal", error="invalid_token"'
    assert response.json()["detail"] == "The bearer token is not valid."


async def test_a_token_signed_by_a_rotated_in_key_is_accepted_once_the_jwks_publishes_it(
    settings: Settings,
) -> None:
    fresh = settings.model_copy(update={"auth_jwks_refresh_s": 0})
    app = create_command_app(fresh)
    old, old_kid = signing_key(fresh)
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_token = jwt.encode(
        _claims(fresh), new, algorithm="RS256", headers={"kid": public_jwk(new)["kid"]}
    )
    old_token = jwt.encode(_claims(fresh), old, algorithm="RS256", headers={"kid": old_kid})
    directory = development_jwks(fresh).parent
    try:
        async with api_client(app, fresh) as c:
            before = await c.post("/applications", json=valid_body(), headers=_auth(new_token))
            write_keys(directory, [new, old])  # the rotation: new signs, old still published
            after = await c.post("/applications", json=valid_body(), headers=_auth(new_token))
            still_old = await c.post("/applications", json=valid_body(), headers=_auth(old_token))
    finally:
        write_keys(directory, [old])

    assert before.status_code == 401, "an unknown kid, before the JWKS publishes it"
    assert after.status_code == 202
    assert still_old.status_code == 202, "tokens of the old key stay valid while published"


async def test_a_token_without_the_scope_is_a_403_naming_it(
    anonymous: httpx.AsyncClient, settings: Settings, query_app: FastAPI
) -> None:
    read_only = bearer(settings, scopes=["applications:read"])
    write_only = bearer(settings, scopes=["applications:write"])
    some_id = "00000000-0000-4000-8000-000000000000"

    post = await anonymous.post("/applications", json=valid_body(), headers=read_only)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=query_app), base_url="http://q"
    ) as q:
        get = await q.get(f"/applications/{some_id}/status", headers=write_only)

    assert post.status_code == 403
    assert "insufficient_scope" in post.headers["www-authenticate"]
    assert 'scope="applications:write"' in post.headers["www-authenticate"]
    assert get.status_code == 403
    assert 'scope="applications:read"' in get.headers["www-authenticate"]


async def test_one_client_cannot_read_another_clients_application_and_learns_nothing(
    client: httpx.AsyncClient, settings: Settings, query_app: FastAPI
) -> None:
    accepted = (await client.post("/applications", json=valid_body())).json()["application_id"]
    unknown = "00000000-0000-4000-8000-000000000000"

    async with api_client(query_app, settings, client="other-channel") as other:
        theirs = await other.get(f"/applications/{accepted}/status")
        nobodys = await other.get(f"/applications/{unknown}/status")
    async with api_client(query_app, settings) as owner:
        mine = await owner.get(f"/applications/{accepted}/status")

    assert mine.status_code == 200
    assert theirs.status_code == nobodys.status_code == 404

    def shape(response: httpx.Response) -> dict[str, Any]:
        body = response.json()
        return {k: v for k, v in body.items() if k not in {"instance", "correlation_id", "detail"}}

    assert shape(theirs) == shape(nobodys)
    assert theirs.json()["detail"].replace(accepted, "<id>") == nobodys.json()["detail"].replace(
        unknown, "<id>"
    )


async def test_two_clients_may_use_the_same_idempotency_key(
    settings: Settings, db: psycopg.Connection
) -> None:
    app = create_command_app(settings)
    key = {"Idempotency-Key": "shared-key-1"}
    async with (
        app.router.lifespan_context(app),
        api_client(app, settings, client="channel-a") as a,
        api_client(app, settings, client="channel-b") as b,
    ):
        first = await a.post("/applications", json=valid_body(), headers=key)
        second = await b.post("/applications", json=valid_body(), headers=key)
        replay = await a.post("/applications", json=valid_body(), headers=key)

    assert first.status_code == second.status_code == replay.status_code == 202
    assert first.json()["application_id"] != second.json()["application_id"]
    assert "idempotent-replayed" not in second.headers
    assert replay.json()["application_id"] == first.json()["application_id"]
    rows = db.execute("SELECT client_id FROM applications ORDER BY client_id").fetchall()
    assert rows == [("channel-a",), ("channel-b",)]


async def test_every_answer_under_the_limit_carries_the_ratelimit_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/applications", json=valid_body())

    assert response.status_code == 202
    assert response.headers["ratelimit-policy"].startswith('"default";q=')
    assert response.headers["ratelimit"].startswith('"default";r=')


async def test_the_keys_server_not_answering_is_a_503_not_a_401(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"auth_jwks_url": f"http://127.0.0.1:{free_port()}/jwks.json"}
    )
    app = create_command_app(unreachable)
    async with api_client(app, settings) as c:
        response = await c.post("/applications", json=valid_body())

    assert response.status_code == 503
    assert "identity provider" in response.json()["detail"]


def test_production_refuses_to_run_without_an_https_jwks_url() -> None:
    with pytest.raises(ValueError, match="PREQUAL_AUTH_JWKS_URL"):
        Settings(environment=Environment.PRODUCTION, pg_password="a-real-secret-1")


def test_production_refuses_symmetric_algorithms() -> None:
    with pytest.raises(ValueError, match="PREQUAL_AUTH_ALGORITHMS"):
        Settings(auth_algorithms="RS256,HS256")


def test_the_development_issuer_refuses_to_run_in_production(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})

    with pytest.raises(DevelopmentIssuerRefused):
        development_jwks(production)


async def test_the_openapi_documents_declare_the_bearer_scheme_and_each_operations_scope(
    client: httpx.AsyncClient, query_app: FastAPI
) -> None:
    command = (await client.get("/openapi.json")).json()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=query_app), base_url="http://q"
    ) as q:
        query = (await q.get("/openapi.json")).json()

    for document, path, method, scope in (
        (command, "/applications", "post", "applications:write"),
        (query, "/applications/{application_id}/status", "get", "applications:read"),
    ):
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        operation = document["paths"][path][method]
        assert operation["security"] == [{"bearerAuth": [scope]}]
        for status in ("401", "403", "429"):
            assert (
                "example" in operation["responses"][status]["content"]["application/problem+json"]
            ), status
    assert command["paths"]["/health"]["get"]["security"] == []  # explicitly no token
