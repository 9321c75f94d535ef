"""OAuth 2.0 bearer tokens (RFC 6750): JWTs (RFC 7519) verified against the issuer's JWKS.

Verification is PyJWT's, never hand-written: the signature with a key from the JWKS
(cached, fetched again when a token names an unknown ``kid``, so keys can be rotated),
then ``iss``, ``aud``, ``exp`` and ``nbf`` (within ``PREQUAL_AUTH_LEEWAY_S``), with an
allow-list of asymmetric algorithms (``alg: none`` and HS256 keyed with the public key
are refused by name). The calling client is ``azp``, or ``sub`` for a client-credentials
token; its scopes are the ``scope`` claim (space separated) or ``scp`` (a list).

A refused token is a 401 whose body says only that the token is not valid (RFC 6750
allows no more); why is logged. A missing scope is a 403. The keys' server not
answering while a key is needed is a 503, not a 401: the token may well be good.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from runtime.dev_issuer import development_jwks
from runtime.errors import DependencyUnavailable, Forbidden, Unauthenticated
from runtime.logging import get_logger
from runtime.openapi import amend_operations
from runtime.problems import PROBLEM_CONTENT
from runtime.settings import Settings

_log = get_logger(__name__)

#: How long a verified token is trusted without checking it again, in seconds: a key
#: withdrawn from the JWKS stops its tokens within this time.
_REMEMBER_S = 60.0
_REMEMBER_AT_MOST = 4096

#: The OpenAPI name of the bearer scheme; operations list their scopes under it.
SCHEME = "bearerAuth"
BEARER = HTTPBearer(
    scheme_name=SCHEME,
    bearerFormat="JWT",
    description="An OAuth 2.0 access token (JWT) from the lender's identity provider,"
    " verified against its JWKS. Development: `prequal-ops token`.",
    auto_error=False,
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: the client's id (``azp`` or ``sub``) and the scopes its token grants."""

    client_id: str
    scopes: frozenset[str]
    #: Seconds until the token expires (at verification).
    expires_in_s: float = 0.0


class _ThrottledJWKClient(PyJWKClient):
    """PyJWT's JWKS client, refreshing on an unknown ``kid`` at most every ``every_s``.

    A stream of made-up ``kid`` values must not become a stream of requests to the
    identity provider.
    """

    every_s = 10.0
    _refreshed_at = -1e9
    # Requests verify in threads: one fetches while the others wait for its answer,
    # rather than skip the refresh and refuse a token the new JWKS would accept.
    _refresh_lock = threading.Lock()

    def get_signing_keys(self, refresh: bool = False) -> list[jwt.PyJWK]:
        """The JWKS' signing keys; a refresh is skipped if one ran in the last ``every_s``."""
        if not refresh:
            return super().get_signing_keys()
        with self._refresh_lock:
            if time.monotonic() - self._refreshed_at < self.every_s:
                return super().get_signing_keys()
            self._refreshed_at = time.monotonic()
            return super().get_signing_keys(refresh=True)


class _JwksFile:
    """The development issuer's JWKS, read from its file (PyJWT's client takes https only).

    Read again on an unknown ``kid``, at most every ``every_s``, like the URL client: a
    rotation in development works the same way.
    """

    def __init__(self, path: Path, every_s: float) -> None:
        self._path = path
        self._every_s = every_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._read_at = -1e9
        self._lock = threading.Lock()

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        """The key named by the token's ``kid``; PyJWKClientError if there is none."""
        kid = jwt.get_unverified_header(token).get("kid")
        with self._lock:  # as in _ThrottledJWKClient: concurrent first uses wait, not fail
            if kid not in self._keys and time.monotonic() - self._read_at >= self._every_s:
                self._read_at = time.monotonic()
                jwks = jwt.PyJWKSet.from_json(self._path.read_text())
                self._keys = {key.key_id: key for key in jwks.keys if key.key_id}
        if kid not in self._keys:
            raise PyJWKClientError(f"no signing key with kid {kid!r}")
        return self._keys[kid]


