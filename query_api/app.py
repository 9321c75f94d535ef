"""The query API's composition root: ``create_app(settings)``, reads the projection only.

It builds the collaborators (engine, circuit breaker, rate limiter, the status reader,
the token verifier), stores them on ``app.state`` for the routes' dependencies, installs
the middlewares and error handlers, and includes the routers: the metrics, the probes
(:mod:`runtime.health_routes`) and ``GET /applications/{id}/status``
(:mod:`query_api.routes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from query_api import routes
from query_api.contract import CONTRACT
from query_api.reader import StatusReader
from query_api.routes import READ_SCOPE
from runtime import metrics
from runtime.auth import TokenVerifier, document_scopes
from runtime.breaker import DatabaseBreaker
from runtime.db import create_engine
from runtime.docs_ui import install_docs
from runtime.health_routes import health_router
from runtime.limits import install_request_limits
from runtime.middleware import install_observability
from runtime.openapi import publish
from runtime.problems import PROBLEM_SCHEMA, install_error_handlers
from runtime.rate_limit import RateLimiter
from runtime.settings import Settings


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
    app.state.settings = settings
    app.state.engine = engine
    app.state.breaker = breaker
    app.state.reader = StatusReader(engine, breaker, limiter, settings.db_deadline_s)
    app.state.tokens = TokenVerifier(settings)
    install_observability(app, "query-api")
    install_request_limits(app, settings)
    install_error_handlers(app)
    app.include_router(metrics.router)
    app.include_router(health_router("queryApiHealth"))
    app.include_router(routes.router)
    install_docs(app, app.title)
    document_scopes(app, {"getApplicationStatus": READ_SCOPE})
    publish(app, CONTRACT, PROBLEM_SCHEMA)
    return app
