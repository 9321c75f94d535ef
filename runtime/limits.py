"""What a request may be: a body of at most a few KiB, JSON, uncoded; CORS when configured.

Request bodies are bounded (413), JSON only and never content-coded (415), checked by
:class:`RequestLimitsMiddleware` as the body streams in. CORS is off unless origins are
configured. :func:`install_request_limits` installs both inside the request context and
documents the 413 and 415 problems on every operation that takes a body.
"""

from __future__ import annotations

import copy
from typing import Any, cast

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.middleware import RequestContextMiddleware, scope_header
from runtime.openapi import amend_operations
from runtime.problems import PROBLEM_CONTENT, send_problem
from runtime.settings import Settings


class BodyLimitExceeded(StarletteHTTPException):
    """The request body is larger than the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes.")


class UnsupportedMediaType(StarletteHTTPException):
    """The request body is not ``application/json`` (415)."""

    def __init__(self) -> None:
        super().__init__(
            415, "The request body must be application/json (UTF-8, charset optional)."
        )


class UnsupportedContentEncoding(StarletteHTTPException):
    """The request body is content-coded (gzip, br, …); only ``identity`` is read (415).

    RFC 9110 §15.5.16 and RFC 7694: the answer names the codings accepted in
    ``Accept-Encoding``. Decoding is refused rather than offered: a body of at most a few
    KiB gains nothing from compression, and a decoder is one more way to exhaust memory.
    """

    def __init__(self, coding: str) -> None:
        super().__init__(
            415,
            f"Content-Encoding {coding!r} is not accepted; send the body uncompressed"
            " (identity).",
            headers={"Accept-Encoding": "identity"},
        )


def is_json_media_type(content_type: str | None) -> bool:
    """Whether ``content_type`` is ``application/json``, with at most a UTF-8 charset."""
    if not content_type:
        return False
    media_type, *params = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() != "charset" or value.strip().strip('"') not in {"utf-8", "utf8"}:
            return False
    return True


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestLimitsMiddleware:
    """Request bodies: at most ``max_body_bytes``, and JSON.

    A Content-Length above the limit is refused before anything is read. The body is
    counted as it streams in as well, so a chunked or lying request cannot get past the
    limit either: the read that crosses it fails with 413. The media type is checked when
    the application reads the body, so only an operation that takes a body answers 415;
    a 404 or 405 stays what it is. Both failures are HTTP exceptions, which FastAPI
    re-raises from a body read and the error handlers render as problems.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = scope_header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(scope, receive, send, BodyLimitExceeded(limit))
            return
        content_type = scope_header(scope, b"content-type")
        coding = (scope_header(scope, b"content-encoding") or "identity").strip().lower()
        if scope["method"] in _BODY_METHODS and coding not in ("", "identity"):
            # Refused before a byte is read: a body that is not what its header says is
            # never accepted, and nothing is decoded.
            await send_problem(scope, receive, send, UnsupportedContentEncoding(coding))
            return
        received = 0
        checked = False

        async def limited_receive() -> Message:
            nonlocal received, checked
            message = await receive()
            if message["type"] != "http.request":
                return message
            # Only a method that carries a body is held to JSON: a file response also
            # calls receive() while streaming (to notice a disconnect), on a GET.
            if not checked and scope["method"] in _BODY_METHODS:
                checked = True
                if not is_json_media_type(content_type):
                    raise UnsupportedMediaType
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyLimitExceeded(limit)
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyLimitExceeded, UnsupportedMediaType) as error:
            # Normally rendered by the error handlers; this covers a read outside them.
            if response_started:
                raise
            await send_problem(scope, receive, send, error)


#: Documented on every operation that takes a request body.
REQUEST_BODY_RESPONSES: dict[str, dict[str, Any]] = {
    "413": {
        "description": "The request body is larger than PREQUAL_HTTP_MAX_BODY_BYTES.",
        **PROBLEM_CONTENT,
    },
    "415": {
        "description": "The request body is not application/json, or is content-coded"
        " (only identity is accepted; see Accept-Encoding).",
        **PROBLEM_CONTENT,
    },
}
#: Headers a browser client sends and may read (CORS).
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Correlation-ID",
    "traceparent",
)
CORS_EXPOSED_HEADERS = (
    "Location",
    "X-Correlation-ID",
    "Idempotent-Replayed",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "WWW-Authenticate",
)


def install_request_limits(app: FastAPI, settings: Settings) -> None:
    """Bound and type-check request bodies of ``app``, and answer CORS when configured.

    The middleware sits inside :class:`~runtime.middleware.RequestContextMiddleware`
    whichever is installed first, so a 413 or 415 carries the correlation id and is logged
    and counted like any other answer. CORS (Starlette's middleware) is added only when
    ``settings.cors_allow_origins`` names origins; without it no CORS header is sent.
    Operations that take a body document the 413 and 415 problems in the OpenAPI document.
    Raises ``RuntimeError`` once the app has started (its middleware stack is built).
    """
    if app.middleware_stack is not None:
        raise RuntimeError("install_request_limits must run before the app starts")
    layers = [Middleware(RequestLimitsMiddleware, max_body_bytes=settings.http_max_body_bytes)]
    if settings.cors_origins:
        # Outside the limits: a preflight is answered without a body check, and a 413
        # or 415 still carries the CORS headers a browser needs to read it.
        layers.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=("GET", "POST"),
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
            ),
        )
    inside = next(
        (
            index + 1
            for index, layer in enumerate(app.user_middleware)
            if cast(object, layer.cls) is RequestContextMiddleware
        ),
        0,
    )
    app.user_middleware[inside:inside] = layers
    _document_body_limits(app)


def _document_body_limits(app: FastAPI) -> None:
    # Here, not in runtime.openapi: that module only applies amendments; each concern
    # documents its own answers through it (as runtime.auth documents the scopes).
    def body_limits(operation: dict[str, Any]) -> None:
        if "requestBody" in operation:
            responses = operation.setdefault("responses", {})
            for code, response in REQUEST_BODY_RESPONSES.items():
                # A copy: later steps (examples) may fill in each response.
                responses.setdefault(code, copy.deepcopy(response))

    amend_operations(app, body_limits)
