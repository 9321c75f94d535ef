"""The query API's composition root: ``create_app(settings)``, reads the projection only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Path, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from query_api.models import ApplicationStatusResponse
from runtime import metrics
from runtime.auth import Principal, TokenVerifier, auth_responses, document_scopes, requires
from runtime.breaker import DatabaseBreaker
from runtime.db import create_engine
from runtime.deadline import Budget, bounded_connection
from runtime.docs_ui import install_docs
from runtime.errors import NotFound
from runtime.health_routes import health_router
from runtime.limits import install_request_limits
from runtime.middleware import install_observability
from runtime.problems import PROBLEM_CONTENT, install_error_handlers
from runtime.rate_limit import RateLimiter
from runtime.settings import Settings
from schema.tables import application_status

READ_SCOPE = "applications:read"


class StatusReader:
    """Reads one application's status from the projection, within the request's deadline.

    Behind the circuit breaker; raises :class:`~runtime.errors.DependencyUnavailable` when
    the database does not answer within ``deadline_s`` (or the breaker is open), and
    :class:`~runtime.errors.NotFound` for an unknown id.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        breaker: DatabaseBreaker,
        limiter: RateLimiter,
        deadline_s: float,
    ) -> None:
        self._engine = engine
        self._breaker = breaker
        self._limiter = limiter
        self._deadline_s = deadline_s

    async def __call__(
        self, application_id: UUID, client_id: str
    ) -> tuple[ApplicationStatusResponse, dict[str, str]]:
        """The status of ``application_id`` if ``client_id`` submitted it; RateLimit headers.

        Another client's application is not found, exactly like an unknown id: the
        answer must not tell a caller that an id exists. Raises
        :class:`~runtime.errors.TooManyRequests` past the client's rate. The rate and
        the read are one request to the circuit breaker.
        """
        query = select(*_STATUS_COLUMNS).where(
            application_status.c.application_id == application_id,
            application_status.c.client_id == client_id,
        )
        budget = Budget(self._deadline_s)  # one deadline for the whole request
        async with self._breaker.guard():
            rate = await self._limiter.take(client_id, budget.left())
            async with bounded_connection(self._engine, budget.left()) as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"No application {application_id}.")
        return ApplicationStatusResponse.model_validate(row._mapping), rate


async def _reader(request: Request) -> StatusReader:
    reader: StatusReader = request.app.state.reader
    return reader


Reader = Annotated[StatusReader, Depends(_reader)]
Client = Annotated[Principal, Depends(requires(READ_SCOPE))]
ApplicationId = Annotated[UUID, Path(description="The id returned by POST /applications.")]

_STATUS_COLUMNS = (
    application_status.c.application_id,
    application_status.c.status,
    application_status.c.cibil_score,
    application_status.c.submitted_at,
    application_status.c.decided_at,
)


def create_app(settings: Settings) -> FastAPI:
    """Build the query API; nothing connects until the first request."""
    engine = create_engine(settings, "query-api")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="prequal query API",
        version="1.0.0",
        summary="Read the status of loan prequalification applications.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A redirect to add or drop a slash would be built from the request's Host header.
        redirect_slashes=False,
    )
    breaker = DatabaseBreaker(
        "query-api", settings.db_breaker_threshold, settings.db_breaker_open_s
    )
    limiter = RateLimiter(
        engine, settings.db_deadline_s, settings.rate_limit_per_s, settings.rate_limit_burst
    )
    app.state.reader = StatusReader(engine, breaker, limiter, settings.db_deadline_s)
    app.state.tokens = TokenVerifier(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.breaker = breaker
    install_observability(app, "query-api")
    install_request_limits(app, settings)
    install_error_handlers(app)
    app.include_router(metrics.router)
    app.include_router(health_router("queryApiHealth"))

    @app.get(
        "/applications/{application_id}/status",
        response_model=ApplicationStatusResponse,
        operation_id="getApplicationStatus",
        summary="The application's status: PENDING until decided, then the decision.",
        responses={
            **auth_responses(READ_SCOPE),
            404: {
                "description": "No application of this client has this id (another"
                " client's application is not found either).",
                **PROBLEM_CONTENT,
            },
            422: {"description": "The id is not a UUID.", **PROBLEM_CONTENT},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )
    async def get_status(
        application_id: ApplicationId, caller: Client, read: Reader, response: Response
    ) -> ApplicationStatusResponse:
        status, rate = await read(application_id, caller.client_id)
        response.headers.update(rate)
        return status

    install_docs(app, app.title)
    document_scopes(app, {"getApplicationStatus": READ_SCOPE})
    return app
