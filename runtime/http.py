"""What both HTTP services share: problem+json errors, correlation ids, request logs.

One error shape (RFC 9457 ``application/problem+json``) for every 4xx and 5xx of both
APIs; every response carries ``X-Correlation-ID``; an unexpected exception becomes a
500 problem without a stack trace or SQL in the body, and is logged in full. Problem
bodies never echo a PAN unmasked. Request bodies are bounded (413) and JSON only (415);
CORS is off unless origins are configured.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.breaker import DatabaseBreaker
from runtime.errors import DependencyUnavailable, FieldError, ProblemError
from runtime.health import check_database
from runtime.logging import bind_correlation_id, clear_context, get_logger, mask_pan
from runtime.openapi import amend_operations
from runtime.settings import Settings

CORRELATION_HEADER = "X-Correlation-ID"
PROBLEM_TYPE_BASE = "urn:prequal:problem:"
#: The JSON Schema of the problem shape that :func:`problem_body` builds.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: the one error shape of both APIs.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance", "correlation_id"],
    "properties": {
        "type": {"type": "string", "description": f"{PROBLEM_TYPE_BASE}<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request's path."},
        "correlation_id": {
            "type": ["string", "null"],
            "description": "Also in the X-Correlation-ID response header.",
        },
        "outcome": {
            "type": "string",
            "enum": ["not_stored", "unknown"],
            "description": "503 on POST /applications only: not_stored (nothing was"
            " stored; retry) or unknown (the commit was sent and not answered; the"
            " application may exist: retry only with the same Idempotency-Key).",
        },
        "errors": {
            "type": "array",
            "description": "Validation errors only: one entry per invalid input.",
            "items": {
                "type": "object",
                "required": ["field", "location", "message", "code"],
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "string", "enum": ["body", "path", "query", "header"]},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}
#: The OpenAPI content of every documented error response (the docs add an example).
PROBLEM_CONTENT: dict[str, Any] = {
    "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
}

HTTP_REQUESTS = Counter(
    "prequal_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "prequal_http_request_duration_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
#: Methods counted under their own name; any other (clients may send any token) is
#: "OTHER", so a client can neither grow the label set nor put data into a label.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_log = get_logger(__name__)


def problem_body(
    *,
    status: int,
    title: str,
    detail: str,
    slug: str,
    instance: str,
    correlation_id: str | None,
    errors: Sequence[FieldError] = (),
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one error shape of both APIs.

    Whatever of the client's input it repeats (the path, field names) is PAN-masked: an
    error body is logged and stored by clients and proxies as freely as a log line.
    """
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": mask_pan(detail),
        "instance": mask_pan(instance),
        "correlation_id": correlation_id,
    }
    if extensions:
        body.update(extensions)
    if errors:
        body["errors"] = [
            {
                "field": mask_pan(e.field),
                "location": e.location,
                "message": mask_pan(e.message),
                "code": e.code,
            }
            for e in errors
        ]
    return body


class ProblemResponse(Response):
    """An ``application/problem+json`` response."""

    media_type = "application/problem+json"

    def render(self, content: Any) -> bytes:
        """Serialise the problem body."""
        return orjson.dumps(content)


def _correlation_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("correlation_id")
    return value if isinstance(value, str) else None


def problem_response(request: Request, error: ProblemError) -> ProblemResponse:
    """Render one of our errors."""
    body = problem_body(
        status=error.status,
        title=error.title,
        detail=error.detail,
        slug=error.slug,
        instance=request.url.path,
        correlation_id=_correlation_id_of(request),
        errors=error.errors,
        extensions=error.extensions,
    )
    return ProblemResponse(body, status_code=error.status, headers=error.headers)


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        location = loc[0] if loc else "body"
        kind = str(err.get("type", "invalid"))
        if kind == "json_invalid":
            errors.append(
                FieldError(
                    "body",
                    f"Malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse')}",
                    "body",
                    kind,
                )
            )
            continue
        path = ".".join(loc[1:]) or location
        message = str(err.get("msg", "Invalid value"))
        if kind == "missing":
            message = f"{path} is required"
        elif kind == "extra_forbidden":
            message = f"{path} is not a known field"
        errors.append(FieldError(path, message, location, kind))
    return errors


