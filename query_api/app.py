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
from runtime.db import create_engine, database_errors
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


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


Engine = Annotated[AsyncEngine, Depends(_engine)]
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
    )
    app.state.engine = engine
    install_observability(app, "query-api")
    install_request_limits(app, settings)
    install_health(app, engine, settings.pg_connect_timeout_s, "queryApiHealth")
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
    async def get_status(application_id: ApplicationId, db: Engine) -> ApplicationStatusResponse:
        async with database_errors(), db.connect() as conn:
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

    install_docs(app, app.title)
    return app
