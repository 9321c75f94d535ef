"""The command API's composition root: ``create_app(settings)``.

It builds the collaborators (engine, circuit breaker, rate limiter, the submit use case,
the token verifier), stores them on ``app.state`` for the routes' dependencies, installs
the middlewares and error handlers, and includes the routers: the metrics, the probes
(:mod:`runtime.health_routes`) and ``POST /applications`` (:mod:`command_api.routes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from command_api import routes
from command_api.contract import contract
from command_api.routes import WRITE_SCOPE
from command_api.submit import SubmitApplication
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
    """Build the command API; nothing connects until the first request."""
    engine = create_engine(settings, "command-api")

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
    breaker = DatabaseBreaker(
        "command-api", settings.db_breaker_threshold, settings.db_breaker_open_s
    )
    limiter = RateLimiter(
        engine, settings.db_deadline_s, settings.rate_limit_per_s, settings.rate_limit_burst
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.breaker = breaker
    app.state.submit = SubmitApplication(
        engine,
        settings.topic_submitted,
        timedelta(seconds=settings.idempotency_key_ttl_s),
        breaker,
        settings.db_deadline_s,
        limiter,
    )
    app.state.tokens = TokenVerifier(settings)
    install_observability(app, "command-api")
    install_request_limits(app, settings)
    install_error_handlers(app)
    app.include_router(metrics.router)
    app.include_router(health_router("commandApiHealth"))
    app.include_router(routes.router)
    install_docs(app, app.title)
    document_scopes(app, {"submitApplication": WRITE_SCOPE})
    publish(app, contract(settings), PROBLEM_SCHEMA)
    return app
