"""The command API's route: ``POST /applications``, answered ``202 Accepted``.

The route reads the body (JSON numbers exactly, :mod:`runtime.exact_json`), the caller
(a token with ``applications:write``), the ``Idempotency-Key`` and ``traceparent``
headers, and hands them to the :class:`~command_api.submit.SubmitApplication` the
composition root stored on ``app.state.submit``. The event's ``traceparent`` is the
request's span when tracing is on, else the client's header.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, status

from command_api.models import ApplicationAccepted, ApplicationRequest
from command_api.submit import IDEMPOTENCY_HEADER, SubmitApplication, SubmitContext
from runtime.auth import Principal, auth_responses, requires
from runtime.dependencies import AppSettings, CorrelationId
from runtime.exact_json import ExactJsonRoute
from runtime.problems import PROBLEM_CONTENT
from runtime.tracing import current_traceparent

WRITE_SCOPE = "applications:write"

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "The same Idempotency-Key is still being processed.", **PROBLEM_CONTENT},
    422: {"description": "A field, or the Idempotency-Key, is invalid.", **PROBLEM_CONTENT},
    503: {
        "description": "The database did not answer within the deadline (or the circuit"
        " breaker is open). `outcome` says what to do: `not_stored` — nothing was stored,"
        " retry; `unknown` — the application may exist once the database is back, retry"
        " only with the same Idempotency-Key. `Retry-After` says when.",
        **PROBLEM_CONTENT,
    },
}


# A coroutine, as in runtime.dependencies: a plain ``def`` would run in the thread pool.
async def get_submit(request: Request) -> SubmitApplication:
    """The submit use case (``app.state.submit``; the benchmark's baseline replaces it)."""
    use_case: SubmitApplication = request.app.state.submit
    return use_case


Submit = Annotated[SubmitApplication, Depends(get_submit)]
Writer = Annotated[Principal, Depends(requires(WRITE_SCOPE))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes a retried POST return the first answer instead of a new application.",
    ),
]
TraceParent = Annotated[str | None, Header(include_in_schema=False)]
#: W3C Trace Context, version 00: anything else is ignored, as the standard asks of a
#: receiver, and never stored.
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def _valid_traceparent(value: str | None) -> str | None:
    return value if value is not None and _TRACEPARENT.fullmatch(value) else None


def _event_traceparent(received: str | None) -> str | None:
    """What the submitted event's outbox row carries on to the pipeline.

    With tracing on, the request's server span (its parent is the client's
    ``traceparent``, which the FastAPI instrumentation read): the trace goes on from this
    API. Off, the client's own header, if valid, so its tracing still follows the event.
    """
    return current_traceparent() or _valid_traceparent(received)


# JSON numbers read exactly, as Decimal (runtime.exact_json.ExactJsonRequest).
router = APIRouter(route_class=ExactJsonRoute)


# No docstring on purpose: FastAPI would publish it as the operation's description.
@router.post(
    "/applications",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ApplicationAccepted,
    responses={**auth_responses(WRITE_SCOPE), **_ERROR_RESPONSES},
    operation_id="submitApplication",
    summary="Submit an application; the decision follows asynchronously.",
)
async def submit_application(  # noqa: D103
    body: ApplicationRequest,
    response: Response,
    caller: Writer,
    submit: Submit,
    correlation_id: CorrelationId,
    settings: AppSettings,
    idempotency_key: IdempotencyKey = None,
    traceparent: TraceParent = None,
) -> ApplicationAccepted:
    context = SubmitContext(
        correlation_id, idempotency_key, _event_traceparent(traceparent), caller.client_id
    )
    accepted = await submit(body, context)
    response.headers.update(accepted.rate_limit)
    base_url = settings.query_api_base_url.rstrip("/")
    response.headers["Location"] = f"{base_url}/applications/{accepted.application_id}/status"
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return ApplicationAccepted(application_id=accepted.application_id)
