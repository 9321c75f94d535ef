"""The command API's composition root: ``create_app(settings)``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response, status

from command_api.models import ApplicationAccepted, ApplicationRequest
from command_api.submit import IDEMPOTENCY_HEADER, SubmitApplication, SubmitContext
from runtime import metrics
from runtime.auth import Principal, TokenVerifier, auth_responses, document_scopes, requires
from runtime.breaker import DatabaseBreaker
from runtime.db import create_engine
from runtime.docs_ui import install_docs
from runtime.exact_json import ExactJsonRoute
from runtime.health_routes import health_router
from runtime.limits import install_request_limits
from runtime.middleware import install_observability
from runtime.problems import PROBLEM_CONTENT, install_error_handlers
from runtime.rate_limit import RateLimiter
from runtime.settings import Settings

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


# Dependencies are coroutines: FastAPI would run a plain ``def`` in its thread pool,
# two thread hops per request on the hot path.
async def _submit(request: Request) -> SubmitApplication:
    use_case: SubmitApplication = request.app.state.submit
    return use_case


async def _correlation_id(request: Request) -> str:
    value: str = request.scope["state"]["correlation_id"]
    return value


Submit = Annotated[SubmitApplication, Depends(_submit)]
Writer = Annotated[Principal, Depends(requires(WRITE_SCOPE))]
CorrelationId = Annotated[str, Depends(_correlation_id)]
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


def create_app(settings: Settings) -> FastAPI:
    """Build the command API; nothing connects until the first request."""
    engine = create_engine(settings, "command-api")
    base_url = settings.query_api_base_url.rstrip("/")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="prequal command API",
        version="1.0.0",
        summary="Submit loan prequalification applications.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A redirect to add or drop a slash would be built from the request's Host
        # header: a spoofed Host would send the client (and its PAN) elsewhere.
        redirect_slashes=False,
    )
    # JSON numbers read exactly, as Decimal (runtime.exact_json.ExactJsonRequest).
    app.router.route_class = ExactJsonRoute
    breaker = DatabaseBreaker(
        "command-api", settings.db_breaker_threshold, settings.db_breaker_open_s
    )
    limiter = RateLimiter(
        engine, settings.db_deadline_s, settings.rate_limit_per_s, settings.rate_limit_burst
    )
    app.state.submit = SubmitApplication(
        engine,
        settings.topic_submitted,
        timedelta(seconds=settings.idempotency_key_ttl_s),
        breaker,
        settings.db_deadline_s,
        limiter,
    )
    app.state.tokens = TokenVerifier(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.breaker = breaker
    install_observability(app, "command-api")
    install_request_limits(app, settings)
    install_error_handlers(app)
    app.include_router(metrics.router)
    app.include_router(health_router("commandApiHealth"))

    @app.post(
        "/applications",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ApplicationAccepted,
        responses={**auth_responses(WRITE_SCOPE), **_ERROR_RESPONSES},
        operation_id="submitApplication",
        summary="Submit an application; the decision follows asynchronously.",
    )
    async def submit_application(
        body: ApplicationRequest,
        response: Response,
        caller: Writer,
        submit: Submit,
        correlation_id: CorrelationId,
        idempotency_key: IdempotencyKey = None,
        traceparent: TraceParent = None,
    ) -> ApplicationAccepted:
        context = SubmitContext(
            correlation_id, idempotency_key, _valid_traceparent(traceparent), caller.client_id
        )
        accepted = await submit(body, context)
        response.headers.update(accepted.rate_limit)
        response.headers["Location"] = f"{base_url}/applications/{accepted.application_id}/status"
        if accepted.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return ApplicationAccepted(application_id=accepted.application_id)

    install_docs(app, app.title)
    document_scopes(app, {"submitApplication": WRITE_SCOPE})
    return app
