"""The request middlewares of both APIs: the request's context, and HEAD answered as GET.

:class:`RequestContextMiddleware` gives every request a correlation id (``X-Correlation-ID``
in and out), every answer ``Cache-Control: no-store``, one log line and its metrics
(:mod:`runtime.metrics`), and answers an unexpected exception with a 500 problem without a
stack trace or SQL in the body, logged in full. :class:`HeadAsGetMiddleware` routes
``HEAD`` as ``GET``. :func:`install_observability` installs both, in their order, and
OpenTelemetry's server span around them when tracing is on (:mod:`runtime.tracing`).
"""

from __future__ import annotations

import re
import time
import traceback
import uuid

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.logging import bind_correlation_id, clear_context, get_logger
from runtime.metrics import HTTP_REQUESTS, HTTP_SECONDS
from runtime.problems import ProblemResponse, problem_body
from runtime.tracing import instrument_app

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
#: Methods counted under their own name; any other (clients may send any token) is
#: "OTHER", so a client can neither grow the label set nor put data into a label.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_log = get_logger(__name__)


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The value of the request header ``name`` (lowercase bytes), or None if it is absent.

    The first of repeated headers; decoded as Latin-1, as HTTP/1.1 headers are bytes.
    """
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


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
        incoming = scope_header(scope, b"x-correlation-id")
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


def install_observability(app: FastAPI, service: str) -> None:
    """Correlation ids, request logs, request metrics and traces for ``app``, labelled ``service``.

    :class:`RequestContextMiddleware` becomes the outermost middleware so far and
    :class:`HeadAsGetMiddleware` the innermost, whatever is installed later. The
    ``GET /metrics`` route that serves the metrics is :data:`runtime.metrics.router`.
    With tracing on, OpenTelemetry's middleware wraps them all (it rebuilds the stack
    outermost), so the request's log line is written inside its server span and carries
    its trace id.
    """
    # Innermost, whatever is installed later: a HEAD is logged and counted as a HEAD.
    app.user_middleware.append(Middleware(HeadAsGetMiddleware))
    app.add_middleware(RequestContextMiddleware, service=service)
    instrument_app(app)
