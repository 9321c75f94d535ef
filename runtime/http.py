"""What both HTTP services share: problem+json errors, correlation ids, request logs.

One error shape (RFC 9457 ``application/problem+json``) for every 4xx and 5xx of both
APIs; every response carries ``X-Correlation-ID``; an unexpected exception becomes a
500 problem without a stack trace or SQL in the body, and is logged in full.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import FieldError, ProblemError
from runtime.health import check_database
from runtime.logging import bind_correlation_id, clear_context, get_logger

CORRELATION_HEADER = "X-Correlation-ID"
PROBLEM_TYPE_BASE = "urn:prequal:problem:"
#: The OpenAPI content of every documented error response.
PROBLEM_CONTENT: dict[str, Any] = {"content": {"application/problem+json": {}}}

HTTP_REQUESTS = Counter(
    "prequal_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "prequal_http_request_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
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
) -> dict[str, Any]:
    """The one error shape of both APIs."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "correlation_id": correlation_id,
    }
    if errors:
        body["errors"] = [
            {"field": e.field, "location": e.location, "message": e.message, "code": e.code}
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
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _log.exception("request.failed", method=scope["method"], path=scope["path"])
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
            HTTP_REQUESTS.labels(self.service, route, scope["method"], str(status)).inc()
            HTTP_SECONDS.labels(self.service, route, scope["method"]).observe(elapsed)
            _log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def install_observability(app: FastAPI, service: str) -> None:
    """Correlation ids, request logs and metrics for ``app``, and its ``GET /metrics``."""
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


def install_health(app: FastAPI, engine: AsyncEngine, timeout_s: float, operation_id: str) -> None:
    """``GET /health``: 200 when the database answers, a 503 problem naming it otherwise."""

    @app.get(
        "/health",
        operation_id=operation_id,
        summary="200 when the database answers, 503 naming it when it does not.",
        responses={503: {"description": "The database is not answering.", **PROBLEM_CONTENT}},
    )
    async def health() -> dict[str, Any]:
        await check_database(engine, timeout_s)
        return {"status": "ok", "checks": {"database": "ok"}}


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve_workers(factory: str, host: str, port: int, workers: int) -> None:
    """Serve the app built by ``factory`` ("module:function") in ``workers`` processes.

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
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn; our middleware writes the request log, not uvicorn."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