class TokenVerifier:
    """Turns a bearer token into a :class:`Principal`, or refuses it."""

    def __init__(self, settings: Settings) -> None:
        self._jwks: _ThrottledJWKClient | _JwksFile
        if settings.auth_jwks_url:
            client = _ThrottledJWKClient(
                settings.auth_jwks_url, cache_keys=True, lifespan=300, timeout=2
            )
            client.every_s = settings.auth_jwks_refresh_s
            self._jwks = client
        else:  # development and tests only: the settings refuse this in production
            self._jwks = _JwksFile(development_jwks(settings), settings.auth_jwks_refresh_s)
        self._algorithms = settings.auth_algorithm_list
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._leeway = settings.auth_leeway_s
        self._known_kids: set[str] = set()
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def verify_async(self, token: str) -> Principal:
        """:meth:`verify`, off the event loop when the keys must be fetched first.

        A token verified in the last :data:`_REMEMBER_S` seconds (and not expired) is not
        verified again: a channel sends the same token with every request for its
        lifetime, and a signature check per request was the API's largest CPU cost.
        """
        now = time.monotonic()
        remembered = self._verified.get(token)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        principal = await self._verify_async(token)
        if len(self._verified) >= _REMEMBER_AT_MOST:
            self._verified.clear()  # bounded: many distinct tokens only cost re-verifying
        self._verified[token] = (principal, now + min(_REMEMBER_S, principal.expires_in_s))
        return principal

    async def _verify_async(self, token: str) -> Principal:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            kid = None
        if kid in self._known_kids:
            return self.verify(token)
        return await asyncio.to_thread(self.verify, token)

    def verify(self, token: str) -> Principal:
        """The token's principal.

        Raises :class:`~runtime.errors.Unauthenticated` for any token that does not
        verify, and :class:`~runtime.errors.DependencyUnavailable` when the JWKS cannot
        be fetched.
        """
        try:
            if jwt.get_unverified_header(token).get("alg") not in self._algorithms:
                raise jwt.InvalidAlgorithmError("algorithm not allowed")
            key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (PyJWKClientConnectionError, OSError) as error:
            _log.warning("auth.jwks_unavailable", error=type(error).__name__)
            raise DependencyUnavailable("identity provider keys") from error
        except jwt.PyJWTError as error:
            _log.info("auth.token_refused", reason=type(error).__name__)
            raise Unauthenticated(invalid_token=True) from error
        if key.key_id:
            self._known_kids.add(key.key_id)
        expires_in = float(claims["exp"]) - time.time()
        return Principal(_client_of(claims), _scopes_of(claims), expires_in)


def _client_of(claims: dict[str, Any]) -> str:
    client = claims.get("azp") or claims["sub"]
    if not isinstance(client, str) or not client:
        raise Unauthenticated(invalid_token=True)
    return client


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    listed = claims.get("scp")
    if isinstance(listed, list):
        return frozenset(s for s in listed if isinstance(s, str))
    return frozenset()


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def requires(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's :class:`Principal`, if its token has ``scope``.

    Raises :class:`~runtime.errors.Unauthenticated` (401) without a valid bearer token and
    :class:`~runtime.errors.Forbidden` (403) without the scope. The app's verifier is
    ``app.state.tokens``.
    """

    async def principal(request: Request, credentials: Credentials) -> Principal:
        if credentials is None:
            raise Unauthenticated(invalid_token=False)
        verifier: TokenVerifier = request.app.state.tokens
        found = await verifier.verify_async(credentials.credentials)
        if scope not in found.scopes:
            raise Forbidden(scope)
        return found

    principal.__name__ = f"requires_{scope.replace(':', '_')}"
    return principal


def document_scopes(app: FastAPI, scopes: dict[str, str]) -> None:
    """List each operation's scope under the bearer scheme in the OpenAPI document.

    ``scopes`` maps an operationId to the scope it needs (OpenAPI 3.1 allows scopes for
    any scheme, not only OAuth 2.0 flows).
    """

    def scope(operation: dict[str, Any]) -> None:
        if operation.get("operationId") in scopes:
            operation["security"] = [{SCHEME: [scopes[operation["operationId"]]]}]

    amend_operations(app, scope)


def auth_responses(scope: str) -> dict[int | str, dict[str, Any]]:
    """The documented 401, 403 and 429 answers of an operation needing ``scope``."""

    def problem(status: int, title: str, slug: str, detail: str) -> dict[str, Any]:
        example = {
            "type": f"urn:prequal:problem:{slug}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "/applications",
            "correlation_id": "6f1c2b0e-3d2a-4c1b-9e8f-7a6b5c4d3e2f",
        }
        content = {
            "application/problem+json": {
                **PROBLEM_CONTENT["content"]["application/problem+json"],
                "example": example,
            }
        }
        return {"content": content}

    return {
        401: {
            "description": "No bearer token, or one that is not valid (`WWW-Authenticate:"
            ' Bearer realm="prequal", error="invalid_token"`).',
            **problem(401, "Unauthorized", "unauthorized", "The bearer token is not valid."),
        },
        403: {
            "description": f"The token lacks the scope `{scope}`.",
            **problem(403, "Forbidden", "forbidden", f"The token lacks the scope {scope}."),
        },
        429: {
            "description": "This client is over its rate: `Retry-After`, `RateLimit` and"
            " `RateLimit-Policy` say when to come back.",
            **problem(
                429,
                "Too many requests",
                "too-many-requests",
                "This client is over its rate; retry after 1 s.",
            ),
        },
    }
