"""The query API's composition root: ``create_app(settings)``, reads the projection only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Path, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from query_api.models import ApplicationStatusResponse
from runtime.breaker import DatabaseBreaker
from runtime.db import create_engine
from runtime.deadline import bounded_connection
from runtime.docs_ui import install_docs
from runtime.errors import NotFound
from runtime.http import (
    PROBLEM_CONTENT,
    install_error_handlers,
    install_health,
    install_observability,
    install_request_limits,
)
from runtime.settings import Settings
from schema.tables import application_status


class StatusReader:
    """Reads one application's status from the projection, within the request's deadline.

    Behind the circuit breaker; raises :class:`~runtime.errors.DependencyUnavailable` when
    the database does not answer within ``deadline_s`` (or the breaker is open), and
    :class:`~runtime.errors.NotFound` for an unknown id.
    """

    def __init__(self, engine: AsyncEngine, breaker: DatabaseBreaker, deadline_s: float) -> None:
        self._engine = engine
        self._breaker = breaker
        self._deadline_s = deadline_s

    async def __call__(self, application_id: UUID) -> ApplicationStatusResponse:
        """The status of ``application_id``."""
        async with (
            self._breaker.guard(),
            bounded_connection(self._engine, self._deadline_s) as conn,
        ):
            row = (
                await conn.execute(
                    select(*_STATUS_COLUMNS).where(
                        application_status.c.application_id == application_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"No application {application_id}.")
        return ApplicationStatusResponse.model_validate(row._mapping)


async def _reader(request: Request) -> StatusReader:
    reader: StatusReader = request.app.state.reader
    return reader


Reader = Annotated[StatusReader, Depends(_reader)]
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
    app.state.reader = StatusReader(engine, breaker, settings.db_deadline_s)
    install_observability(app, "query-api")
    install_request_limits(app, settings)
    install_health(app, engine, breaker, settings.health_deadline_s, "queryApiHealth")
    install_error_handlers(app)

    @app.get(
        "/applications/{application_id}/status",
        response_model=ApplicationStatusResponse,
        operation_id="getApplicationStatus",
        summary="The application's status: PENDING until decided, then the decision.",
        responses={
            404: {"description": "No application has this id.", **PROBLEM_CONTENT},
            422: {"description": "The id is not a UUID.", **PROBLEM_CONTENT},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )
    async def get_status(application_id: ApplicationId, read: Reader) -> ApplicationStatusResponse:
        return await read(application_id)

    install_docs(app, app.title)
    return app
