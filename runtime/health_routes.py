"""The APIs' probes: ``GET /health`` and ``GET /readyz`` (the database), ``GET /livez``.

The check itself is :func:`runtime.health.check_database`; the engine, the circuit
breaker and the settings are the app's (:mod:`runtime.dependencies`). Each API includes
:func:`health_router` under operation ids of its own.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from runtime.dependencies import AppSettings, Breaker, Engine
from runtime.errors import DependencyUnavailable
from runtime.health import check_database
from runtime.problems import PROBLEM_CONTENT

#: The body of a healthy ``GET /health``.
HEALTH_OK: dict[str, Any] = {
    "status": "ok",
    "checks": {"database": "ok"},
    "circuit_breaker": "closed",
}

# The endpoints have no docstring on purpose: FastAPI would publish it as the operation's
# description in the OpenAPI document; each operation's summary says what it answers.


async def health(  # noqa: D103
    engine: Engine, breaker: Breaker, settings: AppSettings
) -> dict[str, Any]:
    # Its own deadline, shorter than a request's, and around the circuit breaker, whose
    # state it reports: it is how an operator sees the breaker.
    try:
        await check_database(engine, settings.health_deadline_s)
    except DependencyUnavailable as error:
        error.extensions = {**error.extensions, "circuit_breaker": breaker.state}
        raise
    return {"status": "ok", "checks": {"database": "ok"}, "circuit_breaker": breaker.state}


async def livez() -> dict[str, str]:  # noqa: D103
    # Answered by the event loop itself: if this cannot answer, only a restart helps;
    # a database outage must never make an orchestrator restart a healthy API.
    return {"status": "ok"}


def health_router(operation_id: str) -> APIRouter:
    """The probe routes, ``operation_id`` (e.g. ``commandApiHealth``) naming ``/health``.

    ``/health``: 200 when the database answers within ``PREQUAL_HEALTH_DEADLINE_S``, a
    503 problem naming it (and the breaker's state) otherwise. ``/readyz`` is the same
    check under ``…Readiness``; ``/livez`` (``…Liveness``) is 200 whatever the
    dependencies do.
    """
    router = APIRouter()
    router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        operation_id=operation_id,
        summary="200 when the database answers, 503 naming it when it does not.",
        responses={
            200: {"content": {"application/json": {"example": HEALTH_OK}}},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )
    # Readiness is health: may this process be sent requests now.
    router.add_api_route(
        "/readyz",
        health,
        methods=["GET"],
        operation_id=operation_id.replace("Health", "Readiness"),
        summary="Readiness: 200 when the database answers (as /health), 503 naming it if not.",
        responses={
            200: {"content": {"application/json": {"example": HEALTH_OK}}},
            503: {"description": "The database is not answering.", **PROBLEM_CONTENT},
        },
    )
    router.add_api_route(
        "/livez",
        livez,
        methods=["GET"],
        operation_id=operation_id.replace("Health", "Liveness"),
        summary="Liveness: 200 while the process serves requests, whatever its dependencies do.",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    return router