_STATUS_TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` in the one problem shape."""

    @app.exception_handler(ProblemError)
    async def _ours(request: Request, exc: ProblemError) -> Response:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = _field_errors(exc)
        names = ", ".join(sorted({e.field for e in errors}))
        return problem_response(
            request,
            ProblemError(
                422, "Validation failed", f"Invalid fields: {names}", "validation-error", errors
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        unparsable = _unparsable_body(exc)
        if unparsable is not None:
            return problem_response(request, unparsable)
        title = _STATUS_TITLES.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(
            request,
            ProblemError(
                exc.status_code,
                title,
                detail,
                title.lower().replace(" ", "-"),
                headers=dict(exc.headers or {}),
            ),
        )


def _unparsable_body(exc: StarletteHTTPException) -> ProblemError | None:
    """A body FastAPI could not parse as JSON, as the 422 every other malformed JSON gets.

    FastAPI answers a ``JSONDecodeError`` with a validation error, but any other failure
    to parse the body (bytes that are not UTF-8, nesting deeper than Python's recursion
    limit) with a bare 400 whose cause is that failure.
    """
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        reason = "the body is not UTF-8 text"
    elif isinstance(cause, RecursionError):
        reason = "nested too deeply"
    else:
        reason = "cannot parse"
    return ProblemError(
        422,
        "Validation failed",
        "Invalid fields: body",
        "validation-error",
        [FieldError("body", f"Malformed JSON: {reason}", "body", "json_invalid")],
    )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


class ExactJsonRequest(Request):
    """A request whose JSON numbers are read exactly, as :class:`~decimal.Decimal`.

    The standard parser turns ``75000.10`` into a float (inexact) and refuses an integer
    of more than 4,300 digits (Python's guard against quadratic int parsing), so a valid
    JSON body got "cannot parse" instead of a 422 naming the field. Every number is a
    Decimal here; the models decide what is acceptable. ``NaN`` and ``Infinity`` are not
    JSON and stay unparsable.
    """

    async def json(self) -> Any:
        """The body parsed as JSON, numbers as Decimal."""
        if not hasattr(self, "_json"):
            self._json = json.loads(
                await self.body(),
                parse_int=Decimal,
                parse_float=Decimal,
                parse_constant=_not_json,
            )
        return self._json


class ExactJsonRoute(APIRoute):
    """An API route that parses its JSON body with :class:`ExactJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, given an :class:`ExactJsonRequest`."""
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact


class RequestContextMiddleware:
    """Correlation id in and out, one log line per request, and the last-resort 500.

    A pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware). It sits
    outside the routing so that even an unexpected exception is answered in the problem
    shape with the correlation id, and never with a stack trace.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-correlation-id")
        correlation_id = (
            incoming if incoming and _CORRELATION_ID.match(incoming) else str(uuid.uuid4())
        )
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        clear_context()
        bind_correlation_id(correlation_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", correlation_id.encode()))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    # A status changes (PENDING, then decided) and an error is of its
                    # moment: no cache may answer with a copy (RFC 9111 §5.2.2.5).
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            # The class and where it was raised, never the message: a driver's message
            # carries the statement's parameters, the applicant's data among them.
            _log.error(
                "request.failed",
                method=scope["method"],
                path=scope["path"],
                error_type=f"{type(error).__module__}.{type(error).__qualname__}",
                raised_at=_frames(error),
            )
            if response_started:
                raise
            body = problem_body(
                status=500,
                title="Internal server error",
                detail="The server could not complete the request; it has been logged.",
                slug="internal-error",
                instance=scope["path"],
                correlation_id=correlation_id,
            )
            await ProblemResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The route template, not the path: ids in paths would explode the label set.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            HTTP_REQUESTS.labels(self.service, route, method, str(status)).inc()
            HTTP_SECONDS.labels(self.service, route, method).observe(elapsed)
            _log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


def _frames(error: BaseException) -> list[str]:
    """Where ``error`` was raised, as ``file:line function`` entries (no values)."""
    return [
        f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(error.__traceback__)[-8:]
    ]


class HeadAsGetMiddleware:
    """``HEAD`` answers like ``GET`` without the body (RFC 9110 §9.3.2), on every route.

    FastAPI registers ``GET`` routes for ``GET`` only; load balancers and uptime probes
    use ``HEAD``. The request is routed as a ``GET`` (so ``HEAD`` is allowed exactly where
    ``GET`` is: elsewhere the answer is the same 405) and the body is dropped on the way
    out, its ``Content-Length`` kept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


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
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _problem(scope, receive, send, BodyLimitExceeded(limit))
            return
        content_type = _header(scope, b"content-type")
        coding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if scope["method"] in _BODY_METHODS and coding not in ("", "identity"):
            # Refused before a byte is read: a body that is not what its header says is
            # never accepted, and nothing is decoded.
            await _problem(scope, receive, send, UnsupportedContentEncoding(coding))
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
            await _problem(scope, receive, send, error)


async def _problem(
    scope: Scope, receive: Receive, send: Send, error: StarletteHTTPException
) -> None:
    title = _STATUS_TITLES[error.status_code]
    body = problem_body(
        status=error.status_code,
        title=title,
        detail=str(error.detail),
        slug=title.lower().replace(" ", "-"),
        instance=scope["path"],
        correlation_id=scope.get("state", {}).get("correlation_id"),
    )
    response = ProblemResponse(body, status_code=error.status_code, headers=error.headers)
    await response(scope, receive, send)


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

    The middleware sits inside :class:`RequestContextMiddleware` whichever is installed
    first, so a 413 or 415 carries the correlation id and is logged and counted like any
    other answer. CORS (Starlette's middleware) is added only when
    ``settings.cors_allow_origins`` names origins; without it no CORS header is sent.
    Operations that take a body document the 413 and 415 problems in the OpenAPI document.
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
    def body_limits(operation: dict[str, Any]) -> None:
        if "requestBody" in operation:
            responses = operation.setdefault("responses", {})
            for code, response in REQUEST_BODY_RESPONSES.items():
                # A copy: later steps (examples) may fill in each response.
                responses.setdefault(code, copy.deepcopy(response))

    amend_operations(app, body_limits)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def install_observability(app: FastAPI, service: str) -> None:
    """Correlation ids, request logs and metrics for ``app``, and its ``GET /metrics``."""
    # Innermost, whatever is installed later: a HEAD is logged and counted as a HEAD.
    app.user_middleware.append(Middleware(HeadAsGetMiddleware))
    app.add_middleware(RequestContextMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """The metrics of this process, or of every worker when uvicorn runs several."""
    if MULTIPROC_ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


#: The body of a healthy ``GET /health``.
HEALTH_OK: dict[str, Any] = {
    "status": "ok",
    "checks": {"database": "ok"},
    "circuit_breaker": "closed",
}


def install_health(
    app: FastAPI, engine: AsyncEngine, breaker: DatabaseBreaker, timeout_s: float, operation_id: str
) -> None:
    """``GET /health``: 200 when the database answers, a 503 problem naming it otherwise.

    The check has its own deadline (``timeout_s``, shorter than a request's) and bypasses
    the circuit breaker, whose state it reports: it is how an operator sees the breaker.
    """

    @app.get(
        "/health",
        operation_id=operation_id,
        summary="200 when the database answers, 503 naming it when it does not.",
        responses={
            200: {"content": {"application/json": {"example": HEALTH_OK}}},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )
    async def health() -> dict[str, Any]:
        try:
            await check_database(engine, timeout_s)
        except DependencyUnavailable as error:
            error.extensions = {**error.extensions, "circuit_breaker": breaker.state}
            raise
        return {"status": "ok", "checks": {"database": "ok"}, "circuit_breaker": breaker.state}

    # Readiness is health: may this process be sent requests now.
    app.add_api_route(
        "/readyz",
        health,
        methods=["GET"],
        operation_id=operation_id.replace("Health", "Readiness"),
        summary="Readiness: 200 when the database answers (as /health), 503 naming it if not.",
        responses={
            200: {"content": {"application/json": {"example": HEALTH_OK}}},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )

    @app.get(
        "/livez",
        operation_id=operation_id.replace("Health", "Liveness"),
        summary="Liveness: 200 while the process serves requests, whatever its dependencies do.",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    async def livez() -> dict[str, str]:
        # Answered by the event loop itself: if this cannot answer, only a restart helps;
        # a database outage must never make an orchestrator restart a healthy API.
        return {"status": "ok"}


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


# Our middleware writes the request log, not uvicorn; a stop lets requests finish for 10 s.
_UVICORN: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 10,
}


def serve_workers(factory: str, host: str, port: int, workers: int, keep_alive_s: int) -> None:
    """Serve the app built by ``factory`` ("module:function") in ``workers`` processes.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``).

    One Python process is bound to one core; several workers share the port. Each
    worker keeps its metrics in files under ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
    directory, unless the environment names one) and ``/metrics`` sums them, whichever
    worker answers the scrape.
    """
    created = None
    if MULTIPROC_ENV not in os.environ:
        created = tempfile.mkdtemp(prefix="prequal-metrics-")
        os.environ[MULTIPROC_ENV] = created
    try:
        uvicorn.run(
            factory,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            timeout_keep_alive=keep_alive_s,
            **_UVICORN,
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def serve(app: FastAPI, host: str, port: int, keep_alive_s: int) -> None:
    """Serve ``app`` with uvicorn; our middleware writes the request log, not uvicorn.

    ``keep_alive_s``: seconds an idle client connection stays open
    (``Settings.http_keep_alive_s``).
    """
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=keep_alive_s, **_UVICORN)
