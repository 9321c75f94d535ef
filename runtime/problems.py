"""Problem details (RFC 9457): the one error shape of both APIs, and its rendering.

Every 4xx and 5xx of both APIs is an ``application/problem+json`` body in the shape
:data:`PROBLEM_SCHEMA` describes and :func:`problem_body` builds. The exception handlers
(:func:`install_error_handlers`) render our :class:`~runtime.errors.ProblemError`,
FastAPI's validation errors and Starlette's HTTP exceptions in it; :func:`send_problem`
renders an HTTP exception from an ASGI middleware, where no handler runs. Problem bodies
never echo a PAN unmasked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from runtime.errors import FieldError, ProblemError
from runtime.logging import mask_pan

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


async def send_problem(
    scope: Scope, receive: Receive, send: Send, error: StarletteHTTPException
) -> None:
    """Answer ``error`` as a problem, from an ASGI middleware (outside the handlers).

    ``error`` is an HTTP exception of status 400, 404, 405, 413 or 415 (a ``KeyError``
    for any other); its detail and headers are sent, with the correlation id the request
    context put in ``scope["state"]``, if any.
    """
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
